"""rknn-int8: models built for Rockchip RKNPUs by rknn-toolkit2 in the environment edgekit manages (`edgekit setup
rknn`), checked on the toolkit's simulator in the build's own session; and the .rknn runtime's answers where no
Rockchip NPU is (this machine), with a stand-in for rknn-toolkit-lite2 where it would drive one."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS_IMAGES, scramble_largest_weight
from edgekit.runtimes.formats import open_model_file

import edgekit
from edgekit import ConversionError, DeviceError, MissingDependencyError, UnsupportedModelError

pytestmark = [pytest.mark.rknn, pytest.mark.onnxruntime]

MODELS = Path(__file__).parent / "models"
EDGEKIT = Path(sys.executable).parent / "edgekit"


@pytest.fixture(scope="module")
def digits_rknn(digits_torch_onnx, tmp_path_factory):
    """The digits CNN trained here, built for two platforms, calibrated and validated on the bundled labeled
    images (which it never trained on)."""
    out = tmp_path_factory.mktemp("rknn-digits")
    return {chip: edgekit.convert(digits_torch_onnx, "rknn-int8", calibration=DIGITS_IMAGES, chip=chip, name="digits",
                                  output_dir=out)[0] for chip in ("rk3588", "rk3566")}


@pytest.mark.parametrize("chip", ["rk3588", "rk3566"])
def test_a_trained_cnn_builds_for_a_rockchip_npu_and_keeps_its_answers_on_the_simulator(digits_rknn, chip):
    result = digits_rknn[chip]
    assert result.passed, result.report["failures"]
    assert result.artifact.name == f"digits_{chip}.rknn" and open_model_file(result.artifact).format == "rknn"
    validation, options = result.report["validation"], result.report["options"]
    assert validation["accuracy_float"] > 80  # a net with signal
    assert validation["drop"] <= 2.0, validation
    assert options["platform"] == chip and options["toolkit"].startswith("rknn-toolkit2 2.")
    assert "simulator" in options["validated_on"] and any("simulator" in n for n in validation["notes"])
    assert result.report["audit"]["compiled_for"] == "Rockchip RKNPU"


def test_an_ultralytics_detector_builds_and_its_boxes_agree_on_the_simulator(tmp_path):
    sys.path.insert(0, str(MODELS))
    from build_ultralytics_yolo import OUT, pages

    np.save(tmp_path / "calib.npy", pages(0, 40))
    (result,) = edgekit.convert(OUT / "yolov8t.onnx", "rknn-int8", calibration=tmp_path / "calib.npy", calib_size=28,
                                validation_size=12, output_dir=tmp_path / "out", chip="rk3576")
    assert result.passed, result.report["failures"]
    output = result.report["validation"]["outputs"]["output0"]
    assert output["judged_by"] == "detector" and output["cosine"] >= 0.99, output


def test_a_third_party_ocr_classifier_builds_and_keeps_its_decisions(tmp_path):
    sys.path.insert(0, str(MODELS))
    import task_data
    import wheels

    lines, _ = task_data.ocr_lines_upside_down(48, seed=1)
    np.save(tmp_path / "lines.npy", lines)
    (result,) = edgekit.convert(wheels.fetch("ppocr_cls"), "rknn-int8", calibration=tmp_path / "lines.npy",
                                calib_size=36, validation_size=12, input_shapes={"x": (1, 3, 48, 192)},
                                output_dir=tmp_path / "out")
    assert result.passed, result.report["failures"]
    (output,) = result.report["validation"]["outputs"].values()
    assert output["decision_agreement"] >= 0.9 and output["cosine"] >= 0.95, output


def test_a_model_that_is_not_its_source_is_caught_by_validation(digits_torch_onnx, tmp_path, monkeypatch):
    """The negative control: the built model's weights permuted, the float reference untouched."""
    from edgekit.converters import _rknn

    build_for_real = _rknn._run

    def build_scrambled(python, job, work):
        scramble_largest_weight(job["onnx"])
        return build_for_real(python, job, work)

    monkeypatch.setattr(_rknn, "_run", build_scrambled)
    (result,) = edgekit.convert(digits_torch_onnx, "rknn-int8", calibration=DIGITS_IMAGES, output_dir=tmp_path,
                                name="digits")
    assert not result.passed
    assert any("collapsed" in f or "drop" in f for f in result.report["failures"]), result.report["failures"]
    assert not (tmp_path / "digits_rk3588.rknn").exists()


def test_an_unknown_platform_and_a_missing_environment_are_named_before_any_work(onnx_fp32, tmp_path, monkeypatch):
    with pytest.raises(ConversionError, match=r"rknn-int8 from ONNX need static shapes.*input_shapes="):
        edgekit.convert(onnx_fp32, "rknn-int8", calibration="random", output_dir=tmp_path)
    with pytest.raises(ConversionError, match=r"unknown Rockchip platform 'rk9999'; choose one of rk3588, rk3576"):
        edgekit.convert(onnx_fp32, "rknn-int8", calibration="random", chip="rk9999", output_dir=tmp_path,
                        input_shapes={"input": (1, 16)})
    monkeypatch.delenv("EDGEKIT_RKNN", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingDependencyError, match="edgekit setup rknn"):
        edgekit.convert(onnx_fp32, "rknn-int8", calibration="random", output_dir=tmp_path / "out",
                        input_shapes={"input": (1, 16)})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_on_a_machine_without_a_rockchip_npu_loading_says_where_it_runs(digits_rknn, tmp_path):
    artifact = digits_rknn["rk3588"].artifact
    with pytest.raises(DeviceError, match=r"runs only on a Rockchip board's NPU \(rk3588\).*simulator cannot run"):
        edgekit.load(artifact)
    truncated = tmp_path / "truncated.rknn"
    truncated.write_bytes(artifact.read_bytes()[:200])
    done = subprocess.run([EDGEKIT, "inspect", str(truncated)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("Error:") == 1 and "truncated .rknn" in done.stderr
    alone = tmp_path / "alone.rknn"
    alone.write_bytes(artifact.read_bytes())  # without the report edgekit wrote beside it
    with pytest.raises(UnsupportedModelError, match="needs the conversion report"):
        edgekit.load(alone)


class _FakeLite:
    """rknn-toolkit-lite2's RKNNLite as its documentation describes it, recording what edgekit asks of it."""

    NPU_CORE_AUTO = 0
    calls: list = []
    start = 0

    def __init__(self, verbose=False):
        pass

    def load_rknn(self, path):
        self.calls.append(("load_rknn", path))
        return 0

    def init_runtime(self, core_mask=None):
        self.calls.append(("init_runtime", core_mask))
        return self.start

    def inference(self, inputs, data_format=None):
        self.calls.append(("inference", [a.shape for a in inputs], data_format))
        return [np.full((1, 10), 0.5, np.float32)]

    def release(self):
        self.calls.append(("release",))


@pytest.fixture
def on_a_board(monkeypatch):
    from edgekit.runtimes import _rknn

    package, api = types.ModuleType("rknnlite"), types.ModuleType("rknnlite.api")
    api.RKNNLite, package.api = _FakeLite, api
    monkeypatch.setitem(sys.modules, "rknnlite", package)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    _FakeLite.calls, _FakeLite.start = [], 0
    return _rknn


def test_on_a_board_without_the_npu_driver_loading_says_what_is_missing(digits_rknn, on_a_board, monkeypatch):
    monkeypatch.setattr(on_a_board, "rknpu_driver", lambda root=None: None)
    with pytest.raises(DeviceError, match=r"no RKNPU here.*/sys/kernel/debug/rknpu"):
        edgekit.load(digits_rknn["rk3588"].artifact)


def test_on_a_board_the_npu_runs_it_with_the_models_names_and_layout(digits_rknn, on_a_board, monkeypatch):
    monkeypatch.setattr(on_a_board, "rknpu_driver", lambda root=None: Path("/sys/kernel/debug/rknpu"))
    artifact = digits_rknn["rk3588"].artifact
    report = json.loads(Path(f"{artifact}.json").read_text())
    with edgekit.load(artifact, device="npu") as npu:
        assert npu.backend == "rknn" and npu.device == "npu" and npu.compiled_for == "Rockchip RKNPU (rk3588)"
        name = npu.inputs[0].name
        assert name == report["source"]["inputs"][0]["name"]
        outputs = npu.run({name: np.zeros((1, 1, 8, 8), np.float32)})
    assert list(outputs) == report["source"]["outputs"]
    assert _FakeLite.calls[:2] == [("load_rknn", str(artifact)), ("init_runtime", 0)]
    assert _FakeLite.calls[2] == ("inference", [(1, 1, 8, 8)], ["nchw"]) and _FakeLite.calls[-1] == ("release",)
    _FakeLite.start = -1
    with pytest.raises(DeviceError, match="RKNPU runtime did not start.*librknnrt.so"):
        edgekit.load(artifact)
