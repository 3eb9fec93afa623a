"""The exact ONNX rewrites made before onnx2tf (converters/_onnx_rewrite.py): outputs unchanged, ops replaced."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.onnxruntime]


def _graph(pool_input: str):
    """x -> Conv -> (Relu | nothing) -> MaxPool(3, stride 2, pads 1) -> HardSigmoid(alpha 1/6, beta 1/2) -> y."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    if pool_input == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
    nodes += [helper.make_node("MaxPool", ["r" if pool_input == "relu" else "c"], ["p"], kernel_shape=[3, 3],
                               strides=[2, 2], pads=[1, 1, 1, 1], name="pool"),
              helper.make_node("HardSigmoid", ["p"], ["y"], alpha=1 / 6, beta=0.5, name="gate")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("pool_input", ["relu", "conv"])
def test_rewrites_keep_the_outputs_and_replace_what_the_quantizer_cannot_take(pool_input):
    """After a Relu a padded MaxPool pads with 0 (same maxima); after a Conv (negative values) it is left alone,
    as -inf padding matters there. HardSigmoid becomes Add, Clip(0, 6), Mul either way."""
    import onnx
    from edgekit.converters._onnx_rewrite import rewrite_for_tflite_quantizer

    model = _graph(pool_input)
    x = np.random.default_rng(1).normal(0, 0.5, (1, 3, 9, 9)).astype(np.float32)
    before = _run(model, x)
    done = rewrite_for_tflite_quantizer(model)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "HardSigmoid" not in ops and ops[-3:] == ["Add", "Clip", "Mul"]
    assert ("Pad" in ops) == (pool_input == "relu") and len(done) == (2 if pool_input == "relu" else 1)
    after = _run(model, x)
    assert np.abs(after - before).max() < 1e-6
    assert ((before > 0) & (before < 1)).any() and (before == 1).any()  # the gate's slope and its saturation


def test_shapes_of_fixed_shape_tensors_fold_and_one_input_concats_become_identity():
    """A transformers BERT export computes a reshape target as Concat(Shape(x)): onnx2tf turns the one-input
    Concat into an unresolved ONNX_CONCAT custom op. With the input shapes fixed, Shape(x) is a constant."""
    from edgekit.converters._onnx_rewrite import rewrite_for_tflite_quantizer
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Concat", ["s"], ["c"], axis=0, name="concat"),
             helper.make_node("Reshape", ["x", "c"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(0, 1, (1, 4, 6)).astype(np.float32)
    done = rewrite_for_tflite_quantizer(model)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Identity", "Reshape"]
    assert done == [d for d in done if d.startswith("2 Shape/Concat")] and len(done) == 1
    assert np.array_equal(_run(model, x), x)


@pytest.mark.parametrize("rank", [2, 3])
def test_a_matmul_by_a_constant_weight_becomes_gemm(rank):
    """onnx2tf makes BATCH_MATMUL of MatMul (XNNPACK runs no int8 BATCH_MATMUL: a BERT from ONNX ran 0.13x its
    float in int8) and FULLY_CONNECTED of Gemm: MatMul(x, W) becomes Gemm on a 2-D view of x, exactly."""
    from edgekit.converters._onnx_rewrite import rewrite_for_tflite_quantizer
    from onnx import TensorProto, helper, numpy_helper

    shape = [4, 6] if rank == 2 else [1, 4, 6]
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (6, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="dense")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    before = _run(model, x)
    done = rewrite_for_tflite_quantizer(model)
    expected = ["Gemm"] if rank == 2 else ["Reshape", "Gemm", "Reshape"]
    assert [n.op_type for n in model.graph.node] == expected and done[0].startswith("1 MatMul(s)")
    assert np.abs(_run(model, x) - before).max() < 1e-5
