"""Where int8 goes in an onnx-int8 model: not around the activations ONNX Runtime runs only in float.

ONNX Runtime turns DequantizeLinear -> op -> QuantizeLinear into one integer kernel for the ops it has
QLinear kernels for (Conv, MatMul, Add, Mul, Sigmoid, pooling...). An op without one (HardSigmoid, the gate of
PyTorch's hard-swish ``x * hardsigmoid(x)``) runs in float between a DequantizeLinear and a QuantizeLinear: two
extra passes over the tensor for every activation, while in float ORT fuses the whole activation into the
convolution before it. Measured on a PyTorch MobileNetV3 (160x160, U8S8, AVX2 without VNNI, medians of 13
quiet runs): int8 everywhere 0.50x the speed of float; the gate and its Mul in float about 0.65x; the gate,
its Mul and the convolution feeding them in float ("float islands") 0.90x, at a higher cosine to the float
model. (On that CPU ORT's int8 depthwise and 1x1 convolutions run no faster than its float ones, so the
islands remove the slowdown the Q/DQ pairs added, not more.)

Which ops run in float is read from ORT's own optimized graph (its CPU-independent level), not from a list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# producers that ORT fuses an activation into, in float (FusedConv / FusedGemm / MatMul + activation)
_FUSING_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}


def ops_run_in_float(quantized: Path, work: Path) -> dict[str, str]:
    """The nodes (name -> op type) ONNX Runtime runs in float between a DequantizeLinear and a QuantizeLinear
    once it has applied its own QDQ fusions (ORT_ENABLE_EXTENDED: the same on every CPU)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(work / "ort-optimized.onnx")
    ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    made_by, read_by = _links(graph)
    wrapped = {}
    for node in graph.node:
        if node.op_type in _QDQ or node.domain not in ("", "ai.onnx"):
            continue
        readers = [reader.op_type for out in node.output for reader in read_by[out]]
        if "DequantizeLinear" in (made_by[i].op_type for i in node.input if i in made_by) and readers \
                and all(op == "QuantizeLinear" for op in readers):
            wrapped[node.name] = node.op_type
    return wrapped


def _links(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Tensor name -> the node making it, and -> the nodes reading it."""
    made_by = {out: node for node in graph.node for out in node.output}
    read_by = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            read_by[name].append(node)
    return made_by, read_by


def float_islands(graph: Any, run_in_float: Iterable[str]) -> dict[str, list[list[str]]]:
    """For each gated activation ``x * f(x)`` whose gate ``f`` ORT runs in float: the node names of the gate,
    the Mul and the Conv/Gemm/MatMul making ``x`` (when nothing else reads ``x``), by the gate's op type.
    An op ORT runs in float that gates nothing keeps its Q/DQ: in float its neighbours would pay the same
    two passes."""
    nodes = {node.name: node for node in graph.node}
    made_by, read_by = _links(graph)
    islands: dict[str, list[list[str]]] = defaultdict(list)
    for name in run_in_float:
        gate = nodes.get(name)
        if gate is None or not gate.input:
            continue
        x = gate.input[0]
        muls = [n for n in read_by[gate.output[0]] if n.op_type == "Mul" and x in n.input]
        if not muls:
            continue
        island = [gate.name] + [m.name for m in muls]
        producer = made_by.get(x)
        if producer is not None and producer.op_type in _FUSING_PRODUCERS \
                and {n.name for n in read_by[x]} <= set(island):
            island.append(producer.name)
        islands[gate.op_type].append(island)
    return dict(islands)
