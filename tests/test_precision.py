"""Execution precision: OpenVINO runs float layers in the precision it picks by design (bf16 on bf16-capable x86,
f16 on ARM), edgekit says which everywhere, and f32 is one option away."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit import EdgekitError
from edgekit.cli import cli
from edgekit.pipeline.validation import cosine

pytestmark = [pytest.mark.openvino, pytest.mark.onnxruntime, pytest.mark.litert]


def _openvino_default(path) -> str:
    """What OpenVINO itself picks for this model on this CPU, asked of the raw engine."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def test_openvino_keeps_its_own_default_and_f32_is_one_option_away(ir_fp32):
    x = np.random.default_rng(0).random((4, 16), dtype=np.float32)
    with edgekit.load(ir_fp32) as default, edgekit.load(ir_fp32, precision="f32") as exact:
        assert default.precision == _openvino_default(ir_fp32)
        assert exact.precision == "f32"
        assert cosine(exact.run(x)["output"], default.run(x)["output"]) >= 0.999
    with edgekit.load(ir_fp32, config={"INFERENCE_PRECISION_HINT": "f32"}) as configured:
        assert configured.precision == "f32"  # the engine's own property, passed through, is reported too


def test_other_engines_run_f32_and_refuse_an_openvino_hint(onnx_fp32, tflite_fp32):
    for path in (onnx_fp32, tflite_fp32):
        with edgekit.load(path, precision="f32") as runtime:
            assert runtime.precision == "f32"
    with pytest.raises(EdgekitError, match="precision 'bf16' is an OpenVINO execution hint; onnxruntime runs"):
        edgekit.load(onnx_fp32, precision="bf16")
    with pytest.raises(EdgekitError, match="unknown precision 'fp8'; choose one of auto, f32, bf16, f16"):
        edgekit.load(onnx_fp32, precision="fp8")
    with edgekit.load(onnx_fp32, backend="openvino", precision="f32") as runtime:
        assert runtime.precision == "f32"


def test_inspect_run_and_profile_say_what_ran(ir_fp32):
    runner = CliRunner()
    inspected = json.loads(runner.invoke(cli, ["inspect", str(ir_fp32), "--json"]).stdout)
    assert inspected["precision"] == _openvino_default(ir_fp32)
    ran = json.loads(runner.invoke(cli, ["run", str(ir_fp32), "--random", "--precision", "f32", "--json"]).stdout)
    assert ran["precision"] == "f32"
    result = runner.invoke(cli, ["profile", str(ir_fp32), "--runs", "5", "--min-seconds", "0.05", "--json"])
    assert json.loads(result.stdout)["precision"] == _openvino_default(ir_fp32)
    result = runner.invoke(cli, ["profile", str(ir_fp32), "--runs", "5", "--min-seconds", "0.05", "--precision",
                                 "f32"])
    assert result.exit_code == 0 and " f32 " in result.output


def test_conversion_validates_at_the_precision_the_device_runs(tmp_path):
    from conftest import make_conv_onnx

    (result,) = edgekit.convert(make_conv_onnx(tmp_path / "conv.onnx"), "openvino-fp32", output_dir=tmp_path)
    assert result.validation["precision"] == _openvino_default(result.artifact)
