"""Which ops of a model really compute in integer arithmetic.

Read from the model itself, per format: the TFLite tensors' dtypes, the ONNX
graph's Quantize/DequantizeLinear placement (QDQ), the OpenVINO IR's
FakeQuantize layers. Shared by ``edgekit inspect`` and the conversion reports.
Device-safe: it needs at most a LiteRT interpreter (for .tflite).

Op counts alone mislead both ways (a transformer's LayerNorm arithmetic is many
small float ops beside a few int8 matmuls that do the work), so the audit also
weighs the layers that carry weights (convolutions, matmuls, fully-connected) by
their weight count: ``integer_share`` is the share of those weights whose layer
runs in integer, the figure an "-int8" artifact is judged by.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgekit.runtimes._qnn import context_info as qnn_context_info
from edgekit.runtimes.formats import IMX500, ONNX, OPENVINO, RKNN, TFLITE, ModelFile, check_onnx

# Ops that only move, convert or describe data; they neither help nor hurt "integer-ness" (SHAPE reads a
# tensor's shape, not its values, whatever its dtype).
_BOUNDARY_TFLITE = {"QUANTIZE", "DEQUANTIZE", "SHAPE"}
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops that only move or reshape data, or compute shapes: no arithmetic to make integer.
_ONNX_DATA_MOVEMENT = {"Shape", "Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose",
                       "Flatten", "Identity", "Constant", "ConstantOfShape", "Expand", "Range", "Size", "Split"}
_ONNX_INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                     "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
                     "QLinearLeakyRelu", "QLinearSoftmax", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
# layers the CPU plugin runs on int8 data unchanged (its low-precision transformations' "precision preserved"
# ones): a convolution after FakeQuantize -> MaxPool is int8 (the digits CNN's third conv was counted float)
_IR_DATA_MOVEMENT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "StridedSlice", "Concat", "Gather", "MaxPool",
                     "Split", "VariadicSplit", "DepthToSpace", "SpaceToDepth", "ShuffleChannels"}
_IR_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
               "GroupConvolutionBackpropData"}
# Where a layer's weights come in: input index per op type (a weight behind Q/DQ, a cast or a decompression
# subgraph is followed back to its constant).
_TFLITE_WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "CONV_3D": 1, "TRANSPOSE_CONV": 1,
                    "BATCH_MATMUL": 1}
# ops whose float bias ONNX Runtime quantizes itself when it fuses DQ -> op -> Q (QAT exporters leave the bias
# float: PT2E's QDQ Conv became QLinearConv in ORT's own optimized graph)
_ONNX_FLOAT_BIAS_FUSED = {"Conv", "ConvTranspose"}
# activations a fused integer kernel applies as the clamp of its output QuantizeLinear
_ONNX_CLAMPS = {"Relu", "Clip"}
_ONNX_WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "ConvInteger": 1, "MatMulInteger": 1,
                  "QLinearConv": 3, "QLinearMatMul": 3, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
_IR_WEIGHT_PATH = {"Convert", "Multiply", "Subtract", "FakeQuantize", "Reshape", "Transpose", "Unsqueeze"}
#: the integer share below which an "-int8" artifact is mostly float: not what its name says
MOSTLY_FLOAT_BELOW = 0.5


@dataclass(frozen=True)
class QuantizationAudit:
    """How much of a model is integer.

    Attributes:
        op_types: Histogram of op types in the model's main graph.
        compute_ops: Ops counted (data-movement and Q/DQ bookkeeping excluded).
        integer_ops: Of those, the ones that run on integer data.
        float_ops: Op type -> count of ops that stay in float.
        input_dtypes / output_dtypes: The model's I/O dtypes.
        fully_integer: Every counted op is integer and the I/O is integer.
        note: How the figures were derived, where that needs saying.
        weights: Weight elements of the layers that carry weights (convolutions, matmuls, fully-connected).
        integer_weights: Of those, the ones in layers that run in integer.
        compiled_for: The accelerator a compiled model's ops live in (a QNN context binary's HTP), where the
            file holds a vendor's binary instead of ops: nothing is counted, and nothing is called float.
    """

    op_types: dict[str, int]
    compute_ops: int
    integer_ops: int
    float_ops: dict[str, int] = field(default_factory=dict)
    input_dtypes: tuple[str, ...] = ()
    output_dtypes: tuple[str, ...] = ()
    fully_integer: bool = False
    note: str = ""
    weights: int = 0
    integer_weights: int = 0
    compiled_for: str = ""

    @property
    def integer_compute(self) -> bool:
        return self.compute_ops > 0 and self.integer_ops == self.compute_ops

    @property
    def integer_share(self) -> float:
        """The share of the weighted layers' weights that run in integer; of the compute ops when no layer
        carries weights; 0 for a model with nothing to count."""
        if self.weights:
            return self.integer_weights / self.weights
        return self.integer_ops / self.compute_ops if self.compute_ops else 0.0

    @property
    def integer_share_basis(self) -> str:
        return "weights of conv/matmul/fully-connected layers" if self.weights else "compute ops"

    @property
    def mostly_float(self) -> bool:
        return not self.compiled_for and self.integer_share < MOSTLY_FLOAT_BELOW

    def describe_share(self) -> str:
        """E.g. "3 % of the weights of conv/matmul/fully-connected layers (1 of 55 compute ops) run in integer"."""
        if self.compiled_for:
            return f"not visible: the ops are compiled into a binary for the {self.compiled_for}"
        return (f"{self.integer_share:.0%} of the {self.integer_share_basis} ({self.integer_ops} of "
                f"{self.compute_ops} compute ops) run in integer")

    def to_dict(self) -> dict[str, Any]:
        return {
            "op_types": dict(self.op_types), "compute_ops": self.compute_ops, "integer_ops": self.integer_ops,
            "float_ops": dict(self.float_ops), "input_dtypes": list(self.input_dtypes),
            "output_dtypes": list(self.output_dtypes), "integer_compute": self.integer_compute,
            "fully_integer": self.fully_integer, "weights": self.weights, "integer_weights": self.integer_weights,
            "integer_share": round(self.integer_share, 4), "integer_share_basis": self.integer_share_basis,
            "note": self.note, "compiled_for": self.compiled_for or None,
        }


def _finish(op_types: Counter, counted: int, float_ops: Counter, ins: list[str], outs: list[str],
            note: str = "", weights: tuple[int, int] = (0, 0)) -> QuantizationAudit:
    integer_io = all(d.startswith(("int", "uint")) for d in ins + outs)
    integer_ops = counted - sum(float_ops.values())
    return QuantizationAudit(dict(op_types), counted, integer_ops, dict(float_ops), tuple(ins), tuple(outs),
                             counted > 0 and integer_ops == counted and integer_io, note, *weights)


def audit_model(model: ModelFile) -> QuantizationAudit:
    """Audit an already identified and checked model file."""
    if model.format == TFLITE:
        return _audit_tflite(model)
    if model.format == ONNX:
        return _audit_onnx(model)
    if model.format == OPENVINO:
        return _audit_openvino(model)
    if model.format == RKNN:  # Rockchip's compiled form: no ops to read without the toolkit
        return QuantizationAudit({}, 0, 0, note="a Rockchip RKNN binary: its ops are inside the compiled form",
                                 compiled_for="Rockchip RKNPU")
    if model.format == IMX500:  # Sony's converter output: the sensor's program and its weights, packed
        return QuantizationAudit({}, 0, 0, note="an IMX500 package: MCT quantized it to 8 bits and its ops are "
                                 "inside the sensor's compiled program", compiled_for="Sony IMX500")
    raise ValueError(model.format)  # unreachable: ModelFile.format is one of the formats above


def _audit_tflite(model: ModelFile) -> QuantizationAudit:
    from edgekit.runtimes.litert_interpreter import import_interpreter

    _, module = import_interpreter()
    interpreter = module.Interpreter(model_path=str(model.path))
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    dtypes = {i: _dtype_name(t["dtype"]) for i, t in details.items()}
    ops = interpreter._get_ops_details()
    producer = {i: op for op in ops for i in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    op_types, float_ops, counted, weights, integer_weights = Counter(), Counter(), 0, 0, 0
    for op in ops:
        name = op["op_name"]
        op_types[name] += 1
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if name in _BOUNDARY_TFLITE or _shape_arithmetic(tensors, details):
            continue
        counted += 1
        is_float = any(dtypes.get(i, "").startswith("float") for i in tensors)
        if is_float:
            float_ops[name] += 1
        position = _TFLITE_WEIGHTED.get(name)
        if position is not None and len(op["inputs"]) > position:
            weight = op["inputs"][position]
            if weight in producer and producer[weight]["op_name"] == "DEQUANTIZE":  # fp16 weights, cast at load
                weight = producer[weight]["inputs"][0]
            if weight >= 0 and weight not in producer and weight not in inputs:  # a constant, not an activation
                count = int(np.prod(details[weight]["shape"]))
                weights += count
                integer_weights += 0 if is_float else count
    ins = [_dtype_name(d["dtype"]) for d in interpreter.get_input_details()]
    outs = [_dtype_name(d["dtype"]) for d in interpreter.get_output_details()]
    return _finish(op_types, counted, float_ops, ins, outs, weights=(weights, integer_weights))


def _shape_arithmetic(tensors: list[int], details: dict[int, Any]) -> bool:
    """An op on int32/int64/bool tensors that carry no quantization scale: it computes shapes or indices (a
    float model's dynamic reshape leaves SHAPE -> STRIDED_SLICE -> PACK), not quantized values."""
    return bool(tensors) and all(_dtype_name(details[i]["dtype"]) in ("int32", "int64", "bool")
                                 and not details[i]["quantization"][0] for i in tensors)


def is_quantized_tflite(model: ModelFile) -> bool:
    """Whether a .tflite holds quantized tensors (int8/uint8/int16 with a scale): what re-quantizing needs the
    float model for. Shape arithmetic on int32 and fp16 weights do not count."""
    from edgekit.runtimes.litert_interpreter import import_interpreter

    _, module = import_interpreter()
    interpreter = module.Interpreter(model_path=str(model.path))
    return any(_dtype_name(t["dtype"]) in ("int8", "uint8", "int16") and t["quantization"][0]
               for t in interpreter.get_tensor_details())


def _audit_onnx(model: ModelFile) -> QuantizationAudit:
    summary = model.onnx or check_onnx(model.path)
    context = qnn_context_info(summary)
    if context is not None:
        return QuantizationAudit(Counter(n.op_type for n in summary.nodes), 0, 0,
                                 input_dtypes=tuple(d for _, d in summary.inputs),
                                 output_dtypes=tuple(d for _, d in summary.outputs),
                                 note="a QNN context binary: its ops are inside Qualcomm's compiled form",
                                 compiled_for=f"Qualcomm HTP v{context['htp_arch'] or '?'}")
    # each DequantizeLinear output -> the tensor it dequantizes (a weight's initializer, for the weight count)
    dequantized = {out: n.inputs[0] if n.inputs else "" for n in summary.nodes if n.op_type == "DequantizeLinear"
                   for out in n.outputs}
    op_types, float_ops, counted, weights, integer_weights = Counter(), Counter(), 0, 0, 0
    quantized_next = _quantized_outputs(summary)
    integer_made: set[str] = set()  # outputs of ops counted integer: a Relu between them and a Q is folded
    # an op reading QuantizeLinear's integer output directly (QCDQ's Clip) is integer arithmetic, not a float op
    quantized = _quantize_outputs(summary)
    for node in summary.nodes:
        op_types[node.op_type] += 1
        if node.op_type in _QDQ or node.op_type in _ONNX_DATA_MOVEMENT:
            continue
        counted += 1
        inputs = list(node.inputs)
        if node.op_type in _ONNX_FLOAT_BIAS_FUSED and len(inputs) > 2 and all(o in quantized_next
                                                                               for o in node.outputs):
            inputs = inputs[:2]  # ONNX Runtime quantizes a float bias itself when it fuses DQ -> op -> Q
        folded = node.op_type in _ONNX_CLAMPS and inputs and inputs[0] in integer_made \
            and all(o in quantized_next for o in node.outputs)
        is_float = node.op_type not in _ONNX_INTEGER_OPS and not folded \
            and not all(_integer_input(i, dequantized, summary) or i in quantized for i in inputs)
        if not is_float:
            integer_made.update(node.outputs)
        if is_float:
            float_ops[node.op_type] += 1
        position = _ONNX_WEIGHTED.get(node.op_type)
        if position is not None and len(node.inputs) > position:
            weight = dequantized.get(node.inputs[position]) or node.inputs[position]
            count = summary.initializer_elements.get(weight, 0)
            weights += count
            integer_weights += 0 if is_float else count
    return _finish(op_types, counted, float_ops, [d for _, d in summary.inputs], [d for _, d in summary.outputs],
                   "QDQ: an op counts as integer when all its inputs come from DequantizeLinear; "
                   "data-movement and shape ops are not counted", (weights, integer_weights))


def _quantized_outputs(summary: Any) -> set[str]:
    """Tensors read only by QuantizeLinear nodes, directly or through one Relu/Clip: what a fused integer kernel
    writes in int8 itself (ORT folds the clamp into the output's quantization)."""
    readers: dict[str, list[Any]] = {}
    for node in summary.nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    graph_outputs = {name for name, _ in summary.outputs}

    def quantized(name: str, clamp_allowed: bool) -> bool:
        nodes = readers.get(name, [])
        if name in graph_outputs or not nodes:
            return False
        if all(n.op_type == "QuantizeLinear" for n in nodes):
            return True
        return clamp_allowed and len(nodes) == 1 and nodes[0].op_type in _ONNX_CLAMPS \
            and all(quantized(o, False) for o in nodes[0].outputs)

    return {name for name in readers if quantized(name, True)}


def _quantize_outputs(summary: Any) -> set[str]:
    """The integer tensors QuantizeLinear nodes write."""
    return {out for n in summary.nodes if n.op_type == "QuantizeLinear" for out in n.outputs}


#: how a QDQ model narrows a range below 8 bits: a clamp between QuantizeLinear and DequantizeLinear
QCDQ = "Q->Clip->DQ (sub-8-bit ranges)"


def source_quantization(model: ModelFile) -> str | None:
    """How a model arrives already quantized (QAT, or quantized by another tool), or None for a float model:
    the scales it carries are the ones to keep. ONNX: weights stored as integers behind DequantizeLinear
    (QDQ), or QOperator ops; TFLite: quantized tensors; OpenVINO IR: FakeQuantize layers."""
    if model.format == TFLITE:
        return "an integer .tflite (quantized tensors with scales)" if is_quantized_tflite(model) else None
    if model.format == OPENVINO:
        fake = sum(layer.get("type") == "FakeQuantize" for layer in ET.parse(model.path).getroot().iter("layer"))
        return f"an OpenVINO IR with {fake} FakeQuantize layer(s) (NNCF's int8)" if fake else None
    if model.format != ONNX:
        return None
    summary = model.onnx or check_onnx(model.path)
    ops = Counter(n.op_type for n in summary.nodes)
    integer_weights = sum(1 for n in summary.nodes if n.op_type == "DequantizeLinear" and n.inputs
                          and not summary.initializers.get(n.inputs[0], "float").startswith(("float", "bfloat")))
    qoperator = sum(count for op, count in ops.items() if op in _ONNX_INTEGER_OPS)
    if not integer_weights and not qoperator:
        return None
    if qoperator:
        return f"QOperator ONNX ({qoperator} integer op(s))"
    quantized = _quantize_outputs(summary)
    clipped = sum(1 for n in summary.nodes if n.op_type in _ONNX_CLAMPS and n.inputs and n.inputs[0] in quantized)
    return (f"QDQ ONNX ({ops['QuantizeLinear']} QuantizeLinear, {ops['DequantizeLinear']} DequantizeLinear, "
            f"{integer_weights} integer weight tensor(s)" + (f"; {clipped} {QCDQ}" if clipped else "") + ")")


def _integer_input(name: str, dequantized: dict[str, str], summary: Any) -> bool:
    """In QDQ, an op runs integer when every input comes through a DequantizeLinear
    (activations and weights alike); a float initializer means float weights."""
    if not name or name in dequantized:
        return True
    dtype = summary.initializers.get(name)
    return dtype is not None and not dtype.startswith(("float", "bfloat"))


def _audit_openvino(model: ModelFile) -> QuantizationAudit:
    root = ET.parse(model.path).getroot()
    layers = {layer.get("id"): layer for layer in root.iter("layer")}
    producers: dict[str, list[str]] = {}
    by_port: dict[tuple[str, str], str] = {}
    for edge in root.iter("edge"):
        producers.setdefault(edge.get("to-layer"), []).append(edge.get("from-layer"))
        by_port[edge.get("to-layer"), edge.get("to-port")] = edge.get("from-layer")
    op_types, float_ops, counted, weights, integer_weights = Counter(), Counter(), 0, 0, 0
    ins, outs = [], []
    for layer_id, layer in layers.items():
        kind = layer.get("type", "")
        op_types[kind] += 1
        if kind == "Parameter":
            data = layer.find("data")
            ins.append(_ir_dtype(data.get("element_type", "") if data is not None else ""))
        elif kind == "Result":
            port = layer.find("input/port")
            outs.append(_ir_dtype(port.get("precision", "") if port is not None else ""))
        if kind not in _IR_COMPUTE:
            continue
        counted += 1
        is_float = not _fed_by_fake_quantize(layer_id, layers, producers)
        if is_float:
            float_ops[kind] += 1
        count = _ir_weight_elements(layer, layers, by_port)
        weights += count
        integer_weights += 0 if is_float else count
    return _finish(op_types, counted, float_ops, ins, outs,
                   "OpenVINO IR: convolutions and matmuls fed by FakeQuantize run in int8 on CPUs with int8 support",
                   (weights, integer_weights))


def _ir_weight_elements(layer: Any, layers: dict[str, Any], by_port: dict[tuple[str, str], str]) -> int:
    """The element count of the constant behind a layer's second input (its weights), followed back through a
    weight's FakeQuantize, conversion and decompression layers; 0 when an activation feeds it."""
    ports = layer.findall("input/port")
    current = by_port.get((layer.get("id"), ports[1].get("id"))) if len(ports) > 1 else None
    while current in layers:
        producer = layers[current]
        if producer.get("type") == "Const":
            data = producer.find("data")
            shape = data.get("shape", "") if data is not None else ""
            return int(np.prod([int(d) for d in shape.split(",") if d.strip().isdigit()])) if shape else 1
        if producer.get("type") not in _IR_WEIGHT_PATH:
            return 0
        first = producer.find("input/port")
        current = by_port.get((current, first.get("id"))) if first is not None else None
    return 0


def _fed_by_fake_quantize(layer_id: str, layers: dict[str, Any], producers: dict[str, list[str]]) -> bool:
    """Whether a FakeQuantize reaches this layer through data-movement layers only (the CPU
    plugin moves int8 data through a Transpose or Reshape unchanged)."""
    seen, stack = set(), list(producers.get(layer_id, []))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        kind = layers[current].get("type") if current in layers else None
        if kind == "FakeQuantize":
            return True
        if kind in _IR_DATA_MOVEMENT:
            stack.extend(producers.get(current, []))
    return False


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


_IR_DTYPES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "i8": "int8", "u8": "uint8",
              "i32": "int32", "i64": "int64", "bf16": "bfloat16", "boolean": "bool"}


def _ir_dtype(name: str) -> str:
    return _IR_DTYPES.get(name.lower(), name.lower())
