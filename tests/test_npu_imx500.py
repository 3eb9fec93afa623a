"""imx500: models for the Raspberry Pi AI Camera's Sony IMX500, quantized by Sony's MCT and converted by
imx500-converter in the environment edgekit manages (`edgekit setup imx500`), checked through MCT's quantized
model (no simulator of the sensor exists); what the package is and where it runs; the camera seen on a Pi."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS_IMAGES, SAMPLES, scramble_largest_weight
from edgekit.runtimes.formats import open_model_file

import edgekit
from edgekit import ConversionError, DeviceError, MissingDependencyError, UnsupportedModelError

MODELS = Path(__file__).parent / "models"
EDGEKIT = Path(sys.executable).parent / "edgekit"
needs_tools = pytest.mark.imx500


@pytest.fixture(scope="module")
def digits_module():
    """samples/pytorch_to_edge.py's CNN trained on sklearn's digits (not the bundled images), as an nn.Module."""
    spec = importlib.util.spec_from_file_location("pytorch_to_edge", SAMPLES / "pytorch_to_edge.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    return sample.train()


@pytest.fixture(scope="module")
def digits_imx500(digits_module, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("imx500-digits")
    (result,) = edgekit.convert(digits_module, "imx500", example_inputs=torch.zeros(1, 1, 8, 8), name="digits",
                                calibration=DIGITS_IMAGES, calib_size=64, output_dir=out)
    return result


@needs_tools
def test_a_trained_pytorch_cnn_converts_for_the_ai_camera_and_keeps_its_answers(digits_imx500):
    result = digits_imx500
    assert result.passed, result.report["failures"]
    folder = result.artifact.parent
    assert result.artifact.name == "digits_imx500_packerOut.zip" and open_model_file(result.artifact).format == "imx500"
    assert {"manifest.json", "dnnParams.xml"} <= set(zipfile.ZipFile(result.artifact).namelist())
    memory_report = json.loads((folder / "digits_imx500_MemoryReport.json").read_text())["Memory Report"]
    options, validation = result.report["options"], result.report["validation"]
    assert memory_report["Fit In Chip"] is True
    chip = options["chip_memory"]
    assert chip["fits"] and chip["available_bytes"] == 8388480 and 0 < chip["used_bytes"] < chip["available_bytes"]
    assert chip["summary"].startswith("fits on the chip: yes, ") and chip["summary"].endswith("% of 8.00 MB")
    assert options["quantization"]["weights_quantized"] >= 3 and options["quantization"]["activations_quantized"] >= 3
    assert options["tool_versions"]["model-compression-toolkit"] == "2.5.1" and "imx500" in options["toolkit"]
    camera = options["camera_input"]
    assert camera["shape_chw"] == [1, 8, 8] and camera["format"] == "unsigned" and "read as value x" in camera["reads"]
    assert validation["accuracy_float"] > 80  # a net with signal
    assert validation["drop"] <= 2.0, validation
    assert "IMX500 itself was not run" in options["validated_on"]
    assert any("IMX500 itself was not run" in n for n in validation["notes"])
    assert result.report["audit"]["compiled_for"] == "Sony IMX500"


def test_onnx_graphs_are_rewritten_exactly_into_what_onnx2torch_reads(tmp_path):
    """The rewrites before onnx2torch, on the forms PaddleOCR's and torch's exporters write (PaddleOCR's classifier
    converts end to end in benchmarks/npu_targets.py): a Constant and an Identity of a weight become initializers,
    hard-swish's division by 6 a multiplication by its reciprocal, and a reshape's allowzero=1 goes where its shape
    has no 0; the ONNX model computes what it computed."""
    import onnx
    import onnxruntime as ort
    from edgekit.converters._imx500 import _for_onnx2torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Identity", ["w"], ["w_shared"]),
             helper.make_node("Constant", [], ["six"], value=numpy_helper.from_array(np.array(6, np.float32))),
             helper.make_node("Conv", ["x", "w_shared"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Div", ["conv", "six"], ["scaled"]),
             helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64))),
             helper.make_node("Reshape", ["scaled", "shape"], ["y"], allowzero=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert _for_onnx2torch(path, []) == {"parameters": 4 * 27 + 1, "divisions_as_multiplications": 1}  # and 1/6
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["Conv", "Mul", "Reshape"]
    assert not [a for n in model.graph.node for a in n.attribute if a.name == "allowzero"]
    np.testing.assert_allclose(ort.InferenceSession(str(path)).run(None, {"x": x})[0], before, rtol=1e-6, atol=1e-6)


@needs_tools
def test_an_ultralytics_detector_converts_and_its_boxes_agree(tmp_path):
    """YOLOv8 as Ultralytics builds it (nearest upsampling, slicing of its head, the DFL's softmax): onnx2torch's
    Resize and Slice modules become plain torch calls MCT can trace."""
    sys.path.insert(0, str(MODELS))
    from build_ultralytics_yolo import OUT, pages

    np.save(tmp_path / "pages.npy", pages(0, 16))
    (result,) = edgekit.convert(OUT / "yolov8t.onnx", "imx500", calibration=tmp_path / "pages.npy", calib_size=8,
                                validation_size=8, output_dir=tmp_path / "out")
    assert result.passed, result.report["failures"]
    output = result.report["validation"]["outputs"]["output0"]
    assert output["judged_by"] == "detector" and output["decision_agreement"] >= 0.9 and output["cosine"] >= 0.99
    assert result.report["options"]["plain_torch_calls"]["resize"] == 2
    assert result.report["options"]["plain_torch_calls"]["slice"] > 0


def test_the_camera_input_and_the_tensors_are_read_from_the_package(tmp_path):
    from edgekit.converters._imx500 import _camera_input

    from edgekit.inspection import inspect_model

    tensor = ('<dnnParams><networks><network><inputTensors><inputTensor name="in" format="{}" scale="0.0078125" '
              'bitsPerElement="8"><dimensions><dimension size="3"/><dimension size="48"/><dimension size="192"/>'
              '</dimensions></inputTensor></inputTensors><outputTensors><outputTensor name="out" format="signed" '
              'scale="0.125"><dimensions><dimension size="2"/></dimensions></outputTensor></outputTensors></network>'
              '</networks></dnnParams>')
    unsigned = _camera_input(_package(tmp_path / "u.zip", params=tensor.format("unsigned")))
    assert unsigned["shape_chw"] == [3, 48, 192] and unsigned["reads"].endswith("inputs in [0, 1.99219]")
    assert "warning" not in unsigned
    signed = _camera_input(_package(tmp_path / "s.zip", params=tensor.format("signed")))
    assert signed["reads"].endswith("inputs in [-1, 0.992188]") and "sensor's input normalization" in signed["warning"]
    assert _camera_input(_package(tmp_path / "n.zip")) == {"known": False}
    info = inspect_model(tmp_path / "s.zip")
    assert info.compiled_for == "Sony IMX500" and info.backend == "imx500"
    assert [(t.name, t.shape, t.dtype.name, t.scale) for t in info.inputs + info.outputs] == [
        ("in", (3, 48, 192), "int8", 0.0078125), ("out", (2,), "int8", 0.125)]


@needs_tools
def test_a_model_that_is_not_its_source_is_caught_by_validation(digits_module, tmp_path, monkeypatch):
    """The negative control: the quantized model's weights permuted, the float reference untouched."""
    import torch
    from edgekit.converters import _imx500

    quantize_for_real = _imx500._quantize

    def quantize_scrambled(python, job, work):
        scramble_largest_weight(job["onnx"])
        return quantize_for_real(python, job, work)

    monkeypatch.setattr(_imx500, "_quantize", quantize_scrambled)
    (result,) = edgekit.convert(digits_module, "imx500", example_inputs=torch.zeros(1, 1, 8, 8), name="digits",
                                calibration=DIGITS_IMAGES, calib_size=32, output_dir=tmp_path)
    assert not result.passed
    assert any("collapsed" in f or "drop" in f for f in result.report["failures"]), result.report["failures"]
    assert not (tmp_path / "digits_imx500_packerOut.zip").exists()


@needs_tools
def test_weights_that_cannot_fit_fail_before_the_long_conversion(tmp_path):
    import torch

    class Wide(torch.nn.Module):  # 8.4 M weights in its classifier: over the chip's 8 MB at 8 bits
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(8 * 32 * 32, 1030)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"8\.4 M weights: at 8 bits they alone need 8\.05 MB, more than the "
                                              r"IMX500's 8\.00 MB"):
        edgekit.convert(Wide().eval(), "imx500", example_inputs=torch.zeros(1, 3, 64, 64), calibration=tmp_path /
                        "calib.npy", calib_size=2, validation_size=2, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _net_with(op: str):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 2)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            if op == "GridSample":  # a spatial transformer's sampling: onnx2torch has no PyTorch form of it
                y = torch.nn.functional.grid_sample(y, torch.zeros(1, 4, 4, 2), align_corners=False)
            if op == "Erf":  # exact GELU: the IMX500 has no Erf
                y = torch.nn.functional.gelu(y)
            return self.fc(y.mean((2, 3)))

    return Net().eval()


@needs_tools
def test_an_op_the_route_cannot_take_fails_in_one_line_naming_it(tmp_path):
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((6, 3, 16, 16), dtype=np.float32))
    done = subprocess.run([str(EDGEKIT), "convert", str(_onnx_of(_net_with("Erf"), (1, 3, 16, 16), tmp_path)), "--to",
                           "imx500", "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == "", done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the IMX500 cannot run Erf (layer(s) /Erf)" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "model_imx500_packerOut.zip").exists()
    with pytest.raises(ConversionError, match=r"onnx2torch cannot turn this ONNX graph into PyTorch for MCT \("
                                              r"NotImplementedError: .*operation_type='GridSample'"):
        edgekit.convert(_onnx_of(_net_with("GridSample"), (1, 3, 16, 16), tmp_path), "imx500",
                        calibration=tmp_path / "calib.npy", output_dir=tmp_path / "out")


def _onnx_of(module, shape, folder: Path) -> Path:
    import torch

    path = folder / "model.onnx"
    torch.onnx.export(module.eval(), torch.zeros(shape), str(path), input_names=["x"], dynamo=False, opset_version=17)
    return path


def test_models_the_sensor_cannot_feed_are_refused_before_any_work(tmp_path):
    import torch

    class TwoInputs(torch.nn.Module):
        def forward(self, image, extra):
            return image.mean((2, 3)) + extra

    with pytest.raises(ConversionError, match=r"feeds one camera image to the network, and this model has 2 inputs"):
        edgekit.convert(TwoInputs(), "imx500", example_inputs=(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3)),
                        calibration="random", output_dir=tmp_path)
    with pytest.raises(ConversionError, match=r"\[1, 3 or 1, height, width\] \(NCHW\); input 'x' \[1, 16\]"):
        edgekit.convert(_onnx_of(torch.nn.Linear(16, 2), (1, 16), tmp_path), "imx500", calibration="random",
                        output_dir=tmp_path)


def test_a_missing_environment_or_java_is_named_with_the_command_that_fixes_it(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("EDGEKIT_IMX500", raising=False)
    with pytest.raises(MissingDependencyError, match="edgekit setup imx500"):
        edgekit.convert(torch.nn.Conv2d(3, 4, 3), "imx500", example_inputs=torch.zeros(1, 3, 8, 8),
                        calibration="random", output_dir=tmp_path)
    from edgekit.converters import _imx500_env

    old_java = tmp_path / "jdk" / "bin" / "java"
    old_java.parent.mkdir(parents=True)
    old_java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    old_java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(MissingDependencyError, match=r"Java 17 or newer \(.*is 11\).*openjdk-17-jre-headless"):
        _imx500_env.check_java()
    with pytest.raises(ConversionError, match="needs Java 17"):
        _imx500_env.setup(log=lambda message: None)
    assert not (tmp_path / "empty-cache" / "edgekit" / "imx500-venv").exists()  # nothing made before the check


def test_the_converters_errors_are_read_from_its_log(tmp_path):
    """imxconv-pt's own lines (a model too large for the chip, as it printed them here) become one error."""
    from edgekit.converters import _imx500

    fake = tmp_path / "imxconv-pt"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n"
                    "2026-12-06 23:08:26.639 ERROR: CODE: [ISM] ConvFe error (ISM) on 'q': Not enough memory, "
                    "available: 8.00MB , required: 51.50MB \n"
                    "2026-12-06 23:08:27.348 ERROR: CODE: [TANSF] No solution found for q:  no more descendants\n"
                    "Exception in thread \"main\" sdsp.app.logging.FailureInSubRunningHideErrorException: ERROR\n"
                    "2026-12-06 23:08:27,412 ERROR : sdspconv exited with error code: 1, uni files can be found in "
                    "/tmp/x [/venv/converter.py:88]\nEOF\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ConversionError, match=r"does not fit on the IMX500 \(ConvFe error \(ISM\) on 'q': Not enough "
                                              r"memory, available: 8\.00MB , required: 51\.50MB; the converter's"):
        _imx500._run_converter(fake, tmp_path / "q.onnx", tmp_path / "out")


def _package(path: Path, target: str = "IMX500", members: tuple[str, ...] = ("dnnParams.xml",),
             params: str = "<dnnParams/>") -> Path:
    """A stand-in for imxconv-pt's packerOut.zip: its manifest and dnnParams.xml."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"Target": target, "Network Name": "net"}))
        for member in members:
            archive.writestr(member, params)
    return path


def test_a_package_is_recognised_and_loading_it_says_where_it_runs(tmp_path):
    package = _package(tmp_path / "net_imx500_packerOut.zip")
    assert open_model_file(package).format == "imx500"
    with pytest.raises(DeviceError, match=r"runs on the Raspberry Pi AI Camera's sensor.*imx500-package -i FILE"):
        edgekit.load(package)
    done = subprocess.run([str(EDGEKIT), "run", str(package), "--random"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.count("Error:") == 1 and "imx500-package" in done.stderr


@pytest.mark.parametrize("make, says", [
    (lambda p: _package(p, members=()), "a zip archive, not an IMX500 package"),
    (lambda p: _package(p, target="CXD5623GG"), "another target than the IMX500"),
    (lambda p: (p.write_bytes(b"PK\x03\x04" + b"\x00" * 40), p)[1], "a damaged zip archive"),
])
def test_other_archives_are_refused_as_models(tmp_path, make, says):
    with pytest.raises(UnsupportedModelError, match=says):
        open_model_file(make(tmp_path / "x.zip"))


def test_on_a_pi_the_ai_camera_is_reported_with_what_is_missing(tmp_path):
    from edgekit.devices import describe_npus

    sensor = tmp_path / "sys/class/video4linux/v4l-subdev2"
    sensor.mkdir(parents=True)
    (sensor / "name").write_text("imx500 10-001a\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/video0").write_bytes(b"")
    (tmp_path / "lib/firmware").mkdir(parents=True)
    (tmp_path / "lib/firmware/imx500_loader.fpk").write_bytes(b"fw")
    camera = describe_npus(tmp_path, lambda name: None)[2]
    assert camera.name == "Sony IMX500 (Raspberry Pi AI Camera)" and not camera.present
    assert camera.found == ("imx500 sensor (v4l-subdev2: imx500 10-001a)", f"video device ({tmp_path}/dev/video0)",
                            f"IMX500 firmware ({tmp_path}/lib/firmware/imx500_loader.fpk)")
    assert camera.missing == ("imx500-package: sudo apt install imx500-tools (turns edgekit's "
                              "<stem>_imx500_packerOut.zip into network.rpk)",)
    bare = describe_npus(tmp_path / "nothing", lambda name: None)[2]
    assert len(bare.missing) == 4 and bare.missing[0].startswith("imx500 sensor: connect the AI Camera")


def test_the_ai_camera_sample_names_what_edgekit_makes_and_prints_the_sensors_answers(tmp_path):
    """samples/ai_camera: its README packages the file edgekit names, and classify.py reads each frame's outputs
    through picamera2's IMX500 helper (a stand-in here, with picamera2's calls and one frame's scores)."""
    from edgekit.converters import TARGETS

    sample = SAMPLES / "ai_camera"
    target = TARGETS["imx500"]
    readme = (sample / "README.md").read_text()
    assert f"imx500-package -i {target.artifact_name('model')} -o pkg/" in readme
    assert target.companion_names("model") == ["model_imx500_MemoryReport.json"]
    assert "model_imx500_MemoryReport.json" in readme
    stand_in = tmp_path / "site" / "picamera2"
    (stand_in / "devices").mkdir(parents=True)
    (stand_in / "__init__.py").write_text(
        "class Picamera2:\n"
        "    def __init__(self, number): self.number = number\n"
        "    def create_preview_configuration(self, **options): return options\n"
        "    def start(self, config, show_preview): pass\n"
        "    def capture_metadata(self): return {'CnnOutputTensor': [0.1, 0.7, 0.2]}\n"
        "    def stop(self): pass\n")
    (stand_in / "devices" / "__init__.py").write_text(
        "import numpy as np\n"
        "class IMX500:\n"
        "    camera_num = 0\n"
        "    def __init__(self, path): self.path = path\n"
        "    def show_network_fw_progress_bar(self): pass\n"
        "    def get_outputs(self, metadata, add_batch=False):\n"
        "        return [np.array([metadata['CnnOutputTensor']], np.float32)]\n")
    (tmp_path / "network.rpk").write_bytes(b"rpk")
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\n")
    done = subprocess.run([sys.executable, str(sample / "classify.py"), str(tmp_path / "network.rpk"), "--labels",
                           str(tmp_path / "labels.txt"), "--frames", "2", "--top", "2"], capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("frame 0: one: 0.700, two: 0.200 (")
    missing = subprocess.run([sys.executable, str(sample / "classify.py"), str(tmp_path / "network.rpk")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("Error: picamera2") and missing.stdout == ""
