"""Exact rewrites of a float ONNX graph, before quantization, into ops ONNX Runtime runs in int8.

ONNX Runtime fuses DequantizeLinear -> op -> QuantizeLinear into one int8 kernel only for the ops it has one for.
Quantized as exported, MobileNetV3's hard-swish ``x * hardsigmoid(x)``, its squeeze-excite gates and their
``ReduceMean`` pooling each run in float between a DequantizeLinear and a QuantizeLinear: extra passes over the
tensor on top of the int8 ops. On an AMX Xeon (1 thread, a torchvision-style MobileNetV3 at 160x160) those
passes cost more than the int8 convolutions saved: onnx-int8 ran 0.46x its float, 0.63x with the gates
rewritten. ``HardSigmoid(x) = clip(alpha * x + beta, 0, 1)`` has exact forms ORT runs in integer:

- a gate computed by a Conv/Gemm that nothing else reads (squeeze-excite): alpha and beta fold into that
  layer's weights and bias, and the gate becomes ``Clip(0, 1)``, which ORT folds into the quantized output's
  range: no pass at all.
- any other gate (hard-swish): ``clip(x + beta / alpha, 0, 1 / alpha)``: an int8 Add whose Clip folds into
  its output range. The factor alpha left over is pushed forward, through ops that commute with a positive
  scale (pooling, Relu, reshapes, a Mul by another tensor), into the weights of the Conv/Gemm/MatMul layers
  that read the gated tensor. Where it cannot reach a weight (a residual Add, a graph output), the gate is
  left as it was; the engine placement (``_ort_placement``) decides about it.
- ``ReduceMean`` over the spatial axes of a 4-D tensor, keeping them, is ``GlobalAveragePool``, which ORT runs
  in int8 (``QLinearGlobalAveragePool``).

Every rewrite is exact up to float rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgekit.converters._onnx_rewrite import _attribute, shifted_clip
from edgekit.converters._ort_placement import _links

# f(s * x) = s * f(x) for s > 0: a scale passes through these to their first output
_COMMUTES_WITH_SCALE = {"ReduceMean", "ReduceSum", "GlobalAveragePool", "AveragePool", "GlobalMaxPool", "MaxPool",
                        "Relu", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
# the input index whose constant weight absorbs a scale of the data input
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def rewrite_for_ort_int8(model: Any, leave: set[str] = frozenset()) -> list[str]:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place, except the nodes named in ``leave`` (the user's
    exclusions); returns one line per kind of rewrite made."""
    graph = model.graph
    _hard_swish_as_gate(graph, leave)
    initializers = {t.name: t for t in graph.initializer}
    folded = shifted = 0
    for node in list(graph.node):
        if node.op_type != "HardSigmoid" or node.name in leave:
            continue
        alpha, beta = float(_attribute(node, "alpha", 0.2)), float(_attribute(node, "beta", 0.5))
        if alpha <= 0:
            continue
        made_by, read_by = _links(graph)
        if _fold_into_producer(graph, node, alpha, beta, made_by, read_by, initializers):
            folded += 1
        elif _shift_and_push_scale(graph, node, alpha, beta, read_by, initializers):
            shifted += 1
    done = []
    pools = _spatial_means_as_global_pools(graph, _ranks(model), initializers, leave)
    if pools:
        done.append(f"{pools} ReduceMean(s) over height and width as GlobalAveragePool (ONNX Runtime has no "
                    "int8 ReduceMean)")
    if folded:
        done.append(f"{folded} HardSigmoid gate(s) folded into the Conv/Gemm computing them (a Clip(0, 1) "
                    "ONNX Runtime folds into the int8 range)")
    if shifted:
        done.append(f"{shifted} hard-swish gate(s) (or gates whose input is read elsewhere) as an int8 Add whose "
                    "Clip folds into its range, with the "
                    "gate's factor moved into the weights of the layers reading it (ONNX Runtime has no int8 "
                    "HardSigmoid)")
    return done


def _ranks(model: Any) -> dict[str, int]:
    """Tensor name -> rank, where ONNX's shape inference knows it."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info, *graph.output)
            if v.type.tensor_type.HasField("shape")}


def _spatial_means_as_global_pools(graph: Any, ranks: dict[str, int], initializers: dict[str, Any],
                                   leave: set[str]) -> int:
    from onnx import helper, numpy_helper

    rewritten = 0
    for node in graph.node:
        if node.op_type != "ReduceMean" or node.name in leave or ranks.get(node.input[0]) != 4 \
                or not _attribute(node, "keepdims", 1):
            continue
        if len(node.input) > 1:  # opset 18: the axes are an input
            if node.input[1] not in initializers:
                continue
            axes = numpy_helper.to_array(initializers[node.input[1]]).tolist()
        else:
            axes = _attribute(node, "axes", None)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                       name=node.name or node.output[0]))
        rewritten += 1
    return rewritten


def _hard_swish_as_gate(graph: Any, leave: set[str]) -> None:
    """HardSwish(x) as x * HardSigmoid(x) (alpha 1/6, beta 1/2), the form the rewrites below read."""
    from onnx import helper

    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "HardSwish" or node.name in leave:
            continue
        name = node.name or node.output[0]
        gate = helper.make_node("HardSigmoid", [node.input[0]], [f"{name}_gate"], name=f"{name}_gate",
                                alpha=1 / 6, beta=0.5)
        mul = helper.make_node("Mul", [node.input[0], gate.output[0]], list(node.output), name=f"{name}_mul")
        graph.node[index].CopyFrom(mul)
        graph.node.insert(index, gate)


def _constant(graph: Any, name: str, value: float) -> str:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def _owned_weight(name: str, read_by: dict[str, list[Any]], initializers: dict[str, Any]) -> Any:
    """The initializer ``name`` when exactly one node reads it (scaling a shared one would change the others)."""
    return initializers.get(name) if len(read_by[name]) == 1 else None


def _scale_initializer(tensor: Any, factor: float, offset: float = 0.0) -> None:
    from onnx import numpy_helper

    value = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array((value * factor + offset).astype(np.float32), tensor.name))


def _fold_into_producer(graph: Any, gate: Any, alpha: float, beta: float, made_by: dict[str, Any],
                        read_by: dict[str, list[Any]], initializers: dict[str, Any]) -> bool:
    from onnx import helper

    producer = made_by.get(gate.input[0])
    if producer is None or producer.op_type not in ("Conv", "Gemm") or len(read_by[gate.input[0]]) != 1 \
            or len(producer.input) < 3 or gate.input[0] in {o.name for o in graph.output}:
        return False
    if producer.op_type == "Gemm" and (_attribute(producer, "alpha", 1.0) != 1.0
                                       or _attribute(producer, "beta", 1.0) != 1.0):
        return False
    weight = _owned_weight(producer.input[1], read_by, initializers)
    bias = _owned_weight(producer.input[2], read_by, initializers)
    if weight is None or bias is None:
        return False
    _scale_initializer(weight, alpha)
    _scale_initializer(bias, alpha, beta)
    name = gate.name or gate.output[0]
    clip = helper.make_node("Clip", [gate.input[0], _constant(graph, f"{name}_low", 0.0),
                                     _constant(graph, f"{name}_high", 1.0)], list(gate.output), name=f"{name}_clip")
    gate.CopyFrom(clip)
    return True


def _shift_and_push_scale(graph: Any, gate: Any, alpha: float, beta: float, read_by: dict[str, list[Any]],
                          initializers: dict[str, Any]) -> bool:
    weights = _weights_absorbing(gate.output[0], read_by, initializers, {o.name for o in graph.output})
    if weights is None:
        return False
    for weight in weights:
        _scale_initializer(weight, alpha)
    add, clip = shifted_clip(graph, gate, alpha, beta, gate.output[0])
    index = list(graph.node).index(gate)
    graph.node[index].CopyFrom(clip)
    graph.node.insert(index, add)
    return True


def _weights_absorbing(tensor: str, read_by: dict[str, list[Any]], initializers: dict[str, Any],
                       outputs: set[str]) -> list[Any] | None:
    """The constant weights that absorb a positive scale of ``tensor`` for every path from it, or None where a
    path reaches anything else (an Add, a graph output, a Mul of two scaled tensors)."""
    weights: list[Any] = []
    scaled, pending = {tensor}, [tensor]
    while pending:
        current = pending.pop()
        if current in outputs or not read_by[current]:
            return None
        for reader in read_by[current]:
            if reader.op_type in _WEIGHT_INPUT and reader.input[0] == current \
                    and current not in reader.input[1:]:
                weight = _owned_weight(reader.input[_WEIGHT_INPUT[reader.op_type]], read_by, initializers)
                if weight is None:
                    return None
                weights.append(weight)
            elif reader.op_type in _COMMUTES_WITH_SCALE and reader.input[0] == current:
                pending.append(reader.output[0])
                scaled.add(reader.output[0])
            elif reader.op_type == "Mul" and len(reader.input) == 2 and list(reader.input).count(current) == 1:
                pending.append(reader.output[0])
                scaled.add(reader.output[0])
            else:
                return None
    # a Mul of two scaled tensors would carry the scale twice
    for name in scaled:
        for reader in read_by[name]:
            if reader.op_type == "Mul" and all(i in scaled for i in reader.input):
                return None
    return weights
