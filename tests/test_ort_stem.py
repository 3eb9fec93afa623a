"""The first convolution kept float for ONNX Runtime when this CPU runs the model faster so
(converters/_ort_placement.py ``stem_nodes``, converters/_onnx.py ``_stem_for_ort``).

Whether it pays is measured at conversion, so these tests fix the measurement (``stem_ms``, ``speedups``) and
check what edgekit does with each answer; benchmarks/int8_speedup.py holds what it measured on real CPUs."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.onnxruntime]


def _weight(name: str, shape: tuple[int, ...], seed: int):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32), name)


def _detector(prefix: str = "none", first: str = "Conv"):
    """A YOLO-style stem (Conv -> SiLU as Sigmoid and Mul), a second Conv -> SiLU, a head. ``prefix``: what the
    export puts before the stem (``nhwc``: Keras' layout Transpose and a normalizing Mul; ``concat``: an op
    edgekit does not look through). ``first``: ``MatMul`` for a model whose input no convolution reads."""
    from onnx import TensorProto, helper

    weights = [_weight("w1", (8, 3, 3, 3), 0), _weight("b1", (8,), 1), _weight("w2", (8, 8, 3, 3), 2),
               _weight("b2", (8,), 3), _weight("w3", (4, 8, 1, 1), 4)]
    shape, nodes, x = [1, 3, 16, 16], [], "x"
    if prefix == "nhwc":
        shape = [1, 16, 16, 3]
        weights.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255]))
        nodes += [helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
                  helper.make_node("Mul", ["x_nchw", "scale"], ["x_scaled"], name="normalize")]
        x = "x_scaled"
    elif prefix == "concat":
        nodes.append(helper.make_node("Concat", ["x", "x"], ["x2"], axis=0, name="twice"))
        x = "x2"
    nodes += [helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
              helper.make_node("Sigmoid", ["c1"], ["s1"], name="stem_sigmoid"),
              helper.make_node("Mul", ["c1", "s1"], ["a1"], name="stem_silu"),
              helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="second"),
              helper.make_node("Sigmoid", ["c2"], ["s2"], name="second_sigmoid"),
              helper.make_node("Mul", ["c2", "s2"], ["a2"], name="second_silu"),
              helper.make_node("Conv", ["a2", "w3"], ["y"], name="head")]
    if first == "MatMul":
        weights.append(_weight("wm", (16, 16), 5))
        nodes.insert(0, helper.make_node("MatMul", ["x", "wm"], ["xm"], name="mix"))
        nodes[1].input[0] = "xm"
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("prefix", "first", "stem"), [
    ("none", "Conv", ["stem", "stem_sigmoid", "stem_silu"]),
    ("nhwc", "Conv", ["to_nchw", "normalize", "stem", "stem_sigmoid", "stem_silu"]),
    ("concat", "Conv", []),
    ("none", "MatMul", []),
])
def test_the_stem_is_the_input_through_the_first_convolution_and_its_activation(prefix, first, stem):
    from edgekit.converters._ort_placement import stem_nodes

    assert stem_nodes(_detector(prefix, first).graph) == stem


@pytest.fixture
def convert_with(tmp_path, monkeypatch):
    """Convert the detector to onnx-int8 with the stem's measurement fixed: int8's stem ``int8_ms`` against
    float's 1 ms, then the whole model ``ratio`` times as fast with the stem float, in every round."""
    import onnx
    from edgekit.converters import _ort_placement

    import edgekit

    source = tmp_path / "detector.onnx"
    onnx.save(_detector(), source)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(24)]

    def convert(int8_ms: float, ratio: float, name: str, **options):
        measured = []
        monkeypatch.setattr(_ort_placement, "stem_ms", lambda model, feeds: measured.append(model) or (
            int8_ms if "int8" in model.name else 1.0))
        monkeypatch.setattr(_ort_placement, "speedups", lambda before, after, feeds: [ratio] * 9)
        (result,) = edgekit.convert(source, "onnx-int8", calibration=samples, calib_size=16, validation_size=8,
                                    output_dir=tmp_path / name, repair=False, check_speed=False, **options)
        return result, onnx.load(result.artifact).graph, measured

    return convert


def test_a_stem_that_runs_faster_in_float_stays_float_and_the_report_says_why(convert_with):
    result, graph, _ = convert_with(int8_ms=3.0, ratio=1.2, name="kept")
    options = result.report["options"]
    assert options["float_stem"] == ["stem", "stem_sigmoid", "stem_silu"]
    why = options["kept_float_for_engine"]["first convolution"]
    assert "ran 3 ms against 1 ms in float" in why and "1.20x as fast" in why
    assert any("first convolution kept in float" in w for w in result.report["warnings"])
    readers = [n.op_type for n in graph.node if "x" in n.input]
    assert readers == ["Conv"]  # the image goes to the float convolution as it is: no QuantizeLinear
    assert [n.op_type for n in graph.node if n.op_type.startswith("Conv")] == ["Conv"] * 3
    quantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert {"w2_quantized", "w3_quantized"} <= quantized and "w1_quantized" not in quantized  # the rest is int8
    assert result.passed


@pytest.mark.parametrize(("int8_ms", "ratio"), [(0.5, 1.5), (3.0, 1.02)],
                         ids=["int8-stem-already-faster", "model-not-faster"])
def test_a_stem_that_does_not_pay_stays_int8(convert_with, int8_ms, ratio):
    result, graph, _ = convert_with(int8_ms=int8_ms, ratio=ratio, name="int8")
    assert "float_stem" not in result.report["options"]
    assert "kept_float_for_engine" not in result.report["options"]
    assert [n.op_type for n in graph.node if "x" in n.input] == ["QuantizeLinear"]


def test_a_stem_is_not_measured_for_another_cpu_or_placed_everywhere(convert_with):
    for options in ({"for_cpu": "arm64"}, {"int8_placement": "everywhere"}):
        result, graph, measured = convert_with(int8_ms=3.0, ratio=1.2, name=next(iter(options.values())),
                                               **options)
        assert measured == [] and "float_stem" not in result.report["options"]
        assert [n.op_type for n in graph.node if "x" in n.input] == ["QuantizeLinear"]
