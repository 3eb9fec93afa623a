"""Hard-sigmoid gates rewritten for ONNX Runtime's int8 kernels (converters/_ort_rewrite.py): the float outputs do
not change, the gates become ops ORT has int8 kernels for, and a gate whose factor has nowhere exact to go is
left as it was."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.onnxruntime]

CHANNELS = 8


def _weight(name: str, shape: tuple[int, ...], seed: int):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32), name)


def _block(ending: str, *, swish_op: bool = False, share_weight: bool = False):
    """A MobileNetV3 block: Conv -> hard-swish -> squeeze-excite (ReduceMean, Conv, Relu, Conv, HardSigmoid,
    Mul) -> ``ending``: ``conv`` (a 1x1 projection), ``head`` (global pool, Flatten, Gemm), ``residual`` (an
    Add with the ungated expansion) or ``output`` (the gated tensor is the graph's output)."""
    from onnx import TensorProto, helper

    weights = [_weight("w_expand", (CHANNELS, 3, 3, 3), 0), _weight("b_expand", (CHANNELS,), 1),
               _weight("w_squeeze", (2, CHANNELS, 1, 1), 2), _weight("b_squeeze", (2,), 3),
               _weight("w_excite", (CHANNELS, 2, 1, 1), 4), _weight("b_excite", (CHANNELS,), 5)]
    nodes = [helper.make_node("Conv", ["x", "w_expand", "b_expand"], ["e"], pads=[1, 1, 1, 1], name="expand")]
    if swish_op:
        nodes.append(helper.make_node("HardSwish", ["e"], ["hs"], name="swish"))
    else:
        nodes += [helper.make_node("HardSigmoid", ["e"], ["hs_gate"], alpha=1 / 6, beta=0.5, name="swish_gate"),
                  helper.make_node("Mul", ["e", "hs_gate"], ["hs"], name="swish")]
    nodes += [helper.make_node("ReduceMean", ["hs"], ["pooled"], axes=[2, 3], keepdims=1, name="squeeze_pool"),
              helper.make_node("Conv", ["pooled", "w_squeeze", "b_squeeze"], ["s"], name="squeeze"),
              helper.make_node("Relu", ["s"], ["s_relu"], name="squeeze_relu"),
              helper.make_node("Conv", ["s_relu", "w_excite", "b_excite"], ["g_in"], name="excite"),
              helper.make_node("HardSigmoid", ["g_in"], ["g"], alpha=1 / 6, beta=0.5, name="se_gate"),
              helper.make_node("Mul", ["hs", "g"], ["gated"], name="se_mul")]
    shape = [1, CHANNELS, 6, 6]
    if ending == "conv":
        weights.append(_weight("w_project", (4, CHANNELS, 1, 1), 6))
        nodes.append(helper.make_node("Conv", ["gated", "w_project"], ["y"], name="project"))
        shape = [1, 4, 6, 6]
        if share_weight:  # a second layer reading the same weight
            nodes.append(helper.make_node("Conv", ["x_side", "w_project"], ["y_side"], name="side"))
    elif ending == "head":
        weights += [_weight("w_fc", (CHANNELS, 5), 7), _weight("b_fc", (5,), 8)]
        nodes += [helper.make_node("GlobalAveragePool", ["gated"], ["gp"], name="head_pool"),
                  helper.make_node("Flatten", ["gp"], ["flat"], name="flatten"),
                  helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["y"], name="fc")]
        shape = [1, 5]
    elif ending == "residual":  # the gated tensor is summed with an ungated one
        nodes.append(helper.make_node("Add", ["gated", "e"], ["y"], name="residual"))
    else:
        nodes.append(helper.make_node("Identity", ["gated"], ["y"], name="out"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if share_weight:
        inputs.append(helper.make_tensor_value_info("x_side", TensorProto.FLOAT, [1, CHANNELS, 6, 6]))
        outputs.append(helper.make_tensor_value_info("y_side", TensorProto.FLOAT, [1, 4, 6, 6]))
    graph = helper.make_graph(nodes, "block", inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outputs(model) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    feeds = {i.name: rng.normal(0, 2, i.shape).astype(np.float32) for i in session.get_inputs()}
    return session.run(None, feeds)


def _rewritten(model):
    import onnx
    from edgekit.converters._ort_rewrite import rewrite_for_ort_int8

    before = _outputs(model)
    done = rewrite_for_ort_int8(model)
    onnx.checker.check_model(model)
    for got, expected in zip(_outputs(model), before):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    return done, [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("ending", ["conv", "head"])
@pytest.mark.parametrize("swish_op", [False, True], ids=["mul-of-hardsigmoid", "HardSwish-op"])
def test_every_gate_becomes_int8_ops_and_the_outputs_do_not_change(ending, swish_op):
    done, ops = _rewritten(_block(ending, swish_op=swish_op))
    assert "HardSigmoid" not in ops and "HardSwish" not in ops and "ReduceMean" not in ops
    assert ops.count("Clip") == 2 and ops.count("Add") == 1  # the SE gate's Clip, the hard-swish's Add + Clip
    assert [line.split(" ", 2)[1] for line in done] == ["ReduceMean(s)", "HardSigmoid", "hard-swish"]


@pytest.mark.parametrize("ending", ["residual", "output"])
def test_a_hard_swish_whose_factor_would_reach_an_add_or_an_output_is_left_as_it_was(ending):
    done, ops = _rewritten(_block(ending))
    assert ops.count("HardSigmoid") == 1  # the hard-swish's gate, kept
    assert [line.split(" ", 2)[1] for line in done] == ["ReduceMean(s)", "HardSigmoid"]


def test_a_gate_input_the_model_also_outputs_keeps_its_value():
    """Folding the gate into its conv would change the conv's output, which the model returns too: the gate
    takes the other exact form (an Add before it, its factor moved past the Mul), and every output holds."""
    from onnx import TensorProto, helper

    model = _block("conv")
    model.graph.output.append(helper.make_tensor_value_info("g_in", TensorProto.FLOAT, [1, CHANNELS, 1, 1]))
    done, ops = _rewritten(model)
    assert not any("folded" in line for line in done) and done[-1].startswith("2 hard-swish gate(s)")
    assert "HardSigmoid" not in ops and ops.count("Add") == 2


def test_a_weight_another_layer_also_reads_is_never_scaled():
    done, ops = _rewritten(_block("conv", share_weight=True))
    assert ops.count("HardSigmoid") == 1 and len(done) == 2


def test_gates_the_user_excluded_stay_as_they_are():
    from edgekit.converters._ort_rewrite import rewrite_for_ort_int8

    model = _block("conv")
    assert len(rewrite_for_ort_int8(model, leave={"swish_gate", "squeeze_pool"})) == 1
    assert [n.name for n in model.graph.node if n.op_type in ("HardSigmoid", "ReduceMean")] == \
        ["swish_gate", "squeeze_pool"]


@pytest.mark.parametrize(("axes", "keepdims", "pooled"), [([2, 3], 1, True), ([-1, -2], 1, True),
                                                          ([1], 1, False), ([2, 3], 0, False)])
def test_only_a_spatial_mean_that_keeps_its_axes_becomes_a_global_average_pool(axes, keepdims, pooled):
    """Opset 18 passes the axes as an input; a mean over channels, or one that drops the axes, is not a pool."""
    from onnx import TensorProto, helper, numpy_helper

    shape = [1, 4, 1, 1] if keepdims else [1, 4]
    if axes == [1]:
        shape = [1, 1, 5, 5]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims, name="mean")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    _, ops = _rewritten(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert ops == (["GlobalAveragePool"] if pooled else ["ReduceMean"])


def test_onnx_int8_reports_the_rewrites_and_takes_exclusions_of_the_nodes_they_made(tmp_path):
    """The repair's sensitivity ranking reads the rewritten graph, so its remedies name nodes the rewrite made
    (``<gate>_add``): those must be accepted like the model's own names, and a name of neither refused."""
    import onnx

    import edgekit
    from edgekit.errors import ConversionError

    source = tmp_path / "block.onnx"
    onnx.save(_block("conv"), source)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.normal(0, 2, (1, 3, 6, 6)).astype(np.float32)} for _ in range(24)]
    (result,) = edgekit.convert(source, "onnx-int8", calibration=samples, calib_size=16, validation_size=8,
                                output_dir=tmp_path / "out", exclude_nodes=["swish_gate_add"])
    options = result.report["options"]
    assert options["excluded_nodes"] == ["swish_gate_add"] and len(options["rewritten_before_quantization"]) == 3
    assert "swish_gate_add" in {n.name for n in onnx.load(result.artifact).graph.node if n.op_type == "Add"}
    with pytest.raises(ConversionError, match=r"names no node of the model: \['nosuch'\]"):
        edgekit.convert(source, "onnx-int8", calibration=samples, calib_size=16, validation_size=8,
                        output_dir=tmp_path / "refused", exclude_nodes=["nosuch"])
