"""onnx-w4 / onnx-w8: weights in 4 or 8 bits, activations in float, for models whose weights dominate.

ONNX Runtime's ``MatMulNBitsQuantizer`` turns each MatMul by a constant weight into ``MatMulNBits`` (weights
in blocks of ``group_size`` along K, one scale and zero point per block). Two things decide whether it pays:

- It quantizes ``MatMul`` only. Exporters write a 2-D ``nn.Linear`` as ``Gemm`` (issue 31: an FFN stack's file
  stayed 33.6 MB), so each Gemm with a constant weight becomes MatMul (+ Add for its bias) first; exact.
- ``accuracy_level`` is how MatMulNBits computes: ORT's default (0, unset) dequantizes the weights and multiplies
  in float; 4 quantizes the activations per block to int8 and uses the CPU's int8 dot products. Measured on a
  transformers BERT (4 layers, hidden 256, 32 tokens; AMD EPYC with AVX-512 VNNI, 2 threads, 2026-12-05):
  fp32 4.95 ms; w4 at level 0 5.22 ms, at level 4 2.48 ms; w8 at level 0 11.9 ms, at level 4 3.78 ms. Which
  one wins depends on the CPU, so by default both are built and timed here (``accuracy_level="auto"``) and the
  faster kept; the report gives both times. An integer names one level outright (0 is ORT's own default).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import ACCURACY_LEVELS
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import ConversionError

ORT_DEFAULT_GROUP = 128  # MatMulNBitsQuantizer's block_size default
AUTO_CANDIDATES = (0, 4)  # ORT's default, and int8 compute
_TIMING_ROUNDS, _RUNS_PER_ROUND = 5, 5


def _levels(group_size: int, accuracy_level: str | int) -> tuple[int, ...]:
    """The accuracy levels to build (two to time for ``auto``), after checking the options."""
    if group_size < 16 or group_size & (group_size - 1):
        raise ConversionError(f"group_size must be a power of 2 of at least 16 (ONNX Runtime's MatMulNBits), "
                              f"got {group_size}")
    if str(accuracy_level) == "auto":
        return AUTO_CANDIDATES
    if str(accuracy_level) not in {str(level) for level in ACCURACY_LEVELS}:
        raise ConversionError(f"accuracy_level must be auto or one of {ACCURACY_LEVELS}, got '{accuracy_level}'")
    return (int(accuracy_level),)


def quantize_weights(float_path: Path, output: Path, work: Path, inputs: Iterable[TensorSpec], *, bits: int,
                     group_size: int, symmetric: bool, accuracy_level: str | int) -> dict[str, Any]:
    """Write ``float_path`` with its MatMul weights in ``bits`` bits to ``output``; return what was done."""
    import onnx

    levels = _levels(group_size, accuracy_level)
    model = onnx.load(str(float_path))
    rewritten = gemm_to_matmul(model)
    built = {}
    for level in levels:
        path = output if len(levels) == 1 else work / f"w{bits}-level{level}.onnx"
        _quantize(model, path, bits, group_size, symmetric, level)
        built[level] = path
    used: dict[str, Any] = {"weights": f"int{bits}, groups of {group_size} along K, "
                                       f"{'symmetric' if symmetric else 'asymmetric'} (ONNX Runtime MatMulNBits)",
                            "bits": bits, "group_size": group_size, "symmetric": symmetric}
    if rewritten:
        used["gemm_rewritten_as_matmul"] = rewritten
    if len(levels) > 1:
        timings = _time(built, list(inputs))
        level = min(timings, key=timings.get)
        built[level].replace(output)
        used["accuracy_level_ms"] = {str(k): round(v, 4) for k, v in timings.items()}
        used["accuracy_level_chosen_by"] = "the faster on this machine (fastest of 5 interleaved rounds)"
    else:
        level = levels[0]
    used["accuracy_level"] = level
    used["compute"] = "int8 activations per block (accuracy_level 4)" if level == 4 else \
        f"float, weights dequantized (accuracy_level {level}{', ORT default' if level == 0 else ''})"
    packed = sum(1 for n in onnx.load(str(output), load_external_data=False).graph.node if n.op_type == "MatMulNBits")
    if not packed:
        raise ConversionError(f"onnx-w{bits}: the model has no MatMul or Gemm by a constant weight to quantize "
                              "(weight-only targets suit transformer-style models); choose onnx-int8")
    used["matmulnbits_nodes"] = packed
    return used


def _quantize(model: Any, output: Path, bits: int, group_size: int, symmetric: bool, level: int) -> None:
    import copy

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    try:
        quantizer = MatMulNBitsQuantizer(copy.deepcopy(model), bits=bits, block_size=group_size,
                                         is_symmetric=symmetric, accuracy_level=level)
        quantizer.process()
    except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"ONNX Runtime could not quantize the weights to {bits} bits: {first[:300]}") from exc
    large = quantizer.model.model.ByteSize() > 1_800_000_000
    quantizer.model.save_model_to_file(str(output), use_external_data_format=large)


def _time(models: dict[int, Path], inputs: list[TensorSpec]) -> dict[int, float]:
    """Milliseconds per run of each model, fastest of interleaved rounds, with ORT's default threads."""
    import onnxruntime as ort

    feeds = {s.name: (np.zeros if np.issubdtype(s.dtype, np.integer) else np.ones)(
        [1 if d is None else d for d in s.shape], s.dtype) for s in inputs}
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in models.items()}
    best = {k: float("inf") for k in models}
    for session in sessions.values():
        session.run(None, feeds)  # warm-up
    for _ in range(_TIMING_ROUNDS):
        for key, session in sessions.items():
            started = time.perf_counter()
            for _ in range(_RUNS_PER_ROUND):
                session.run(None, feeds)
            best[key] = min(best[key], (time.perf_counter() - started) / _RUNS_PER_ROUND * 1e3)
    return best


def gemm_to_matmul(model: Any) -> int:
    """Each ``Gemm(A, W[, C])`` by a constant weight (alpha = beta = 1, A not transposed) becomes
    ``MatMul(A, W)`` (+ ``Add(., C)``), W transposed once when ``transB``; returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rewritten, replaced = 0, set()
    for node in list(graph.node):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.input[1] not in initializers:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
            continue
        weight = node.input[1]
        if attributes.get("transB", 0):
            transposed = numpy_helper.from_array(numpy_helper.to_array(initializers[weight]).T.copy(),
                                                 f"{weight}_transposed_for_matmul")
            graph.initializer.append(transposed)
            initializers[transposed.name] = transposed
            weight = transposed.name
        index = list(graph.node).index(node)
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        replacement = [helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul")]
        if has_bias:
            replacement.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                                name=f"{node.name}_bias"))
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
        replaced.add(node.input[1])
        rewritten += 1
    unused = replaced - _names_read(graph)  # a transposed weight's original, when nothing else reads it
    for tensor in [t for t in graph.initializer if t.name in unused]:
        graph.initializer.remove(tensor)
    return rewritten


def _names_read(graph: Any) -> set[str]:
    """Every tensor name a node reads, in subgraphs (If/Loop bodies) too, and the graph's outputs."""
    from onnx import AttributeProto

    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                names |= _names_read(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    names |= _names_read(subgraph)
    return names
