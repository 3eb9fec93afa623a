"""Integer models: float feeds are quantized with the model's own scale/zero point,
integer outputs dequantized, and ``raw=True`` matches the engine's own integer tensors."""

from __future__ import annotations

import numpy as np
import pytest
import tiny

import edgekit
from edgekit import InferenceError

# One int8 step of the softmax output is 1/256; two steps cover rounding on both sides.
QUANT_ATOL = 2.5 / 256


@pytest.mark.litert
def test_tflite_int8_io_spec_and_float_roundtrip(tflite_int8):
    x = tiny.sample_inputs(5, seed=7)
    with edgekit.load(tflite_int8) as rt:
        (spec,) = rt.inputs
        (out_spec,) = rt.outputs
        assert spec.dtype == np.int8 and spec.scale == pytest.approx(2 / 255, rel=1e-3) and spec.zero_point == 0
        assert out_spec.dtype == np.int8 and out_spec.scale == 1 / 256 and out_spec.zero_point == -128
        out = rt.run(x)["output"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, tiny.reference_output(x), atol=QUANT_ATOL)


@pytest.mark.litert
def test_tflite_raw_matches_the_interpreter(tflite_int8):
    from edgekit.runtimes.litert_interpreter import import_interpreter

    x = tiny.sample_inputs(1, seed=8)
    with edgekit.load(tflite_int8) as rt:
        spec = rt.inputs[0]
        q = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
        raw = rt.run(q, raw=True)["output"]
        via_float = rt.run(x)["output"]
    _, module = import_interpreter()
    interpreter = module.Interpreter(model_path=str(tflite_int8))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], q)
    interpreter.invoke()
    engine_raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(raw, engine_raw)
    dequantized = (engine_raw.astype(np.float32) + 128) / 256
    np.testing.assert_allclose(via_float, dequantized, atol=1e-7)


ONNX_INT8_FORMS = [
    pytest.param("onnxruntime", marks=pytest.mark.onnxruntime),
    pytest.param("openvino", marks=pytest.mark.openvino),
]


@pytest.mark.parametrize("backend", ONNX_INT8_FORMS)
def test_onnx_int8_io_reads_scale_from_the_graph(onnx_int8_io, backend):
    x = tiny.sample_inputs(6, seed=9)
    with edgekit.load(onnx_int8_io, backend=backend) as rt:
        assert rt.inputs[0].scale == pytest.approx(tiny.INPUT_SCALE) and rt.inputs[0].zero_point == 0
        assert rt.outputs[0].scale == tiny.OUTPUT_SCALE and rt.outputs[0].zero_point == tiny.OUTPUT_ZERO_POINT
        out = rt.run(x)["output"]
        # already-quantized int8 data passes through untouched and gives the same answer
        q = np.clip(np.round(x / tiny.INPUT_SCALE), -128, 127).astype(np.int8)
        np.testing.assert_array_equal(rt.run(q)["output"], out)
    np.testing.assert_allclose(out, tiny.reference_output(x), atol=QUANT_ATOL)


@pytest.mark.onnxruntime
def test_onnx_raw_matches_the_session(onnx_int8_io):
    import onnxruntime as ort

    x = tiny.sample_inputs(3, seed=10)
    q = np.clip(np.round(x / tiny.INPUT_SCALE), -128, 127).astype(np.int8)
    with edgekit.load(onnx_int8_io) as rt:
        raw = rt.run(q, raw=True)["output"]
        via_float = rt.run(x)["output"]
    (engine_raw,) = ort.InferenceSession(str(onnx_int8_io), providers=["CPUExecutionProvider"]).run(None, {"input": q})
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(raw, engine_raw)
    np.testing.assert_allclose(via_float, (engine_raw.astype(np.float32) + 128) / 256, atol=1e-7)


@pytest.mark.parametrize(
    "fixture", [pytest.param("tflite_int8", marks=pytest.mark.litert),
                pytest.param("onnx_int8_io", marks=pytest.mark.onnxruntime)])
def test_raw_refuses_float_feeds_for_integer_inputs(request, fixture):
    with edgekit.load(request.getfixturevalue(fixture)) as rt:
        with pytest.raises(InferenceError, match=r"expects int8, got float32; with raw=True pass int8"):
            rt.run(tiny.sample_inputs(1), raw=True)


@pytest.mark.litert
@pytest.mark.onnxruntime
def test_int8_agrees_with_float_form_across_engines(tflite_int8, onnx_int8_io):
    """The int8 TFLite and the int8-I/O ONNX are different quantizations of one model:
    both must land within quantization error of the float reference and of each other."""
    x = tiny.sample_inputs(16, seed=11)
    with edgekit.load(tflite_int8) as a, edgekit.load(onnx_int8_io) as b:
        out_a, out_b = a.run(x)["output"], b.run(x)["output"]
    np.testing.assert_allclose(out_a, out_b, atol=2 * QUANT_ATOL)
    assert (out_a.argmax(1) == tiny.reference_output(x).argmax(1)).mean() >= 0.9
