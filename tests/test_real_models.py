"""Models nobody here wrote: trained third-party models from registry wheels (tests/models/wheels.py), fed
real task data made offline (tests/models/task_data.py), through `edgekit convert` to every ONNX and
OpenVINO target, and every artifact compared with its float source on every engine that reads it.

Floors: float forms must match the source (cosine >= 0.99999, fp16 >= 0.999); int8 forms must stay above
0.95. The int8 artifacts that collapse today are listed in COLLAPSES with the cosine measured here: they
are the int8-that-keeps-answers issue's to repair, and the test fails (strict xfail) once they are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import task_data
import wheels
from edgekit.runtimes.cpu import X86_WITHOUT_VNNI, describe_cpu

import edgekit
from edgekit import ConversionError

pytestmark = [pytest.mark.slow, pytest.mark.onnxruntime, pytest.mark.openvino]

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # compare at full precision; OpenVINO's default may be bf16
FLOORS = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.95}
TARGETS = ("onnx-fp32", "onnx-fp16", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8")
# (model, target) -> cosine measured here with the default options (min over outputs and engines)
COLLAPSES = {("ppocr_rec", "onnx-int8"): 0.91, ("ppocr_det", "onnx-int8"): 0.84,
             ("layout", "onnx-int8"): 0.61}
if describe_cpu("auto") == X86_WITHOUT_VNNI:  # measured on an AVX2 EPYC; with VNNI it holds >= 0.95
    COLLAPSES[("silero_vad", "onnx-int8")] = 0.88  # the speech probability; 7-bit or full-range weights alike


@dataclass(frozen=True)
class RealModel:
    make_data: Any  # (count, seed) -> {input: array with a leading sample axis}
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    targets: tuple[str, ...] = TARGETS
    calib: int = 32  # calibration samples


def _images(make):
    return lambda count, seed: {"x": make(count, seed)}


MODELS = {
    "ppocr_cls": RealModel(_images(lambda n, s: task_data.ocr_lines_upside_down(n, seed=s)[0]), {"x": (1, 3, 48, 192)}),
    "ppocr_rec": RealModel(_images(lambda n, s: task_data.ocr_lines(n, seed=s)[0]), {"x": (1, 3, 48, 320)}),
    "ppocr_det": RealModel(_images(lambda n, s: task_data.pages(n, 320, 320, seed=s)), {"x": (1, 3, 320, 320)}),
    "orientation": RealModel(_images(lambda n, s: task_data.pages(n, 224, 224, seed=s))),
    "layout": RealModel(lambda n, s: {"image": task_data.pages(n, 800, 608, seed=s)}, calib=16),  # 800 x 608 pages
    # OpenVINO's CPU plugin cannot run NNCF's statistics pass over its If with a dynamic rank: see below
    "silero_vad": RealModel(lambda n, s: task_data.voiced_audio(n, seed=s), {"input": (1, 512), "state": (2, 1, 128)},
                            tuple(t for t in TARGETS if t != "openvino-int8")),
}
HELD_OUT = 8


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (source, {target: ConversionResult}); each model converted once, when first asked for."""
    done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def convert(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in done:
            case, source = MODELS[name], wheels.fetch(name)
            folder = tmp_path_factory.mktemp(name)
            np.savez(folder / "calib.npz", **case.make_data(case.calib + 8, 1))
            results = edgekit.convert(source, list(case.targets), calibration=folder / "calib.npz",
                                      calib_size=case.calib, validation_size=8, input_shapes=case.shapes,
                                      output_dir=folder / "out", repair=False)
            done[name] = source, {r.target: r for r in results}
        return done[name]

    return convert


def _runs(path: Path, backend: str, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    options = {"config": F32} if backend == "openvino" else {}
    with edgekit.load(path, backend=backend, **options) as runtime:
        return [list(runtime.run(f).values()) for f in feeds]


def _cosine(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    worst = 1.0
    for index in range(len(reference[0])):
        a = np.concatenate([r[index].ravel() for r in reference]).astype(np.float64)
        b = np.concatenate([c[index].ravel() for c in candidate]).astype(np.float64)
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
    return worst


@pytest.mark.parametrize(("name", "target"), [(name, target) for name in MODELS for target in MODELS[name].targets])
def test_every_artifact_matches_its_float_source_on_every_engine(converted, name, target, request):
    source, results = converted(name)
    if (name, target) in COLLAPSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"default int8 (repair off) collapses to cosine "
                                              f"{COLLAPSES[name, target]}; edgekit marks it failed"))
    data = MODELS[name].make_data(HELD_OUT, 99)  # inputs neither calibration nor validation saw
    feeds = [{k: v[i] if v[i].ndim == len(s) else v[i][None] for (k, v), s in
              zip(data.items(), _shapes(source, data))} for i in range(HELD_OUT)]
    reference = _runs(source, "onnxruntime", feeds)
    artifact = results[target].artifact
    engines = ("onnxruntime", "openvino") if artifact.suffix == ".onnx" else ("openvino",)
    cosines = {engine: _cosine(reference, _runs(artifact, engine, feeds)) for engine in engines}
    report = results[target].report
    if report["validation"]["collapsed"]:  # edgekit saw it: never "ok" below the floors
        assert report["status"] == "failed" and any("collapsed" in f for f in report["failures"]), report["failures"]
    floor = FLOORS[target.split("-", 1)[1]]
    assert min(cosines.values()) >= floor, f"{name} {target}: cosine {cosines} below {floor}"
    assert report["source"]["sha256"] == wheels.MODELS[name].sha256


def _shapes(source: Path, data: dict[str, np.ndarray]) -> list[tuple]:
    with edgekit.load(source) as runtime:
        return [runtime.inputs[[s.name for s in runtime.inputs].index(k)].shape for k in data]


def test_ocr_float_forms_read_the_same_text_as_the_source(tmp_path_factory):
    """The recognizer reads rendered strings; its float artifacts must read exactly the same ones."""
    source = wheels.fetch("ppocr_rec")
    out = tmp_path_factory.mktemp("ocr")
    results = edgekit.convert(source, "onnx-fp32,openvino-fp16", input_shapes={"x": (1, 3, 48, 320)},
                              output_dir=out, validate_outputs=False)
    images, texts = task_data.ocr_lines(40, seed=7)
    charset = task_data.ocr_charset(source)
    feeds = [{"x": images[i : i + 1]} for i in range(len(texts))]
    read = {"source": [task_data.ctc_decode(o[0], charset) for o in _runs(source, "onnxruntime", feeds)]}
    for result in results:
        backend = "openvino" if result.artifact.suffix == ".xml" else "onnxruntime"
        read[result.target] = [task_data.ctc_decode(o[0], charset) for o in _runs(result.artifact, backend, feeds)]
    accuracy = np.mean([r == t for r, t in zip(read["source"], texts)])
    assert accuracy >= 0.8, f"the float recognizer reads only {accuracy:.0%}: the rendered data is not text"
    for target, strings in read.items():
        assert strings == read["source"], target


@pytest.mark.parametrize("target", ["onnx-int8", "openvino-int8"])
def test_int8_ocr_reads_within_two_points_of_float_or_fails_saying_why(tmp_path, target):
    """The task metric (exact-match strings read from rendered text): each int8 form, repaired by default,
    reads within 2 points of the float model, or its report says failed and why. The application's decision
    (the string each line reads) and the 2-point budget are given to edgekit as ``decide`` and ``max_drop``:
    the default floor (90 % of strings kept) is a collapse detector, and on x86 without VNNI openvino-int8
    reads 90 % of held-out lines where float reads 98 % while keeping >= 90 % of the validation strings."""
    source = wheels.fetch("ppocr_rec")
    images, texts = task_data.ocr_lines(48, seed=11)
    np.save(tmp_path / "calib.npy", images)
    charset = task_data.ocr_charset(source)

    def strings(outputs):
        (probabilities,) = outputs.values()
        return np.array([task_data.ctc_decode(line, charset) for line in probabilities])

    (result,) = edgekit.convert(source, target, calibration=tmp_path / "calib.npy", calib_size=24,
                                validation_size=24, input_shapes={"x": (1, 3, 48, 320)}, output_dir=tmp_path / "out",
                                decide=strings, max_drop=2)
    held_out, truth = task_data.ocr_lines(60, seed=12)
    feeds = [{"x": held_out[i : i + 1]} for i in range(len(truth))]
    backend = "openvino" if target.startswith("openvino") else "onnxruntime"
    accuracy = {form: 100 * np.mean([task_data.ctc_decode(o[0], charset) == t for o, t in zip(outputs, truth)])
                for form, outputs in (("float", _runs(source, "onnxruntime", feeds)),
                                      ("int8", _runs(result.artifact, backend, feeds)))}
    report = result.report
    print(f"{target}: float {accuracy['float']:.1f} %, int8 {accuracy['int8']:.1f} %, status {report['status']}, "
          f"repair {report['repair'] and report['repair']['chosen']}")
    assert report["validation"]["decisions"]["count"] == 24
    if accuracy["float"] - accuracy["int8"] > 2:
        assert report["status"] == "failed" and report["failures"], (accuracy, report["failures"])
        assert len(report["repair"]["attempts"]) > 1, "every remedy tried is recorded"


@pytest.mark.parametrize("target", ["onnx-int8", "openvino-int8"])
def test_int8_text_detector_finds_the_lines_within_two_points_of_float_or_fails_saying_why(tmp_path, target):
    """The task metric of the PP-OCR text detector on rendered 640 x 640 pages: F1 of its boxes (DB's
    probability map, thresholded and unclipped) against the text lines drawn. Each int8 form, repaired by
    default, finds them within 2 points of the float model, or its report says failed and what collapsed."""
    source = wheels.fetch("ppocr_det")
    np.save(tmp_path / "calib.npy", task_data.pages(16, 640, 640, seed=1))
    (result,) = edgekit.convert(source, target, calibration=tmp_path / "calib.npy", calib_size=8, validation_size=8,
                                input_shapes={"x": (1, 3, 640, 640)}, output_dir=tmp_path / "out")
    pages = [task_data.render_page_with_lines(640, 640, seed=900 + i) for i in range(16)]
    feeds = [{"x": task_data.pages_from([image])} for image, _ in pages]
    backend = "openvino" if target.startswith("openvino") else "onnxruntime"
    f1 = {form: 100 * np.mean([task_data.detection_f1(task_data.text_boxes(o[0][0, 0]), boxes)
                               for o, (_, boxes) in zip(outputs, pages)])
          for form, outputs in (("float", _runs(source, "onnxruntime", feeds)),
                                ("int8", _runs(result.artifact, backend, feeds)))}
    report = result.report
    repair = report["repair"]
    tried = repair and [(a["remedy"], a.get("latency_ms")) for a in repair["attempts"]]  # refused: no latency
    print(f"{target}: F1 float {f1['float']:.1f}, int8 {f1['int8']:.1f}, status {report['status']}, remedy "
          f"{repair and repair['chosen']}, attempts (remedy, p50 ms) {tried}")
    assert f1["float"] >= 95, "the float detector should find the rendered lines: the task data is not text"
    for i, attempt in enumerate(a for a in (repair or {"attempts": []})["attempts"] if "error" not in a):
        # timed where it informs a choice: the default (what a remedy costs) and a remedy that held
        assert (attempt["latency_ms"] is not None) == (i == 0 or not attempt["collapsed"]), attempt
    if f1["float"] - f1["int8"] > 2:
        assert report["status"] == "failed" and any("collapsed" in f for f in report["failures"]), \
            (f1, report["failures"])
    elif report["status"] == "ok" and repair:
        assert repair["chosen"] and not repair["attempts"][-1]["collapsed"], "the kept attempt holds the floors"
    else:  # within 2 points yet failed: the pixel floor is stricter than box F1 (on x86 without VNNI, onnx-int8's
        # 7-bit weights keep 63-76 % of the map's pixels above 0.5 while the boxes hold): it must say why
        assert report["status"] == "ok" or any("collapsed" in f for f in report["failures"]), report["failures"]


def test_silero_int8_openvino_is_one_clear_error(tmp_path):
    source = wheels.fetch("silero_vad")
    np.savez(tmp_path / "calib.npz", **task_data.voiced_audio(16, seed=3))
    with pytest.raises(ConversionError, match="NNCF could not quantize the model .*If") as info:
        edgekit.convert(source, "openvino-int8", calibration=tmp_path / "calib.npz", calib_size=8,
                        input_shapes=MODELS["silero_vad"].shapes, output_dir=tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
