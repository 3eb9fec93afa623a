"""A small, engine-free reader of the ONNX protobuf wire format.

Model files are untrusted. Before any engine parses an ONNX file we walk its
bytes ourselves to find every external-data reference (to refuse locations
outside the model's folder and ORT's ``_ORT_MEM_ADDR_`` trick, which makes
OpenVINO read an attacker-chosen address) and to read the op types and graph
I/O for ``edgekit inspect`` on a device that has no ``onnx`` package.
Only the fields we need are decoded; everything else is skipped by length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edgekit.runtimes.errors import UnsupportedModelError

_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies); deeper is hostile, not a real model
_MAX_TENSOR_BYTES = 1 << 40  # one tensor of a terabyte is not a model that fits any edge device
_ITEMSIZE = {"float32": 4, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "int32": 4, "int64": 8, "bool": 1,
             "float16": 2, "float64": 8, "uint32": 4, "uint64": 8, "bfloat16": 2}

# field numbers from onnx.proto3
_MODEL_GRAPH, _MODEL_FUNCTIONS, _MODEL_TRAINING, _MODEL_OPSET, _MODEL_METADATA = 7, 25, 20, 8, 14
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 15, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTR, _NODE_DOMAIN = 1, 2, 4, 5, 7
_ATTR_NAME, _ATTR_I, _ATTR_S = 1, 3, 4
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SHORT_TEXT = 256  # attribute strings kept for the summary; longer ones are payloads (an EPContext's binary)
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_EXTERNAL = 1, 2, 8, 13
_TENSOR_FLOATS, _TENSOR_INT32S, _TENSOR_RAW = 4, 5, 9
_SCALAR_FORMATS = {"float32": "<f", "float16": "<e", "int8": "<b", "uint8": "<B", "int32": "<i", "int16": "<h",
                   "uint16": "<H", "float64": "<d", "int64": "<q"}
_FUNCTION_NODE = 7
_TRAINING_GRAPHS = (1, 2)
_VALUE_NAME, _VALUE_TYPE = 1, 2

# TensorProto.DataType -> numpy dtype name
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


@dataclass
class OnnxNode:
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    #: integer and short text attributes (top-level nodes), e.g. an EPContext's ``source`` and ``embed_mode``
    attributes: dict[str, int | str] = field(default_factory=dict)


@dataclass
class OnnxSummary:
    """What the walker found in a model file."""

    nodes: list[OnnxNode] = field(default_factory=list)  # top-level graph only
    external_locations: list[str] = field(default_factory=list)  # every tensor, every subgraph
    initializers: dict[str, str] = field(default_factory=dict)  # name -> dtype (top-level)
    initializer_elements: dict[str, int] = field(default_factory=dict)  # name -> element count (top-level)
    scalars: dict[str, float] = field(default_factory=dict)  # one-element top-level initializers
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, dtype), initializers excluded
    outputs: list[tuple[str, str]] = field(default_factory=list)
    opset: int | None = None
    has_graph: bool = False
    metadata: dict[str, str] = field(default_factory=dict)  # the model's metadata_props


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("the file ends inside a number (truncated or not ONNX)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field_number, wire_type, value); value is an int or a memoryview slice."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Malformed("a field runs past the end of the file (truncated or not ONNX)")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("truncated field")
        yield number, wire, value


def _packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: memoryview) -> str:
    return bytes(value).decode("utf-8", "replace")


class _Walker:
    def __init__(self) -> None:
        self.summary = OnnxSummary()

    def model(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if wire != 2:
                continue
            if number == _MODEL_GRAPH:
                self.summary.has_graph = True
                self.graph(value, depth=0, top=True)
            elif number == _MODEL_FUNCTIONS:
                for n, w, v in _fields(value):
                    if n == _FUNCTION_NODE and w == 2:
                        self.node(v, depth=1, top=False)
            elif number == _MODEL_TRAINING:
                for n, w, v in _fields(value):
                    if n in _TRAINING_GRAPHS and w == 2:
                        self.graph(v, depth=1, top=False)
            elif number == _MODEL_OPSET:
                domain, version = "", None
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        domain = _text(v)
                    elif n == 2 and w == 0:
                        version = v
                if domain in ("", "ai.onnx"):
                    self.summary.opset = version
            elif number == _MODEL_METADATA:
                entry = {n: _text(v) for n, w, v in _fields(value) if n in (1, 2) and w == 2}
                self.summary.metadata[entry.get(1, "")] = entry.get(2, "")

    def graph(self, buf: memoryview, depth: int, top: bool) -> None:
        if depth > _MAX_DEPTH:
            raise _Malformed("subgraphs nested too deeply")
        inputs: list[tuple[str, str]] = []
        for number, wire, value in _fields(buf):
            if wire != 2:
                continue
            if number == _GRAPH_NODE:
                self.node(value, depth, top)
            elif number == _GRAPH_INIT:
                name, dtype, elements = self.tensor(value, keep_scalar=top)
                if top:
                    self.summary.initializers[name] = dtype
                    self.summary.initializer_elements[name] = elements
            elif number == _GRAPH_SPARSE_INIT:
                self.sparse(value)
            elif top and number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                entry = self.value_info(value)
                (inputs if number == _GRAPH_INPUT else self.summary.outputs).append(entry)
        if top:
            self.summary.inputs = [e for e in inputs if e[0] not in self.summary.initializers]

    def node(self, buf: memoryview, depth: int, top: bool) -> None:
        node = OnnxNode("", "", [], [])
        for number, wire, value in _fields(buf):
            if wire != 2:
                continue
            if number == _NODE_INPUT:
                node.inputs.append(_text(value))
            elif number == _NODE_OUTPUT:
                node.outputs.append(_text(value))
            elif number == _NODE_OP_TYPE:
                node.op_type = _text(value)
            elif number == _NODE_DOMAIN:
                node.domain = _text(value)
            elif number == _NODE_ATTR:
                self.attribute(value, depth, node.attributes if top else None)
        if top:
            self.summary.nodes.append(node)

    def attribute(self, buf: memoryview, depth: int, kept: dict[str, int | str] | None = None) -> None:
        name, scalar = "", None
        for number, wire, value in _fields(buf):
            if number == _ATTR_I and wire == 0:
                scalar = _signed(value)
            if wire != 2:
                continue
            if number == _ATTR_NAME:
                name = _text(value)
            elif number == _ATTR_S and len(value) <= _SHORT_TEXT:
                scalar = _text(value)
            elif number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(value)
            elif number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(value, depth + 1, top=False)
            elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                self.sparse(value)
        if kept is not None and name and scalar is not None:
            kept[name] = scalar

    def sparse(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if number in (1, 2) and wire == 2:
                self.tensor(value)

    def tensor(self, buf: memoryview, keep_scalar: bool = False) -> tuple[str, str, int]:
        name, dtype = "", "unknown"
        elements, raw, numbers = 1, None, []
        raw_length = external_length = None
        for number, wire, value in _fields(buf):
            if number == _TENSOR_NAME and wire == 2:
                name = _text(value)
            elif number == _TENSOR_TYPE and wire == 0:
                dtype = ONNX_DTYPES.get(value, f"onnx-type-{value}")
            elif number == _TENSOR_DIMS:
                for dim in _packed_varints(value) if wire == 2 else [value]:
                    elements *= dim
            elif number == _TENSOR_RAW and wire == 2:
                raw_length = len(value)
                raw = value if keep_scalar else None
            elif keep_scalar and number == _TENSOR_FLOATS:
                numbers += list(struct.unpack(f"<{len(value) // 4}f", value)) if wire == 2 else []
            elif keep_scalar and number == _TENSOR_INT32S:
                numbers += [_signed(v) for v in (_packed_varints(value) if wire == 2 else [value])]
            elif number == _TENSOR_EXTERNAL and wire == 2:
                key = val = ""
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        key = _text(v)
                    elif n == 2 and w == 2:
                        val = _text(v)
                if key == "location":
                    self.summary.external_locations.append(val)
                elif key == "length" and val.isdigit():
                    external_length = int(val)
        self._check_size(name, dtype, elements, raw_length if raw_length is not None else external_length)
        if keep_scalar and elements == 1:
            self._keep_scalar(name, dtype, raw, numbers)
        return name, dtype, elements

    def _check_size(self, name: str, dtype: str, elements: int, stored: int | None) -> None:
        """A tensor's declared shape must match the bytes it holds: hostile files declare terabytes
        to make an engine allocate them."""
        itemsize = _ITEMSIZE.get(dtype)
        if itemsize is None:
            return
        declared = elements * itemsize
        if declared > _MAX_TENSOR_BYTES:
            raise _Malformed(f"tensor '{name}' declares {declared / 2**40:.1f} TiB")
        if stored is not None and stored != declared:
            raise _Malformed(f"tensor '{name}' declares {declared} bytes but holds {stored}")

    def _keep_scalar(self, name: str, dtype: str, raw: memoryview | None, numbers: list) -> None:
        # Quantization scales and zero points are one-element tensors; runtimes read them from here.
        if raw is not None and dtype in _SCALAR_FORMATS and len(raw) == struct.calcsize(_SCALAR_FORMATS[dtype]):
            self.summary.scalars[name] = struct.unpack(_SCALAR_FORMATS[dtype], raw)[0]
        elif raw is None and len(numbers) == 1:
            self.summary.scalars[name] = numbers[0]

    def value_info(self, buf: memoryview) -> tuple[str, str]:
        name, dtype = "", "unknown"
        for number, wire, value in _fields(buf):
            if number == _VALUE_NAME and wire == 2:
                name = _text(value)
            elif number == _VALUE_TYPE and wire == 2:
                # TypeProto.tensor_type (1) -> TypeProto.Tensor.elem_type (1)
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        for n2, w2, v2 in _fields(v):
                            if n2 == 1 and w2 == 0:
                                dtype = ONNX_DTYPES.get(v2, f"onnx-type-{v2}")
        return name, dtype


def read_onnx(data: bytes | memoryview, path: str) -> OnnxSummary:
    """Walk an ONNX ModelProto.

    Raises:
        UnsupportedModelError: The bytes are not a well-formed ONNX model.
    """
    walker = _Walker()
    problem = None
    # The error is raised outside the except blocks on purpose: a chained traceback would keep
    # memoryview slices of a memory-mapped file alive and make closing the map fail.
    try:
        walker.model(memoryview(data))
    except _Malformed as exc:
        problem = f"is not a valid ONNX model: {exc}"
    except RecursionError:
        problem = "nests too deeply to be a real ONNX model"
    if problem:
        raise UnsupportedModelError(f"'{path}' {problem}")
    if not walker.summary.has_graph:
        raise UnsupportedModelError(f"'{path}' holds no ONNX graph; is it really an .onnx model?")
    return walker.summary


def io_quantization(summary: OnnxSummary) -> dict[str, tuple[float, int]]:
    """Scale and zero point of integer graph inputs/outputs that feed a DequantizeLinear
    or come from a QuantizeLinear: what a runtime needs to accept and return floats."""
    found: dict[str, tuple[float, int]] = {}
    inputs = {name for name, _ in summary.inputs}
    outputs = {name for name, _ in summary.outputs}
    for node in summary.nodes:
        if node.op_type == "DequantizeLinear" and node.inputs and node.inputs[0] in inputs:
            tensor = node.inputs[0]
        elif node.op_type == "QuantizeLinear" and node.outputs and node.outputs[0] in outputs:
            tensor = node.outputs[0]
        else:
            continue
        scale = summary.scalars.get(node.inputs[1]) if len(node.inputs) > 1 else None
        zero_point = summary.scalars.get(node.inputs[2], 0) if len(node.inputs) > 2 and node.inputs[2] else 0
        if scale is not None:
            found[tensor] = (float(scale), int(zero_point))
    return found
