"""qnn-int8: models compiled for Qualcomm Hexagon HTPs and run on Qualcomm's HTP simulator (the x86-64
libQnnHtp in onnxruntime-qnn) through edgekit.load — a net trained here, a third-party OCR classifier and an
Ultralytics detector — plus the simulator's timings kept out of every latency figure, and the bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DIGITS_IMAGES
from edgekit.runtimes.formats import open_model_file

import edgekit
from edgekit import ConversionError, UnsupportedModelError
from edgekit.pipeline.validation import cosine

pytestmark = [pytest.mark.qnn, pytest.mark.onnxruntime]

MODELS = Path(__file__).parent / "models"
EDGEKIT = Path(sys.executable).parent / "edgekit"  # the installed command, as a user runs it


@pytest.fixture(scope="module")
def digits_qnn(digits_torch_onnx, tmp_path_factory):
    """The digits CNN trained here, compiled for two HTP generations, calibrated and validated on the bundled
    labeled images (which it never trained on)."""
    out = tmp_path_factory.mktemp("qnn-digits")
    return {chip: edgekit.convert(digits_torch_onnx, "qnn-int8", calibration=DIGITS_IMAGES, chip=chip, name="digits",
                                  output_dir=out)[0]
            for chip in ("qcs6490", "sm8650")}


@pytest.mark.parametrize(("chip", "htp"), [("qcs6490", "68"), ("sm8650", "75")])
def test_a_trained_cnn_compiles_for_an_htp_and_keeps_its_answers_on_the_simulator(digits_qnn, digits_torch_onnx,
                                                                                   chip, htp):
    result = digits_qnn[chip]
    assert result.passed, result.report["failures"]
    assert result.artifact.name == f"digits_qnn_{chip}.onnx"
    validation, options = result.report["validation"], result.report["options"]
    assert validation["accuracy_float"] > 80  # a net with signal: the comparison below means something
    assert validation["drop"] <= 2.0, validation
    assert options["htp_arch"] == f"v{htp}" and options["cpu_fallback"].startswith("disabled")
    assert "simulator" in options["validated_on"] and any("simulator" in n for n in validation["notes"])
    assert result.report["audit"]["integer_share"] == 1.0  # audited through the QDQ model it compiled
    samples = np.random.default_rng(0).uniform(0, 1, (6, 1, 1, 8, 8)).astype(np.float32)
    with edgekit.load(result.artifact) as npu, edgekit.load(digits_torch_onnx) as cpu:
        assert npu.device == "npu" and f"HTP v{htp}" in npu.simulated and f"v{htp} ({chip})" in npu.compiled_for
        assert [s.name for s in npu.inputs] == [s.name for s in cpu.inputs]
        got = [npu.run(x)[npu.outputs[0].name] for x in samples]
        want = [cpu.run(x)[cpu.outputs[0].name] for x in samples]
    assert min(cosine(w, g) for w, g in zip(want, got)) >= 0.98


def test_the_compiled_file_names_its_chip_and_hides_no_float_ops(digits_qnn):
    info = edgekit.inspect_model(digits_qnn["sm8650"].artifact)
    assert info.compiled_for.startswith("Qualcomm HTP v75 (sm8650), QNN SDK v2.")
    assert info.audit.compiled_for and not info.audit.mostly_float and info.audit.float_ops == {}
    assert "simulator" in info.simulated


def test_a_third_party_ocr_classifier_compiles_and_keeps_its_decisions(tmp_path):
    sys.path.insert(0, str(MODELS))
    import task_data
    import wheels

    lines, _ = task_data.ocr_lines_upside_down(48, seed=1)
    np.save(tmp_path / "lines.npy", lines)
    (result,) = edgekit.convert(wheels.fetch("ppocr_cls"), "qnn-int8", calibration=tmp_path / "lines.npy",
                                calib_size=36, validation_size=12, input_shapes={"x": (1, 3, 48, 192)},
                                output_dir=tmp_path / "out")
    assert result.passed, result.report["failures"]
    (output,) = result.report["validation"]["outputs"].values()
    assert output["decision_agreement"] >= 0.9 and output["cosine"] >= 0.95, output  # measured 0.917, 0.964


def test_an_ultralytics_detector_compiles_and_detects_as_ultralytics_does(tmp_path):
    sys.path.insert(0, str(MODELS))
    from build_ultralytics_yolo import HELD_OUT, OUT, pages

    np.save(tmp_path / "calib.npy", pages(0, 40))
    (result,) = edgekit.convert(OUT / "yolov8t.onnx", "qnn-int8", calibration=tmp_path / "calib.npy", calib_size=28,
                                validation_size=12, output_dir=tmp_path / "out", chip="sm8550")
    assert result.passed, result.report["failures"]
    assert result.report["validation"]["outputs"]["output0"]["judged_by"] == "detector"
    held_out = pages(1000, HELD_OUT)
    with edgekit.load(result.artifact) as npu:
        got = np.concatenate([npu.run({"images": held_out[i : i + 1]})["output0"] for i in range(HELD_OUT)])
    expected = np.load(OUT / "held_out_outputs.npy")
    assert min(cosine(e, g) for e, g in zip(expected, got)) >= 0.99  # measured 0.9995 (HTP v73)


def test_weights_permuted_after_calibration_are_caught_by_validation(digits_torch_onnx, tmp_path, monkeypatch):
    """The negative control: validation runs the compiled file, so a broken compile cannot pass as ok."""
    from edgekit.converters import _qnn

    compile_for_real = _qnn._compile

    def compile_scrambled(qdq: Path, *args):
        model = onnx.load(str(qdq))
        weights = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT8 and
                       len(i.dims) > 1), key=lambda i: np.prod(i.dims))
        values = onnx.numpy_helper.to_array(weights)
        scrambled = np.random.default_rng(0).permutation(values.reshape(-1)).reshape(values.shape)
        weights.CopyFrom(onnx.numpy_helper.from_array(scrambled, weights.name))
        onnx.save(model, str(qdq))
        return compile_for_real(qdq, *args)

    monkeypatch.setattr(_qnn, "_compile", compile_scrambled)
    (result,) = edgekit.convert(digits_torch_onnx, "qnn-int8", calibration=DIGITS_IMAGES, output_dir=tmp_path,
                                name="digits", repair=False)
    assert not result.passed
    assert any("collapsed" in f or "drop" in f for f in result.report["failures"]), result.report["failures"]
    assert not (tmp_path / "digits_qnn_qcs6490.onnx").exists()  # a failed artifact never takes the good name


def test_an_op_the_htp_cannot_run_is_refused_by_name_and_nothing_is_left(tmp_path):
    torch = pytest.importorskip("torch")

    class Determinant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.linalg.det(self.conv(x)[:, :, :4, :4])

    with pytest.raises(ConversionError, match=r"cannot run this model: node '[^']+' \(Det\).*not supported"):
        edgekit.convert(Determinant().eval(), "qnn-int8", example_inputs=(torch.randn(1, 3, 8, 8),),
                        calibration="random", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unknown_chip_is_refused_before_any_work(onnx_fp32, tmp_path):
    with pytest.raises(ConversionError, match=r"unknown Qualcomm chip 'sm9999'.*qcs6490 = HTP v68.*htp-v81"):
        edgekit.convert(onnx_fp32, "qnn-int8", calibration="random", chip="sm9999", output_dir=tmp_path)


def _context_copy(source: Path, target: Path, change) -> Path:
    model = onnx.load(str(source))
    change(model)
    onnx.save(model, str(target))
    return target


def _binary(model):
    return next(a for a in model.graph.node[0].attribute if a.name == "ep_cache_context")


def test_damaged_context_files_are_one_error_line_and_never_crash_the_caller(digits_qnn, tmp_path):
    good = digits_qnn["qcs6490"].artifact
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    def halve(model):
        _binary(model).s = _binary(model).s[: len(_binary(model).s) // 2]

    def scramble(model):
        data = bytearray(_binary(model).s)
        data[:64] = bytes(range(64))
        _binary(model).s = bytes(data)

    for bad in (truncated, _context_copy(good, tmp_path / "halved.onnx", halve),
                _context_copy(good, tmp_path / "scrambled.onnx", scramble)):
        done = subprocess.run([EDGEKIT, "run", str(bad), "--random"],
                              capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and bad.name in errors[0], done.stderr
        assert "Traceback" not in done.stderr


def test_a_context_binary_kept_outside_the_model_or_from_another_provider_is_refused(digits_qnn, tmp_path):
    good = digits_qnn["qcs6490"].artifact

    def external(model):
        next(a for a in model.graph.node[0].attribute if a.name == "embed_mode").i = 0
        _binary(model).s = b"../../etc/passwd"

    def foreign(model):
        next(a for a in model.graph.node[0].attribute if a.name == "source").s = b"OpenVINOExecutionProvider"

    with pytest.raises(UnsupportedModelError, match="embed_mode 0"):
        edgekit.load(_context_copy(good, tmp_path / "external.onnx", external))
    with pytest.raises(UnsupportedModelError, match="compiled by OpenVINOExecutionProvider"):
        edgekit.load(_context_copy(good, tmp_path / "foreign.onnx", foreign))
    with pytest.raises(edgekit.DeviceError, match="not a GPU"):
        edgekit.load(good, device="gpu")


def test_simulator_timings_never_pass_for_the_devices_latency(digits_qnn):
    from edgekit.profiling.output import check_condition, comparison_rows

    artifact = digits_qnn["qcs6490"].artifact
    report = edgekit.profile(artifact, runs=3, min_seconds=0.0, warmup_runs=1, warmup_seconds=0.0).to_dict()
    assert "simulator" in report["simulated"]
    assert comparison_rows([report, report])[1][-2:] == ["—", "simulated"]
    with pytest.raises(edgekit.EdgekitError, match="simulator's timing is not the device's"):
        check_condition([report], "p50_ms>1000")
    done = subprocess.run([EDGEKIT, "run", str(artifact), "--random", "--json"],
                          capture_output=True, text=True, check=True)
    ran = json.loads(done.stdout)  # parses although Qualcomm's libraries print on stdout as they load
    assert ran["latency_ms"] is None and ran["simulator_ms"] > 0 and "simulator" in ran["simulated"]


def test_an_epcontext_model_is_recognised_without_onnxruntime_qnn(tmp_path):
    """What a file says about its chip is read from its bytes: `edgekit inspect` on a machine without the
    provider still knows what the file is for."""
    from edgekit.runtimes._qnn import context_info

    node = onnx.helper.make_node("EPContext", ["x"], ["y"], domain="com.microsoft", embed_mode=1,
                                 ep_cache_context=b"\0" * 4096, source="QNNExecutionProvider",
                                 ep_sdk_version="v2.51.0.1")
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1, 4])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1, 4])])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, {"ep_compatibility_info.QNNExecutionProvider": "v2:6:2.51.0:5.51.0:73:0:0:0",
                                        "edgekit.qnn.chip": "sm8550"})
    onnx.save(model, str(tmp_path / "m.onnx"))
    info = context_info(open_model_file(tmp_path / "m.onnx").onnx)
    assert info == {"htp_arch": "73", "chip": "sm8550", "qnn_sdk": "v2.51.0.1"}
