"""Arm Ethos-U without the hardware: Vela compilation, estimates in the profiler, and clear NPU paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit import ConversionError, DeviceError, UnsupportedModelError
from edgekit.cli import cli

vela = pytest.importorskip("ethosu.vela", reason="ethos-u-vela is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.tensorflow, pytest.mark.litert]


@pytest.fixture(scope="module")
def digits_ethos(tmp_path_factory, digits_keras, digits_folder):
    out = tmp_path_factory.mktemp("ethos")
    (u55,) = edgekit.convert(digits_keras, "ethos-u", calibration=digits_folder, calib_size=100,
                             validation_size=100, output_dir=out)
    (u65,) = edgekit.convert(digits_keras, "ethos-u", calibration=digits_folder, calib_size=100,
                             validation_size=100, output_dir=out, npu_config="ethos-u65-256")
    return u55, u65


def _check_npu(report: dict, config: str) -> dict:
    npu = report["options"]["npu"]
    assert npu["npu_config"] == config and npu["cpu_ops"] == 0 and npu["npu_ops"] > 0 and npu["full_npu"]
    assert npu["inference_time_ms"] > 0 and npu["inferences_per_second"] > 0 and npu["macs"] > 0
    # weights live in flash (U55 configs) or DRAM (U65 configs)
    assert npu["sram_used_kib"] > 0
    assert npu["off_chip_flash_used_kib"] + npu["on_chip_flash_used_kib"] + npu["dram_used_kib"] > 0
    assert npu["vela_version"]
    return npu


def test_digits_cnn_on_u55_and_u65(digits_ethos):
    u55, u65 = digits_ethos
    assert u55.artifact.name == "digits_ethos-u55-128.tflite" and u65.artifact.name == "digits_ethos-u65-256.tflite"
    fast, slow = _check_npu(u65.report, "ethos-u65-256"), _check_npu(u55.report, "ethos-u55-128")
    assert fast["inference_time_ms"] < slow["inference_time_ms"]  # the bigger NPU is estimated faster
    for result in (u55, u65):
        assert result.passed and result.validation["accuracy_float"] - result.validation["accuracy_converted"] <= 1.5
        assert any("was not executed" in note for note in result.report["options"]["notes"])
        assert result.report["audit"]["fully_integer"]
        assert "validated_artifact" not in result.report["options"]
        assert "validated_artifact" not in json.loads(result.report_path.read_text())["options"]


def test_the_compiled_model_says_where_it_runs(digits_ethos):
    with pytest.raises(UnsupportedModelError, match="compiled for an Arm Ethos-U NPU"):
        edgekit.load(digits_ethos[0].artifact)


def test_mobilenet_sized_model(tmp_path):
    import keras

    source = tmp_path / "mobilenetv2.keras"
    # logits out: a random-weight softmax over 1000 classes would be ~0.001 everywhere and quantize to nothing
    keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None).save(source)
    (u55,) = edgekit.convert(source, "ethos-u", calibration="random", calib_size=8, validation_size=2,
                             output_dir=tmp_path, input_shapes={"input_layer": (1, 224, 224, 3)})
    npu = _check_npu(u55.report, "ethos-u55-128")
    assert npu["npu_ops"] >= 60 and 5 < npu["inference_time_ms"] < 100 and npu["sram_used_kib"] > 500
    (u65,) = edgekit.convert(source, "ethos-u", calibration="random", calib_size=8, validation_size=2,
                             output_dir=tmp_path, input_shapes={"input_layer": (1, 224, 224, 3)},
                             npu_config="ethos-u65-256")
    assert _check_npu(u65.report, "ethos-u65-256")["inference_time_ms"] < npu["inference_time_ms"]


@pytest.fixture(scope="module")
def reduce_prod_int8(tmp_path_factory):
    """A full-int8 .tflite whose REDUCE_PROD Ethos-U does not support."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(3, 3, 1, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.reduce_prod(tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME")), axis=3)}

    folder = tmp_path_factory.mktemp("reduce")
    net = Net()
    tf.saved_model.save(net, str(folder / "net"), signatures={"serving_default": net.serve})
    (result,) = edgekit.convert(folder / "net", "tflite-int8", calibration="random", calib_size=16,
                                validation_size=4, output_dir=folder)
    return folder / "net", result.artifact


def test_unsupported_op_is_listed_as_a_cpu_op(tmp_path, reduce_prod_int8):
    _, int8 = reduce_prod_int8
    (result,) = edgekit.convert(int8, "ethos-u", output_dir=tmp_path, validate_outputs=False)
    npu = result.report["options"]["npu"]
    assert npu["cpu_ops"] == 1 and not npu["full_npu"]
    assert npu["cpu_fallbacks"] == [{"type": "REDUCE_PROD", "name": "StatefulPartitionedCall:0",
                                     "reason": "Unsupported opType"}]
    with pytest.raises(ConversionError, match=r"require_full_npu: 1 op\(s\) would run on the CPU: REDUCE_PROD"):
        edgekit.convert(int8, "ethos-u", output_dir=tmp_path / "strict", require_full_npu=True,
                        validate_outputs=False)
    assert not list((tmp_path / "strict").iterdir())


def test_float_tflite_is_refused_with_the_way_out(tmp_path, tflite_fp32):
    with pytest.raises(UnsupportedModelError, match="needs a full-int8 model.*--to ethos-u --calib DATA"):
        edgekit.convert(tflite_fp32, "ethos-u", output_dir=tmp_path, validate_outputs=False)


def test_profile_estimate_sits_beside_a_measured_run(digits_tflite_all):
    int8 = digits_tflite_all["tflite-int8"].artifact
    result = CliRunner().invoke(cli, ["profile", str(int8), "--estimate", "ethos-u55-128", "--estimate",
                                      "ethos-u65-256", "--runs", "5", "--min-seconds", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    u55, u65, cpu = json.loads(result.stdout)
    assert u55["estimated"] and u55["device"] == "ethos-u55-128" and not cpu["estimated"]
    assert u55["latency_ms"]["p50"] == u55["npu"]["inference_time_ms"] > u65["latency_ms"]["p50"] > 0
    assert u55["npu"]["full_npu"] and u55["npu"]["sram_used_kib"] > 0 and u55["throughput_ips"] > 0
    only = CliRunner().invoke(cli, ["profile", str(int8), "--estimate", "ethos-u55-128", "--estimate-only", "--json"])
    assert json.loads(only.stdout)["estimated"] is True
    float_model = CliRunner().invoke(cli, ["profile", str(digits_tflite_all["tflite-fp32"].artifact), "--estimate",
                                           "ethos-u55-128", "--estimate-only"])
    assert float_model.exit_code == 1 and "needs a full-int8 .tflite" in float_model.stderr


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize(("fixture", "backend", "fragment"), [
    ("tflite_fp32", "litert", "no usable NPU accelerator"),
    ("onnx_fp32", "onnxruntime", "no NPU execution provider"),
    ("ir_fp32", "openvino", "OpenVINO has no NPU device"),
])
def test_absent_npu_is_a_clear_error_on_every_engine(request, fixture, backend, fragment):
    with pytest.raises(DeviceError, match=fragment) as info:
        edgekit.load(request.getfixturevalue(fixture), backend=backend, device="npu")
    assert "present" in str(info.value)


@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_devices_shows_npu_paths_and_what_to_install():
    data = json.loads(CliRunner().invoke(cli, ["devices", "--json"]).stdout)
    npu = {e["backend"]: e["npu"] for e in data["engines"]}
    assert npu["litert"].startswith("absent:") and "delegate" in npu["litert"]
    assert npu["onnxruntime"].startswith("absent:") and "onnxruntime-qnn" in npu["onnxruntime"]
    assert npu["openvino"].startswith("absent:") and "NPU driver" in npu["openvino"]
