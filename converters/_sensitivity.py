"""Per-layer sensitivity of an int8 model: ONNX with ONNX Runtime's own tool (``qdq_loss_debug``), TFLite with
the LiteRT interpreter keeping every intermediate tensor (``experimental_preserve_all_tensors``, what
ai-edge-quantizer's own validation uses), OpenVINO with every layer's output made a model output (the float IR
NNCF was given against NNCF's int8 IR, matched by layer name, both compiled at f32).

Both the float model and its quantized version are run on calibration samples with every intermediate tensor
exposed; each node is scored by the quantization noise it *adds*: its output's noise-to-signal power ratio
against its float twin minus that of its inputs. The nodes adding most noise are the first to keep in float (a
TFLite node is named by its output tensors, which is how ai-edge-quantizer scopes an op). The ranking is cached per
(float model, quantized model, samples) under ~/.cache/edgekit/sensitivity, so a repair loop or a later
search (optimize) never computes it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes.formats import hash_feeds, hash_into
from edgekit.runtimes.quantization import dequantize, quantize, sqnr_db

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
    rank = {".tflite": _rank_tflite, ".xml": _rank_openvino}.get(quantized_model.suffix, _rank)
    ranking = rank(float_model, quantized_model, samples, work)
    CACHE.mkdir(parents=True, exist_ok=True)
    # a fresh temporary name (O_EXCL), never a fixed one a planted symlink could redirect; then an atomic rename
    with tempfile.NamedTemporaryFile("w", dir=CACHE, prefix=f".{key}-", suffix=".part", delete=False) as handle:
        handle.write(json.dumps(ranking))
    os.replace(handle.name, cached)
    return ranking


#: changes whenever how a ranking is computed changes, so a cached ranking of an older method is not reused
_METHOD = "added noise power ratio; fused activations followed; float ops left out"


def keep_most_sensitive(ranking: list[dict[str, Any]] | None, base: dict[str, Any], option: str,
                        what: str) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """The remedies keeping the 1, 2, 4 ... most sensitive nodes of ``ranking`` in float (at most a quarter of
    them), on top of the ``base`` options: (label, options with ``option`` naming the nodes, ranking)."""
    for count in (1, 2, 4, 8, 16, 32):
        if not ranking or count > max(1, len(ranking) // 4):
            return
        kept = tuple(r["node"] for r in ranking[:count])
        yield f"outputs and the {count} most sensitive {what} in float", {**base, option: kept}, ranking


def _key(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256(_METHOD.encode())
    for path in (float_model, quantized_model):
        hash_into(digest, path)
        if path.with_suffix(".bin").is_file():  # an OpenVINO IR's weights
            hash_into(digest, path.with_suffix(".bin"))
    for sample in samples:
        hash_feeds(digest, sample)
    return digest.hexdigest()[:32]


def _rank(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]],
          work: Path) -> list[dict[str, Any]]:
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    runs = []
    for model, augmented in ((float_model, work / "float_debug.onnx"), (quantized_model, work / "qdq_debug.onnx")):
        modify_model_output_intermediate_tensors(str(model), str(augmented))
        runs.append(_onnx_tensors(augmented))
    # every tensor both models expose under the same name (the QDQ model keeps the float node's output names)
    sqnr = _compare(runs[0], runs[1], samples)
    graph = onnx.load(str(float_model), load_external_data=False).graph
    sqnr.update({value.name: EXACT_DB for value in graph.input})
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return _by_added_noise(((n.name, n.op_type, n.input, _visible_outputs(n, consumers, sqnr)) for n in graph.node
                            if n.op_type in _QUANTIZED_OPS), sqnr)


def _onnx_tensors(augmented: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """One sample -> every tensor qdq_loss_debug's augmented model saves, by name. A session run as its
    ``collect_activations`` runs it (no graph optimization), one sample at a time: keeping every sample's
    tensors, as that function does, took 13 GB on a 640 x 640 text detector."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(augmented), sess_options=options, providers=["CPUExecutionProvider"])
    saved = [(i, o.name[: -len(_SAVED)]) for i, o in enumerate(session.get_outputs()) if o.name.endswith(_SAVED)]

    def tensors(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(None, sample)
        return {name: values[i] for i, name in saved}

    return tensors


_SAVED = "_ReshapedSavedOutput"  # what modify_model_output_intermediate_tensors appends to a saved tensor's name


def _compare(reference: Callable[[Any], dict[str, np.ndarray]], candidate: Callable[[Any], dict[str, np.ndarray]],
             samples: Iterable[Any]) -> dict[str, float]:
    """SQNR of every tensor both models compute, summed over the samples one at a time."""
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for sample in samples:
        expected, found = reference(sample), candidate(sample)
        for name in expected.keys() & found.keys():
            a, b = np.asarray(expected[name], np.float64).ravel(), np.asarray(found[name], np.float64).ravel()
            if a.shape != b.shape:
                continue
            signal[name] = signal.get(name, 0.0) + float(a @ a)
            noise[name] = noise.get(name, 0.0) + float((a - b) @ (a - b))
    return {name: _ratio_db(signal[name], noise[name]) for name in signal}


_FUSED_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid"}


def _visible_outputs(node: Any, consumers: dict[str, list[Any]], sqnr: dict[str, float]) -> list[str]:
    """A node's outputs, or, where the quantizer fused the activation after it (a Conv's Relu: the Conv's own
    output no longer exists in the QDQ model), the outputs of that activation."""
    outputs = list(node.output)
    while outputs and not any(o in sqnr for o in outputs):
        following = consumers.get(outputs[0], [])
        if len(following) != 1 or following[0].op_type not in _FUSED_ACTIVATIONS:
            break
        outputs = list(following[0].output)
    return outputs


def _by_added_noise(nodes: Iterable[tuple[str, str, Any, Any]], sqnr: dict[str, float]) -> list[dict[str, Any]]:
    """Score (name, op type, input tensors, output tensors) by the noise each adds, worst first.

    The score is the noise power the node adds, relative to its output's power (``added_noise``: the noise
    ratio after minus before). A difference of dB would put the first layer on top whatever it does (its
    input is exact: 100 dB), while a layer taking 20 dB down to 5 dB is the one wrecking the output."""
    ranking = []
    for name, op_type, input_names, output_names in nodes:
        outputs = [sqnr[o] for o in output_names if o in sqnr]
        inputs = [sqnr[i] for i in input_names if i in sqnr]
        if not outputs or not inputs:
            continue
        before, after = min(inputs), min(outputs)
        ranking.append({"node": name, "op_type": op_type, "added_noise": round(_noise(after) - _noise(before), 6),
                        "added_noise_db": round(before - after, 3), "output_sqnr_db": round(after, 3)})
    return sorted(ranking, key=lambda r: -r["added_noise"])


def _noise(sqnr_db: float) -> float:
    """Noise power relative to signal power."""
    return 10 ** (-sqnr_db / 10)


# TFLite ops that compute (data movement and the Q/DQ bookkeeping add no noise of their own)
_TFLITE_SKIPPED = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PACK", "UNPACK",
                   "SPLIT", "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "CONCATENATION", "PAD", "PADV2"}


def _rank_tflite(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]],
                 work: Path) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    sqnr = _compare(_tflite_tensors(Interpreter, float_model), _tflite_tensors(Interpreter, quantized_model), samples)
    interpreter = Interpreter(model_path=str(float_model))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    sqnr.update({d["name"]: EXACT_DB for d in interpreter.get_input_details()})
    # ops the quantizer left float compute the same either way: keeping them float is no remedy
    integer = {t["name"] for t in Interpreter(model_path=str(quantized_model)).get_tensor_details()
               if np.dtype(t["dtype"]).kind in "iu"}
    ops = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _TFLITE_SKIPPED:
            continue
        outputs, inputs = [names[o] for o in op["outputs"] if o >= 0], [names[i] for i in op["inputs"] if i >= 0]
        if not integer.intersection(outputs):
            continue
        ops.append((";".join(outputs), op["op_name"], inputs, outputs))  # named by its outputs, as AEQ scopes it
    return _by_added_noise(ops, sqnr)


def _tflite_tensors(interpreter_class: Any, path: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """One sample -> every tensor the model computes (integer ones dequantized), by name."""
    interpreter = interpreter_class(model_path=str(path), experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner()
    inputs = runner.get_input_details()
    computed = [d for d in interpreter.get_tensor_details() if d["name"]]

    def tensors(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, value in sample.items():
            detail = inputs[name]
            scale, zero_point = detail["quantization"]
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu" and scale:
                value = quantize(np.asarray(value, np.float32), scale, zero_point, dtype)
            feeds[name] = np.asarray(value).astype(dtype)
        runner(**feeds)
        found = {}
        for detail in computed:
            try:
                value = interpreter.get_tensor(detail["index"])
            except ValueError:  # tensors without data (scratch buffers)
                continue
            scale, zero_point = detail["quantization"]
            if np.dtype(detail["dtype"]).kind in "iu" and scale:
                value = dequantize(value, scale, zero_point)
            found[detail["name"]] = np.array(value, dtype=np.float32)
        return found

    return tensors


# OpenVINO ops that carry NNCF's quantization or only move data: what remains are the layers ignored_scope names
_DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "VariadicSplit", "StridedSlice",
                  "Gather", "ShapeOf"}
_OPENVINO_SKIPPED = {"Parameter", "Constant", "Result", "FakeQuantize", "Convert"} | _DATA_MOVEMENT


def _rank_openvino(float_model: Path, quantized_model: Path, samples: list[dict[str, np.ndarray]],
                   work: Path) -> list[dict[str, Any]]:
    """Layers NNCF quantized (a FakeQuantize feeds them), by the noise they add; tensors named layer:port."""
    from edgekit.runtimes.telemetry import keep_engine_telemetry_off

    keep_engine_telemetry_off()
    import openvino as ov

    core = ov.Core()
    float_net, quant_net = core.read_model(str(float_model)), core.read_model(str(quantized_model))
    quantized = {op.get_friendly_name() for op in quant_net.get_ops()
                 if any(_producer(op.input_value(i)).get_node().get_type_name() == "FakeQuantize"
                        for i in range(op.get_input_size()))}
    layers = {op.get_friendly_name(): op for op in float_net.get_ordered_ops()
              if op.get_type_name() not in _OPENVINO_SKIPPED}
    quant_layers = {op.get_friendly_name(): op for op in quant_net.get_ordered_ops()
                    if op.get_friendly_name() in layers}
    shared = [name for name in layers if name in quant_layers and layers[name].get_output_size() == 1
              and layers[name].get_output_element_type(0) == ov.Type.f32]
    runs = []
    for net, ops in ((float_net, layers), (quant_net, quant_layers)):
        net.add_outputs([ops[name].output(0) for name in shared])
        # results keep the model's output order: find each probed layer's position among them
        fed_by = {r.input_value(0).get_node().get_friendly_name(): i for i, r in enumerate(net.get_results())
                  if r.input_value(0).get_index() == 0}
        runs.append(_openvino_tensors(core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                                      {f"{name}:0": fed_by[name] for name in shared}))
    sqnr = _compare(runs[0], runs[1], samples)
    sqnr.update({f"{p.get_friendly_name()}:0": EXACT_DB for p in float_net.get_parameters()})
    nodes = []
    for name in shared:
        if name not in quantized:
            continue
        op = layers[name]
        inputs = [_tensor(op.input_value(i)) for i in range(op.get_input_size())]
        nodes.append((name, op.get_type_name(), inputs, [f"{name}:0"]))
    return _by_added_noise(nodes, sqnr)


def _openvino_tensors(compiled: Any, positions: dict[str, int]) -> Callable[[dict[str, np.ndarray]], dict]:
    def tensors(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = compiled(sample).to_tuple()
        return {name: values[i] for name, i in positions.items()}

    return tensors


def _producer(value: Any) -> Any:
    """The output feeding an input, looking through data movement (a FakeQuantize ends the walk)."""
    while value.get_node().get_type_name() in _DATA_MOVEMENT and value.get_node().get_input_size():
        value = value.get_node().input_value(0)
    return value


def _tensor(value: Any) -> str:
    found = _producer(value)
    return f"{found.get_node().get_friendly_name()}:{found.get_index()}"


EXACT_DB = 100.0  # what an unquantized tensor scores: far beyond anything int8 reaches


def _ratio_db(signal: float, noise: float) -> float:
    """``sqnr_db``, finite: an exact tensor reads EXACT_DB, a silent one the noise against 1e-30."""
    return min(EXACT_DB, sqnr_db(max(signal, 1e-30), noise))
