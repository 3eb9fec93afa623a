"""Exact rewrites of an ONNX graph before onnx2tf, so that ai-edge-quantizer can quantize what onnx2tf makes of it.

onnx2tf lowers two common patterns to ops ai-edge-quantizer has no int8 form for, and each one left float
splits LiteRT's XNNPACK delegate mid-graph:

- a padded MaxPool becomes ``PADV2`` (padding with the lowest float) + ``MAX_POOL_2D``: torchvision's ResNet
  stem. Where the pool's input cannot be negative (it comes from a Relu, or a Clip whose minimum is at least
  0), padding with 0 gives the same maxima, and a plain ``Pad`` with 0 becomes ``PAD``, which quantizes.
- ``HardSigmoid(x) = clip(alpha * x + beta, 0, 1)`` becomes ``RELU_0_TO_1``: MobileNetV3's squeeze-excite gates.
  For alpha > 0 it equals ``clip(x + beta / alpha, 0, 1 / alpha) * alpha`` — PyTorch's hard-sigmoid
  (alpha 1/6, beta 1/2) is ``relu6(x + 3) / 6`` — which becomes ``ADD``, ``RELU6`` and ``MUL``.

- a ``MatMul`` by a constant 2-D weight becomes ``BATCH_MATMUL``, which XNNPACK runs in float only (a BERT
  from ONNX: 6 % of its weights could stay in integer inside XNNPACK; quantized anyway, it ran 0.13x its float).
  As ``Gemm`` on the input reshaped to 2-D (and the result reshaped back) it becomes ``FULLY_CONNECTED``
  (that BERT: 1.02x its float).
- a ``Concat`` of a single tensor (a transformers BERT export's ``Concat(Shape(x))``) becomes an unresolved
  ``ONNX_CONCAT`` custom op, which ai-edge-quantizer cannot load. The input shapes are fixed before onnx2tf
  runs, so each ``Shape`` of a tensor whose shape is known becomes a constant, and a one-input ``Concat`` an
  ``Identity``.

All rewrites are exact up to float rounding; the report lists what was rewritten.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# producers whose output is never negative: a max-pool over them may pad with 0 instead of -inf
_NON_NEGATIVE = {"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Abs"}


def rewrite_for_tflite_quantizer(model: Any) -> list[str]:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; returns one line per kind of rewrite made."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    known = _static_shapes(model)
    pools = _zero_padded_pools(graph, producers, initializers)
    gates = _hard_sigmoids_as_relu6(graph)
    matmuls = _weight_matmuls_as_gemm(graph, initializers, known)
    shapes = _static_shapes_folded(graph, known)
    done = [f"{shapes} Shape/Concat node(s): each Shape of a fixed-shape tensor as a constant, each one-input "
            "Concat as Identity (onnx2tf makes an unresolved ONNX_CONCAT custom op of them)"] if shapes else []
    if pools:
        done.append(f"{pools} padded MaxPool(s) after a non-negative input: padding with 0 by a Pad (onnx2tf's "
                    "PADV2 with -inf cannot be quantized)")
    if matmuls:
        done.append(f"{matmuls} MatMul(s) by a constant 2-D weight as Gemm on a 2-D view of the input (onnx2tf's "
                    "BATCH_MATMUL runs outside XNNPACK in int8; Gemm becomes FULLY_CONNECTED)")
    if gates:
        done.append(f"{gates} HardSigmoid(s) as clip(x + beta/alpha, 0, 1/alpha) * alpha (onnx2tf's RELU_0_TO_1 "
                    "cannot be quantized)")
    return done


def _static_shapes(model: Any) -> dict[str, list[int]]:
    """Every tensor whose shape is fully known, by ONNX Runtime's symbolic shape inference (ONNX's own loses
    the batch dimension through a BERT export's mask arithmetic), else ONNX's."""
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
    except Exception:  # noqa: BLE001 - it asserts on some graphs; ONNX's inference is the fallback
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 - no shapes only means no shape-dependent rewrite
            return {}
    known = {}
    for value in [*inferred.value_info, *inferred.input, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and dims and all(d.HasField("dim_value") for d in dims):
            known[value.name] = [d.dim_value for d in dims]
    return known


def _weight_matmuls_as_gemm(graph: Any, initializers: dict[str, Any], known: dict[str, list[int]]) -> int:
    from onnx import helper, numpy_helper

    rewritten = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        weight, shape = initializers.get(node.input[1]), known.get(node.input[0])
        if weight is None or len(weight.dims) != 2 or not shape or len(shape) < 2 or shape[-1] != weight.dims[0]:
            continue
        name = node.name or node.output[0]
        if len(shape) == 2:
            replacement = [helper.make_node("Gemm", list(node.input), list(node.output), name=f"{name}_gemm")]
        else:
            flat = numpy_helper.from_array(np.array([int(np.prod(shape[:-1])), shape[-1]], np.int64), f"{name}_2d")
            back = numpy_helper.from_array(np.array([*shape[:-1], weight.dims[1]], np.int64), f"{name}_nd")
            graph.initializer.extend([flat, back])
            replacement = [
                helper.make_node("Reshape", [node.input[0], flat.name], [f"{name}_in2d"], name=f"{name}_flatten"),
                helper.make_node("Gemm", [f"{name}_in2d", node.input[1]], [f"{name}_out2d"], name=f"{name}_gemm"),
                helper.make_node("Reshape", [f"{name}_out2d", back.name], list(node.output), name=f"{name}_unflatten"),
            ]
        del graph.node[index]
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
        rewritten += 1
    return rewritten


def _static_shapes_folded(graph: Any, known: dict[str, list[int]]) -> int:
    from onnx import helper, numpy_helper

    folded = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type == "Shape" and not node.attribute and node.input[0] in known:  # start/end: left alone
            graph.initializer.append(numpy_helper.from_array(np.array(known[node.input[0]], np.int64),
                                                             node.output[0]))
            del graph.node[index]
            folded += 1
        elif node.op_type == "Concat" and len(node.input) == 1:
            graph.node[index].CopyFrom(helper.make_node("Identity", [node.input[0]], list(node.output),
                                                        name=node.name))
            folded += 1
    return folded


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _scalar(name: str, initializers: dict[str, Any]) -> float | None:
    from onnx import numpy_helper

    if name not in initializers:
        return None
    value = numpy_helper.to_array(initializers[name])
    return float(value) if value.size == 1 else None


def _non_negative(tensor: str, producers: dict[str, Any], initializers: dict[str, Any]) -> bool:
    node = producers.get(tensor)
    if node is None:
        return False
    if node.op_type in _NON_NEGATIVE:
        return True
    if node.op_type == "Clip":
        low = _attribute(node, "min", None) if len(node.input) < 2 else _scalar(node.input[1], initializers)
        return low is not None and low >= 0
    return False


def _zero_padded_pools(graph: Any, producers: dict[str, Any], initializers: dict[str, Any]) -> int:
    from onnx import helper, numpy_helper

    rewritten = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "MaxPool" or len(node.output) != 1:  # a second output (indices) is positional
            continue
        pads = list(_attribute(node, "pads", []))
        if not any(pads) or _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if _attribute(node, "ceil_mode", 0) or not _non_negative(node.input[0], producers, initializers):
            continue
        spatial = len(pads) // 2
        name = f"{node.name or node.output[0]}_zero_pad"
        widths = numpy_helper.from_array(
            np.array([0, 0, *pads[:spatial], 0, 0, *pads[spatial:]], np.int64), f"{name}_pads")
        graph.initializer.append(widths)
        pad = helper.make_node("Pad", [node.input[0], widths.name], [f"{name}_out"], name=name, mode="constant")
        node.input[0] = pad.output[0]
        for attribute in node.attribute:
            if attribute.name == "pads":
                del attribute.ints[:]
                attribute.ints.extend([0] * len(pads))
        graph.node.insert(index, pad)
        rewritten += 1
    return rewritten


def shifted_clip(graph: Any, gate: Any, alpha: float, beta: float, output: str) -> list[Any]:
    """``clip(x + beta / alpha, 0, 1 / alpha)`` of the HardSigmoid ``gate``'s input into ``output`` — the gate
    divided by alpha (alpha > 0) — as an Add and a Clip, their constants added to the graph's initializers."""
    from onnx import helper, numpy_helper

    name = gate.name or gate.output[0]
    constants = {part: numpy_helper.from_array(np.array(value, np.float32), f"{name}_{part}")
                 for part, value in (("shift", beta / alpha), ("low", 0.0), ("high", 1 / alpha))}
    graph.initializer.extend(constants.values())
    shifted = f"{name}_shifted"
    return [helper.make_node("Add", [gate.input[0], constants["shift"].name], [shifted], name=f"{name}_add"),
            helper.make_node("Clip", [shifted, constants["low"].name, constants["high"].name], [output],
                             name=f"{name}_clip")]


def _hard_sigmoids_as_relu6(graph: Any) -> int:
    from onnx import helper, numpy_helper

    rewritten = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "HardSigmoid":
            continue
        alpha, beta = float(_attribute(node, "alpha", 0.2)), float(_attribute(node, "beta", 0.5))
        if alpha <= 0:
            continue
        name = node.name or node.output[0]
        clipped = f"{name}_clipped"
        replacement = shifted_clip(graph, node, alpha, beta, clipped)
        scale = numpy_helper.from_array(np.array(alpha, np.float32), f"{name}_scale")
        graph.initializer.append(scale)
        replacement.append(helper.make_node("Mul", [clipped, scale.name], list(node.output), name=f"{name}_mul"))
        del graph.node[index]
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
        rewritten += 1
    return rewritten


def dequantize_qdq(model: Any) -> int:
    """Turn a QDQ model (``onnx.ModelProto``, in place) back into float: each DequantizeLinear of a constant
    weight becomes the float weight it computes, each QuantizeLinear -> DequantizeLinear pair on an activation
    is removed. Returns the number of Q/DQ nodes removed.

    Raises:
        ValueError: Blocked quantization (opset 21's ``block_size``) or integer ops with no float form here
            (QOperator models).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    integer_ops = sorted({n.op_type for n in graph.node if n.op_type.startswith("QLinear")
                          or n.op_type in ("ConvInteger", "MatMulInteger", "MatMulNBits")})
    if integer_ops:
        raise ValueError(f"it holds integer ops with no float form here ({', '.join(integer_ops)})")
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    renamed, removed = {}, []
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("block_size"):
            raise ValueError(f"'{node.name}' dequantizes in blocks (block_size), which is not supported here")
        source = node.input[0]
        if source in initializers:  # a weight (or an int32 bias): fold it
            value = numpy_helper.to_array(initializers[source]).astype(np.float32)
            scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32) \
                if len(node.input) > 2 and node.input[2] else np.zeros((), np.float32)
            if scale.size > 1:  # per channel along ``axis``
                shape = [1] * value.ndim
                shape[attributes.get("axis", 1) % value.ndim] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
            graph.initializer.append(numpy_helper.from_array((value - zero) * scale, node.output[0]))
        elif source in producers and producers[source].op_type == "QuantizeLinear":
            float_input = producers[source].input[0]
            if node.output[0] in outputs:  # a graph output keeps its name
                graph.node.insert(list(graph.node).index(node), helper.make_node(
                    "Identity", [float_input], [node.output[0]], name=f"{node.name}_dequantized"))
            else:
                renamed[node.output[0]] = float_input
        else:
            continue  # a DequantizeLinear of a graph input: the model takes integers there; leave it
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    for node in graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    read = {name for node in graph.node for name in node.input} | outputs
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.output[0] not in read]
    for node in quantizers:
        graph.node.remove(node)
    drop_unread_initializers(graph)
    return len(removed) + len(quantizers)


def drop_unread_initializers(graph: Any) -> int:
    """Remove the initializers no node reads and no graph output names (what a rewrite left behind)."""
    read = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    unread = [t for t in graph.initializer if t.name not in read]
    for tensor in unread:
        graph.initializer.remove(tensor)
    return len(unread)
