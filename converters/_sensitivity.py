"""Per-layer sensitivity of an int8 model: ONNX with ONNX Runtime's own tool (``qdq_loss_debug``), TFLite with
the LiteRT interpreter keeping every intermediate tensor (``experimental_preserve_all_tensors``, what
ai-edge-quantizer's own validation uses).

Both the float model and its quantized version are run on calibration samples with every intermediate tensor
exposed; each node is scored by the quantization noise it *adds*: the SQNR of its inputs against its float
twin minus the SQNR of its output. The nodes adding most noise are the first to keep in float (a TFLite node
is named by its output tensors, which is how ai-edge-quantizer scopes an op). The ranking is cached per
(float model, quantized model, samples) under ~/.cache/edgekit/sensitivity, so a repair loop or a later
search (optimize) never computes it twice.
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

#: calibration samples a ranking runs (both models keep every intermediate tensor: memory grows with it)
SENSITIVITY_SAMPLES = 16
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
    rank = _rank_tflite if quantized_model.suffix == ".tflite" else _rank
    ranking = rank(float_model, quantized_model, samples, work)
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
    return _by_added_noise(((n.name, n.op_type, n.input, n.output) for n in graph.node
                            if n.op_type in _QUANTIZED_OPS), sqnr)


def _by_added_noise(nodes: Iterable[tuple[str, str, Any, Any]], sqnr: dict[str, float]) -> list[dict[str, Any]]:
    """Score (name, op type, input tensors, output tensors) by the noise each adds, worst first."""
    ranking = []
    for name, op_type, input_names, output_names in nodes:
        outputs = [sqnr[o] for o in output_names if o in sqnr]
        inputs = [sqnr[i] for i in input_names if i in sqnr]
        if not outputs or not inputs:
            continue
        before, after = min(inputs), min(outputs)
        ranking.append({"node": name, "op_type": op_type, "added_noise_db": round(before - after, 3),
                        "output_sqnr_db": round(after, 3)})
    return sorted(ranking, key=lambda r: -r["added_noise_db"])


# TFLite ops that compute (data movement and the Q/DQ bookkeeping add no noise of their own)
_TFLITE_SKIPPED = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PACK", "UNPACK",
                   "SPLIT", "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "CONCATENATION", "PAD", "PADV2"}


def _rank_tflite(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]],
                 work: Path) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    float_acts, quant_acts = _activations(Interpreter, float_model, samples), _activations(Interpreter,
                                                                                          quantized_model, samples)
    sqnr = {name: _sqnr(float_acts[name], quant_acts[name]) for name in float_acts.keys() & quant_acts.keys()}
    interpreter = Interpreter(model_path=str(float_model))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    sqnr.update({d["name"]: EXACT_DB for d in interpreter.get_input_details()})
    ops = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _TFLITE_SKIPPED:
            continue
        outputs, inputs = [names[o] for o in op["outputs"] if o >= 0], [names[i] for i in op["inputs"] if i >= 0]
        ops.append((";".join(outputs), op["op_name"], inputs, outputs))  # named by its outputs, as AEQ scopes it
    return _by_added_noise(ops, sqnr)


def _activations(interpreter_class: Any, path: Path, samples: list[dict[str, np.ndarray]]) -> dict[str, list]:
    """Every tensor the model computes (integer ones dequantized), per sample, by name."""
    interpreter = interpreter_class(model_path=str(path), experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner()
    inputs = runner.get_input_details()
    computed = [d for d in interpreter.get_tensor_details() if d["name"]]
    found: dict[str, list[np.ndarray]] = {}
    for sample in samples:
        feeds = {}
        for name, value in sample.items():
            detail = inputs[name]
            scale, zero_point = detail["quantization"]
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu" and scale:
                info = np.iinfo(dtype)
                value = np.clip(np.rint(value / scale) + zero_point, info.min, info.max)
            feeds[name] = np.asarray(value).astype(dtype)
        runner(**feeds)
        for detail in computed:
            try:
                value = interpreter.get_tensor(detail["index"])
            except ValueError:  # tensors without data (scratch buffers)
                continue
            scale, zero_point = detail["quantization"]
            if np.dtype(detail["dtype"]).kind in "iu" and scale:
                value = (value.astype(np.float32) - zero_point) * scale
            found.setdefault(detail["name"], []).append(np.array(value, dtype=np.float32))
    return found


EXACT_DB = 100.0  # what an unquantized tensor scores: far beyond anything int8 reaches


def _sqnr(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    a = np.concatenate([np.ravel(x) for x in reference]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in candidate]).astype(np.float64)
    if a.shape != b.shape:
        return EXACT_DB
    noise = float(np.sum((a - b) ** 2))
    return EXACT_DB if noise == 0 else min(EXACT_DB, float(10 * np.log10(max(float(np.sum(a**2)), 1e-30) / noise)))
