"""How sparse a model's weights are, and whether the engine that runs it can use that.

Zeros only pay where an engine has kernels for them, and the three engines differ (issue 31, with each
engine's documentation): ONNX Runtime and OpenVINO's CPU plugin densify weights at load for these layers
(OpenVINO decompresses sparse weights only for int8 MatMul on AMX CPUs); LiteRT's XNNPACK runs sparse
kernels only on ARM, for float models' 1x1 convolutions, above about 2/3 zeros, and only when the .tflite
stores the weights sparse-encoded (TFLite's ``EXPERIMENTAL_SPARSITY``). So the figures here are facts about
the file; what they buy is said per engine, never assumed. Structured (channel) pruning, which makes the
layers smaller instead of zero-filled, pays on every engine.

Device-safe: TFLite through the LiteRT interpreter, OpenVINO IR through openvino; ONNX needs the ``onnx``
package (installed with the ONNX extras), else the report says it was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgekit.runtimes.cpu import X86_AMX, describe_cpu, is_arm
from edgekit.runtimes.formats import ONNX, OPENVINO, TFLITE, ModelFile

#: a layer at least this sparse is listed
SPARSE_LAYER = 0.5
#: XNNPACK's sparse kernels pay from about this fraction of zeros (its README)
XNNPACK_SPARSE_FROM = 2 / 3
_ONNX_WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_TFLITE_WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_IR_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
_IR_WEIGHT_PATH = {"Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze", "FakeQuantize"}


@dataclass(frozen=True)
class LayerSparsity:
    layer: str
    op: str
    weights: int
    zero_fraction: float
    two_of_four: bool  # every group of 4 consecutive weights along the reduction axis holds at least 2 zeros
    stored_sparse: bool = False  # the file stores this weight in a sparse encoding (TFLite)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "op": self.op, "weights": self.weights,
                "zero_fraction": round(self.zero_fraction, 4), "two_of_four": self.two_of_four,
                "stored_sparse": self.stored_sparse}


@dataclass(frozen=True)
class SparsityReport:
    measured: bool
    layers: tuple[LayerSparsity, ...] = ()
    why_not: str = ""
    engines: dict[str, str] = field(default_factory=dict)

    @property
    def zero_fraction(self) -> float:
        total = sum(layer.weights for layer in self.layers)
        return sum(layer.zero_fraction * layer.weights for layer in self.layers) / total if total else 0.0

    @property
    def sparse_layers(self) -> list[LayerSparsity]:
        return [layer for layer in self.layers if layer.zero_fraction >= SPARSE_LAYER]

    def describe(self) -> str:
        if not self.measured:
            return f"not measured ({self.why_not})"
        if not self.layers:
            return "no conv/matmul/fully-connected weights it could read (packed low-bit or computed weights)"
        sparse = self.sparse_layers
        listed = ", ".join(f"{s.layer} {s.zero_fraction:.0%}" for s in sparse[:5]) + (" ..." if len(sparse) > 5 else "")
        two_four = sum(layer.two_of_four for layer in self.layers)
        return (f"{self.zero_fraction:.1%} of the weights are zero; {len(sparse)} of {len(self.layers)} weighted "
                f"layer(s) at least {SPARSE_LAYER:.0%} zero{f' ({listed})' if sparse else ''}; "
                f"2:4 pattern in {two_four} layer(s)")

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"measured": self.measured}
        if not self.measured:
            return {**found, "why_not": self.why_not}
        return {**found, "zero_fraction": round(self.zero_fraction, 4),
                "sparse_layers": [s.to_dict() for s in self.sparse_layers],
                "two_of_four_layers": [layer.layer for layer in self.layers if layer.two_of_four],
                "weighted_layers": len(self.layers), "engines": dict(self.engines)}


def weight_sparsity(model: ModelFile, cpu: str | None = None) -> SparsityReport:
    """Per-layer zero fractions and 2:4 patterns of ``model``'s conv/matmul/fully-connected weights, and what
    each engine can make of them on ``cpu`` (``describe_cpu``; default: this machine)."""
    readers = {ONNX: _onnx_layers, TFLITE: _tflite_layers, OPENVINO: _ir_layers}
    if model.format not in readers:
        return SparsityReport(False, why_not=f"a {model.format} file's weights are inside a vendor's compiled form")
    try:
        layers = tuple(readers[model.format](model))
    except ImportError as exc:
        return SparsityReport(False, why_not=f"{exc.name or 'a package'} is not installed")
    cpu = cpu or describe_cpu("auto")
    return SparsityReport(True, layers, engines=_engines(layers, cpu))


def _layer(name: str, op: str, weights: np.ndarray, zero: Any, layout: Any, stored_sparse: bool = False
           ) -> LayerSparsity | None:
    """``zero``: the value a weight holds when it is zero (its zero point, per tensor or broadcastable per
    channel); ``layout``: arranges an array of the weight's shape with the reduction axis last, or None."""
    try:
        zeros = np.asarray(weights == zero)
    except ValueError:  # zero points that do not broadcast (per group): left out rather than miscounted
        return None
    if zeros.shape != weights.shape:
        return None
    arranged = layout(zeros) if layout is not None and weights.ndim >= 2 else None
    two_four = arranged is not None and arranged.size > 0 and arranged.shape[-1] % 4 == 0 \
        and bool((arranged.reshape(-1, 4).sum(1) >= 2).all())
    return LayerSparsity(name, op, int(weights.size), float(zeros.mean()) if weights.size else 0.0, two_four,
                         stored_sparse)


def _rows(array: np.ndarray) -> np.ndarray:
    """[out, ...] -> [out, reduction] (convolutions, fully-connected, transposed matmul weights)."""
    return array.reshape(array.shape[0], -1)


def _columns(array: np.ndarray) -> np.ndarray:
    """[..., K, N] -> [N, K] (a MatMul's right-hand weight: K is the reduction axis)."""
    return array.reshape(-1, array.shape[-1]).T


def _zero_point(zero_points: np.ndarray, weights_ndim: int, axis: int = 0) -> Any:
    """A zero point array shaped to broadcast against the weights along ``axis`` (0: per output channel)."""
    flat = zero_points.reshape(-1)
    if flat.size <= 1:
        return flat[0].item() if flat.size else 0
    shape = [1] * weights_ndim
    shape[axis] = flat.size
    return flat.reshape(shape)


def _onnx_layers(model: ModelFile) -> list[LayerSparsity]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model.path)).graph  # external data was checked when the file was opened
    values = {t.name: t for t in graph.initializer}
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    layers = []
    for node in graph.node:
        position = _ONNX_WEIGHTED.get(node.op_type)
        if position is None or len(node.input) <= position:
            continue
        name, zero_points, axis = node.input[position], np.zeros(()), 0
        if name in dequantized:  # a quantized weight is zero where it equals its zero point
            dq = dequantized[name]
            name = dq.input[0]
            if len(dq.input) > 2 and dq.input[2] in values:
                zero_points = numpy_helper.to_array(values[dq.input[2]])
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if name not in values:
            continue
        weights = numpy_helper.to_array(values[name])
        transposed_b = any(a.name == "transB" and a.i for a in node.attribute)
        layout = _rows if node.op_type in ("Conv", "ConvTranspose") or transposed_b else _columns
        layer = _layer(node.name or name, node.op_type, weights, _zero_point(zero_points, weights.ndim, axis),
                       layout)
        if layer is not None:
            layers.append(layer)
    return layers


def _tflite_layers(model: ModelFile) -> list[LayerSparsity]:
    from edgekit.runtimes.litert_interpreter import import_interpreter

    _, module = import_interpreter()
    interpreter = module.Interpreter(model_path=str(model.path))
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    producers = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}
    layers = []
    for op in interpreter._get_ops_details():
        position = _TFLITE_WEIGHTED.get(op["op_name"])
        if position is None or len(op["inputs"]) <= position:
            continue
        index = op["inputs"][position]
        producer = producers.get(index)
        if producer is not None and producer["op_name"] in ("DEQUANTIZE", "DENSIFY"):  # fp16 or sparse-encoded
            index = producer["inputs"][0]
        tensor = details[index]
        stored_sparse = bool(tensor.get("sparsity_parameters"))
        try:
            weights = np.asarray(interpreter.get_tensor(index))
        except ValueError:  # not a constant (a weight computed at run time)
            continue
        if stored_sparse:  # the interpreter gives the stored values; the tensor's shape is the dense one
            dense_shape = tuple(int(d) for d in tensor["shape"])
            weights = _densified(weights, tensor["sparsity_parameters"], dense_shape)
            if weights is None:  # a block-sparse or reordered encoding: its zeros are what it does not store
                size = int(np.prod(dense_shape))
                layers.append(LayerSparsity(tensor["name"], op["op_name"], size,
                                            1 - int(np.count_nonzero(interpreter.get_tensor(index))) / size,
                                            False, True))
                continue
        quantization = tensor["quantization_parameters"]
        zero = _zero_point(np.asarray(quantization["zero_points"]), weights.ndim, quantization["quantized_dimension"])
        layout = None if op["op_name"] == "DEPTHWISE_CONV_2D" else _rows
        layer = _layer(tensor["name"], op["op_name"], weights, zero, layout, stored_sparse)
        if layer is not None:
            layers.append(layer)
    return layers


def _densified(values: np.ndarray, sparsity: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """The dense weight of TFLite's sparse encoding when every dimension but the last is dense and the last is
    compressed rows in the tensor's own order (what edgekit's tflite-sparse and TF's converter write for
    unstructured zeros); None for other encodings."""
    metadata = sparsity.get("dim_metadata") or []
    formats = [m["format"] for m in metadata]  # 0: dense, 1: compressed rows
    if list(sparsity.get("traversal_order", [])) != list(range(len(shape))) or len(sparsity.get("block_map", [])) \
            or formats != [0] * (len(shape) - 1) + [1]:
        return None
    segments = np.asarray(metadata[-1]["array_segments"], np.int64)
    indices = np.asarray(metadata[-1]["array_indices"], np.int64)
    rows = np.zeros((int(np.prod(shape[:-1])), shape[-1]), values.dtype)
    if len(segments) != len(rows) + 1 or segments[-1] != len(values) or len(indices) != len(values):
        return None
    rows[np.repeat(np.arange(len(rows)), np.diff(segments)), indices] = values
    return rows.reshape(shape)


def _ir_layers(model: ModelFile) -> list[LayerSparsity]:
    import openvino as ov

    layers = []
    for node in ov.Core().read_model(str(model.path)).get_ordered_ops():
        if node.get_type_name() not in _IR_WEIGHTED or node.get_input_size() < 2:
            continue
        source, zero = node.input_value(1).get_node(), 0
        while source.get_type_name() in _IR_WEIGHT_PATH:
            if source.get_type_name() == "Subtract":  # a compressed weight's zero point
                point = source.input_value(1).get_node()
                while point.get_type_name() == "Convert":
                    point = point.input_value(0).get_node()
                zero = np.asarray(point.get_data()) if point.get_type_name() == "Constant" else None
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant" or zero is None:
            continue  # an activation (attention's MatMuls), or zero points that differ per group
        weights = np.asarray(source.get_data())
        transposed_b = node.get_type_name() == "MatMul" and node.get_attributes().get("transpose_b", False)
        layout = _columns if node.get_type_name() == "MatMul" and not transposed_b else _rows
        # a decompression subgraph's zero points already have the weight's (grouped) shape
        layer = _layer(node.get_friendly_name(), node.get_type_name(), weights, zero, layout)
        if layer is not None:
            layers.append(layer)
    return layers


def _engines(layers: tuple[LayerSparsity, ...], cpu: str) -> dict[str, str]:
    stored = sum(layer.stored_sparse for layer in layers)
    paying = [layer for layer in layers if layer.zero_fraction >= XNNPACK_SPARSE_FROM]
    if not paying:
        litert = f"no layer reaches the ~{XNNPACK_SPARSE_FROM:.0%} zeros XNNPACK's sparse kernels need"
    elif not is_arm(cpu):
        litert = f"XNNPACK's sparse kernels run on ARM only; this is {cpu}"
    elif not stored:
        litert = ("the weights are stored dense: convert with TFLite's sparse encoding for XNNPACK to use them "
                  "(float models' 1x1 convolutions only)")
    else:
        litert = (f"{stored} layer(s) stored sparse; XNNPACK uses them in float models' 1x1 convolutions "
                  "(measure it on the board)")
    openvino = ("sparse int8 MatMul weights can be decompressed on this AMX CPU (measure it)" if cpu == X86_AMX
                else f"densified at load (OpenVINO's sparse weights decompression needs AMX; this is {cpu})")
    return {"litert": litert, "onnxruntime": "densified at load: zeros cost what any weight costs",
            "openvino": openvino}
