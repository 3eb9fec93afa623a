"""Which ops of a model really compute in integer arithmetic.

Read from the model itself, per format: the TFLite tensors' dtypes, the ONNX
graph's Quantize/DequantizeLinear placement (QDQ), the OpenVINO IR's
FakeQuantize layers. Shared by ``edgekit inspect`` and the conversion reports.
Device-safe: it needs at most a LiteRT interpreter (for .tflite).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgekit.runtimes._formats import ONNX, OPENVINO, TFLITE, ModelFile, check_onnx

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
_IR_DATA_MOVEMENT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "StridedSlice", "Concat", "Gather"}
_IR_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
               "GroupConvolutionBackpropData"}


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
    """

    op_types: dict[str, int]
    compute_ops: int
    integer_ops: int
    float_ops: dict[str, int] = field(default_factory=dict)
    input_dtypes: tuple[str, ...] = ()
    output_dtypes: tuple[str, ...] = ()
    fully_integer: bool = False
    note: str = ""

    @property
    def integer_compute(self) -> bool:
        return self.compute_ops > 0 and self.integer_ops == self.compute_ops

    def to_dict(self) -> dict[str, Any]:
        return {
            "op_types": dict(self.op_types), "compute_ops": self.compute_ops, "integer_ops": self.integer_ops,
            "float_ops": dict(self.float_ops), "input_dtypes": list(self.input_dtypes),
            "output_dtypes": list(self.output_dtypes), "integer_compute": self.integer_compute,
            "fully_integer": self.fully_integer, "note": self.note,
        }


def _finish(op_types: Counter, counted: int, float_ops: Counter, ins: list[str], outs: list[str],
            note: str = "") -> QuantizationAudit:
    integer_io = all(d.startswith(("int", "uint")) for d in ins + outs)
    integer_ops = counted - sum(float_ops.values())
    return QuantizationAudit(dict(op_types), counted, integer_ops, dict(float_ops), tuple(ins), tuple(outs),
                             counted > 0 and integer_ops == counted and integer_io, note)


def audit_model(model: ModelFile) -> QuantizationAudit:
    """Audit an already identified and checked model file."""
    if model.format == TFLITE:
        return _audit_tflite(model)
    if model.format == ONNX:
        return _audit_onnx(model)
    if model.format == OPENVINO:
        return _audit_openvino(model)
    raise ValueError(model.format)  # unreachable: ModelFile.format is one of the three


def _audit_tflite(model: ModelFile) -> QuantizationAudit:
    from edgekit.runtimes._litert import import_interpreter

    _, module = import_interpreter()
    interpreter = module.Interpreter(model_path=str(model.path))
    dtypes = {t["index"]: _dtype_name(t["dtype"]) for t in interpreter.get_tensor_details()}
    op_types, float_ops, counted = Counter(), Counter(), 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        op_types[name] += 1
        if name in _BOUNDARY_TFLITE:
            continue
        counted += 1
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(dtypes.get(i, "").startswith("float") for i in tensors):
            float_ops[name] += 1
    ins = [_dtype_name(d["dtype"]) for d in interpreter.get_input_details()]
    outs = [_dtype_name(d["dtype"]) for d in interpreter.get_output_details()]
    return _finish(op_types, counted, float_ops, ins, outs)


def _audit_onnx(model: ModelFile) -> QuantizationAudit:
    summary = model.onnx or check_onnx(model.path)
    dequantized = {out for n in summary.nodes if n.op_type == "DequantizeLinear" for out in n.outputs}
    op_types, float_ops, counted = Counter(), Counter(), 0
    for node in summary.nodes:
        op_types[node.op_type] += 1
        if node.op_type in _QDQ or node.op_type in _ONNX_DATA_MOVEMENT:
            continue
        counted += 1
        if node.op_type not in _ONNX_INTEGER_OPS and not all(_integer_input(i, dequantized, summary)
                                                             for i in node.inputs):
            float_ops[node.op_type] += 1
    return _finish(op_types, counted, float_ops, [d for _, d in summary.inputs], [d for _, d in summary.outputs],
                   "QDQ: an op counts as integer when all its inputs come from DequantizeLinear; "
                   "data-movement and shape ops are not counted")


def _integer_input(name: str, dequantized: set[str], summary: Any) -> bool:
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
    for edge in root.iter("edge"):
        producers.setdefault(edge.get("to-layer"), []).append(edge.get("from-layer"))
    op_types, float_ops, counted = Counter(), Counter(), 0
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
        if not _fed_by_fake_quantize(layer_id, layers, producers):
            float_ops[kind] += 1
    return _finish(op_types, counted, float_ops, ins, outs,
                   "OpenVINO IR: convolutions and matmuls fed by FakeQuantize run in int8 on CPUs with int8 support")


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
    import numpy as np

    return np.dtype(dtype).name


_IR_DTYPES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "i8": "int8", "u8": "uint8",
              "i32": "int32", "i64": "int64", "bf16": "bfloat16", "boolean": "bool"}


def _ir_dtype(name: str) -> str:
    return _IR_DTYPES.get(name.lower(), name.lower())
