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

The stem (an image model's first convolution, with the layout change and normalization before it and its
activation) is different: its int8 form needs the whole input quantized and transposed, which can cost more
than the convolution saves. Whether it does depends on the CPU, the input size and the threads, so it is
measured (``stem_ms``, ``speedups``; the decision is ``_stem_for_ort`` in ``_onnx``), not assumed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from functools import partial
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


# ops that make a convolution's output, in any of ORT's forms: plain, int8 (QLinearConv), NCHWc (Conv, FusedConv)
_CONVOLUTIONS = {"Conv", "QLinearConv", "FusedConv", "ConvInteger"}
# what an export puts between an image input and its first convolution: layout, dtype, normalization
_STEM_PREFIX = {"Transpose", "Cast", "Mul", "Add", "Sub", "Div", "Identity"}
# elementwise activations an export spells out after a convolution (hard-swish, SiLU, ReLU6, GELU...)
_ACTIVATION = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Erf",
               "Mul", "Add", "Div", "Sub"}
# the stem stays float only when the whole int8 model then runs at least this much faster (timing noise)
STEM_GAIN = 0.03


def stem_nodes(graph: Any) -> list[str]:
    """The stem, by node name: the ops from a graph input through the first convolution (the layout change and
    normalization an export puts before it: ops whose other inputs are constants), then the activation computed
    from the convolution's output alone (hard-swish's Add, Clip and Mul; SiLU's Sigmoid and Mul), up to the
    next op reading anything else. Empty when no convolution is fed that way."""
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    derived = {i.name for i in graph.input} - constants
    stem: list[str] = []
    nodes = list(graph.node)
    for index, node in enumerate(nodes):
        fed = [i for i in node.input if i in derived]
        if not fed:
            continue
        if node.op_type == "Conv" and node.input[0] in derived:
            stem.append(node.name)
            return stem + _activation_of(node, nodes[index + 1:], constants)
        if node.op_type not in _STEM_PREFIX or any(i and i not in derived and i not in constants
                                                   for i in node.input):
            return []
        stem.append(node.name)
        derived.update(node.output)
    return []


def _activation_of(conv: Any, following: list[Any], constants: set[str]) -> list[str]:
    made, activation = set(conv.output), []
    for node in following:
        if node.op_type in _CONVOLUTIONS or node.op_type in ("Gemm", "MatMul"):
            break
        if node.op_type in _ACTIVATION and any(i in made for i in node.input) \
                and all(not i or i in made or i in constants for i in node.input):
            activation.append(node.name)
            made.update(node.output)
    return activation


def _session(model: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def stem_ms(model: Path, feeds: dict[str, Any], seconds: float = 0.4, most: int = 20) -> float:
    """ms per run of the ops before the second convolution: the stem and what ONNX Runtime adds to feed it
    (quantizing and transposing the input for int8), from its profiler with its default optimizations and
    threads on this CPU (int8 and float get different layouts and node names: the graph's order matches them)."""
    import tempfile

    import onnx
    from edgekit.runtimes._ort import profile_nodes

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        rows = profile_nodes(model, feeds, runs=most, budget_s=seconds, optimized_model=optimized)
        nodes = list(onnx.load(optimized).graph.node)
    per_node = {row["name"]: row["total_ms"] for row in rows}
    convolutions = [i for i, node in enumerate(nodes) if node.op_type in _CONVOLUTIONS]
    stem = nodes[:convolutions[1]] if len(convolutions) > 1 else nodes
    return sum(per_node.get(node.name, 0.0) for node in stem)


def speedups(before: Path, after: Path, feeds: dict[str, Any], rounds: int = 9) -> list[float]:
    """How much faster ``after`` runs than ``before`` here, per round (sorted), the two timed in alternation
    with ONNX Runtime's defaults (a busy machine slows both alike)."""
    from edgekit.runtimes.timing import calls_for, interleaved_rounds

    calls = {label: partial(_session(model).run, None, feeds) for label, model in (("before", before),
                                                                                   ("after", after))}
    for call in calls.values():
        call()
    times = interleaved_rounds(calls, rounds, calls_for(calls["before"], 0.05), settle_s=0.02)
    return sorted(b / a for b, a in zip(times["before"], times["after"]))
