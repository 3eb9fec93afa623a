"""Per-layer sensitivity of an int8 ONNX model, with ONNX Runtime's own tool (``qdq_loss_debug``).

Both the float model and its QDQ version are run on calibration samples with every intermediate tensor
exposed; each node is scored by the quantization noise it *adds*: the SQNR of its inputs against its float
twin minus the SQNR of its output. The nodes adding most noise are the first to keep in float. The ranking
is cached per (float model, quantized model, samples) under ~/.cache/edgekit/sensitivity, so a repair loop
or a later search (optimize) never computes it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes._formats import hash_into

CACHE = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "sensitivity"
_QUANTIZED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "Sigmoid", "Softmax",
                  "HardSigmoid", "HardSwish", "Resize", "AveragePool", "GlobalAveragePool", "MaxPool", "Relu",
                  "LeakyRelu", "Clip", "Gather", "Transpose", "Reshape", "Sub", "Div", "Pow", "Where",
                  "LayerNormalization", "InstanceNormalization", "Split", "Slice", "Squeeze", "Unsqueeze"}


def rank_nodes(float_model: Path, quantized_model: Path, samples: Iterable[dict[str, np.ndarray]],
               work: Path) -> list[dict[str, Any]]:
    """Nodes of ``float_model`` by the noise they add when quantized, worst first:
    ``[{"node", "op_type", "added_noise_db", "output_sqnr_db"}]``."""
    samples = list(samples)
    key = _key(float_model, quantized_model, samples)
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    ranking = _rank(float_model, quantized_model, samples, work)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_text(json.dumps(ranking))
    partial.replace(cached)
    return ranking


def _key(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for path in (float_model, quantized_model):
        hash_into(digest, path)
    for sample in samples:
        for name in sorted(sample):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(sample[name]).tobytes())
    return digest.hexdigest()[:32]


def _rank(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]],
          work: Path) -> list[dict[str, Any]]:
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    float_aug, quant_aug = work / "float_debug.onnx", work / "qdq_debug.onnx"
    modify_model_output_intermediate_tensors(str(float_model), str(float_aug))
    modify_model_output_intermediate_tensors(str(quantized_model), str(quant_aug))
    float_acts = collect_activations(str(float_aug), iter(samples))
    quant_acts = collect_activations(str(quant_aug), iter(samples))
    # every tensor both models expose under the same name (the QDQ model keeps the float node's output names)
    sqnr = {name: _sqnr(float_acts[name], quant_acts[name]) for name in float_acts.keys() & quant_acts.keys()}
    graph = onnx.load(str(float_model), load_external_data=False).graph
    sqnr.update({value.name: EXACT_DB for value in graph.input})
    ranking = []
    for node in graph.node:
        outputs = [sqnr[o] for o in node.output if o in sqnr]
        inputs = [sqnr[i] for i in node.input if i in sqnr]
        if not outputs or not inputs or node.op_type not in _QUANTIZED_OPS:
            continue
        before, after = min(inputs), min(outputs)
        ranking.append({"node": node.name, "op_type": node.op_type, "added_noise_db": round(before - after, 3),
                        "output_sqnr_db": round(after, 3)})
    return sorted(ranking, key=lambda r: -r["added_noise_db"])


EXACT_DB = 100.0  # what an unquantized tensor scores: far beyond anything int8 reaches


def _sqnr(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    a = np.concatenate([np.ravel(x) for x in reference]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in candidate]).astype(np.float64)
    if a.shape != b.shape:
        return EXACT_DB
    noise = float(np.sum((a - b) ** 2))
    return EXACT_DB if noise == 0 else min(EXACT_DB, float(10 * np.log10(max(float(np.sum(a**2)), 1e-30) / noise)))
