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
    with pytest.raises(EdgekitError, match="precision 'bf16' is an execution choice of OpenVINO .* onnxruntime runs"):
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


def test_litert_f16_is_refused_where_no_layer_is_float(tflite_int8):
    """XNNPACK runs an integer model unchanged under FORCE_FP16 (bit-identical): calling that run "f16" would
    report a precision that did not run."""
    with pytest.raises(EdgekitError, match="precision 'f16' changes nothing in .*every compute op is integer"):
        edgekit.load(tflite_int8, precision="f16")


def test_litert_f16_forces_xnnpack_fp16_and_says_so(tflite_fp32):
    x = np.random.default_rng(1).random((8, 16), dtype=np.float32)
    with edgekit.load(tflite_fp32) as default, edgekit.load(tflite_fp32, precision="f16") as half:
        assert (default.precision, half.precision) == ("f32", "f16") and "CompiledModel" in half.engine
        exact, reduced = default.run(x)["output"], half.run(x)["output"]
    # fp16 arithmetic really ran (results move), within fp16's precision of the fp32 run
    assert not np.array_equal(exact, reduced)
    np.testing.assert_allclose(reduced, exact, atol=2e-3 * np.abs(exact).max())
    with pytest.raises(EdgekitError, match="LiteRT runs float layers in f32 or f16 .*not 'bf16'"):
        edgekit.load(tflite_fp32, precision="bf16")


def test_litert_weight_cache_is_written_once_and_reused(tflite_fp32, tmp_path):
    x = np.random.default_rng(2).random((3, 16), dtype=np.float32)
    cache = tmp_path / "tiny.xnnpack_cache"
    with edgekit.load(tflite_fp32) as plain:
        expected = plain.run(x)["output"]
    with edgekit.load(tflite_fp32, weight_cache=cache) as first:
        np.testing.assert_array_equal(first.run(x)["output"], expected)
    written = cache.stat()
    assert written.st_size > 0
    with edgekit.load(tflite_fp32, weight_cache=cache) as second:
        np.testing.assert_array_equal(second.run(x)["output"], expected)
    assert cache.stat().st_mtime_ns == written.st_mtime_ns  # read back, not packed and written again
    with pytest.raises(EdgekitError, match="weight_cache must be a file path in an existing folder, got"):
        edgekit.load(tflite_fp32, weight_cache=tmp_path / "missing" / "cache")


def test_fp16_arithmetic_is_read_from_the_cpu_as_xnnpack_reads_it():
    from edgekit.runtimes.cpu import has_fp16_arithmetic

    pi5 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc asimddp"
    pi4 = "Features\t: fp asimd evtstrm crc32 cpuid"
    assert has_fp16_arithmetic(pi5, "aarch64") and not has_fp16_arithmetic(pi4, "aarch64")
    assert not has_fp16_arithmetic("flags\t: avx2 f16c avx512_fp16", "x86_64")


def test_a_model_marked_for_fp16_arithmetic_runs_f32_where_the_cpu_has_none(tmp_path, tflite_fp32, monkeypatch):
    from edgekit.converters._tflite import _mark_fp16_arithmetic
    from edgekit.runtimes import _litert

    marked = tmp_path / "marked.tflite"
    marked.write_bytes(tflite_fp32.read_bytes())
    _mark_fp16_arithmetic(marked, True)
    with edgekit.load(marked) as runtime:
        assert runtime.precision == ("f16" if _litert.has_fp16_arithmetic() else "f32")
    monkeypatch.setattr(_litert, "has_fp16_arithmetic", lambda: True)  # as on a Raspberry Pi 5
    with edgekit.load(marked) as runtime:
        assert runtime.precision == "f16"
    with pytest.raises(EdgekitError, match="allows fp16 arithmetic .*load its tflite-fp32 form"):
        edgekit.load(marked, precision="f32")
