"""tflite-sparse: a float .tflite whose mostly-zero weights are stored in TFLite's sparse encoding.

What TensorFlow's converter writes for ``Optimize.EXPERIMENTAL_SPARSITY``, done here on any float .tflite
(so PyTorch and ONNX sources get it too): a conv or fully-connected weight that a sparse encoding makes
smaller is stored as its non-zero values plus a compressed-row index (every dimension dense but the last,
which is CSR — TFLite's ``SparsityParameters``), and a DENSIFY op in front of its consumers restores the
dense tensor when the model loads. The values are the float model's own, so outputs are bit-identical to
tflite-fp32; the file is smaller in proportion to the zeros. Speed is another matter (runtimes/sparsity.py
says, per engine and CPU, who can use stored sparsity; XNNPACK densifies it on x86).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes.errors import ConversionError

#: op type -> the input that is its weight (the layers XNNPACK and TF's sparsity pass consider)
WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
#: encode a weight only when that saves at least this share of its bytes (each DENSIFY costs a load-time op)
MIN_SAVING = 0.25


def sparsify(path: Path) -> dict[str, Any]:
    """Rewrite the float .tflite at ``path`` with its sparse-enough weights encoded; returns what the report
    says. Raises ConversionError when no weight is sparse enough to gain anything (the artifact would be
    tflite-fp32 under a sparse name)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = {i: names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
             for i, code in enumerate(model.operatorCodes)}
    densify = None
    encoded, dense_bytes, sparse_bytes = [], 0, 0
    for subgraph in model.subgraphs:
        weights = {op.inputs[WEIGHTED[codes[op.opcodeIndex]]] for op in subgraph.operators
                   if codes[op.opcodeIndex] in WEIGHTED and len(op.inputs) > WEIGHTED[codes[op.opcodeIndex]]}
        densifies = []
        for index in sorted(w for w in weights if w >= 0):
            tensor = subgraph.tensors[index]
            buffer = model.buffers[tensor.buffer]
            if tensor.type != schema.TensorType.FLOAT32 or tensor.sparsity is not None or buffer.data is None \
                    or len(buffer.data) == 0:
                continue  # an activation, a quantized or fp16 weight, or one already encoded
            dense = np.frombuffer(bytes(buffer.data), np.float32).reshape(tensor.shape)
            values, parameters, size = _csr(schema, dense)
            if size > (1 - MIN_SAVING) * dense.nbytes:
                continue
            if densify is None:
                densify = _opcode_index(schema, model)
            sparse = schema.TensorT()
            sparse.name = (tensor.name or b"weight") + b"_sparse"
            sparse.shape, sparse.type, sparse.sparsity = list(tensor.shape), tensor.type, parameters
            sparse.buffer = len(model.buffers)
            stored = schema.BufferT()
            stored.data = np.frombuffer(values.tobytes(), np.uint8)
            model.buffers.append(stored)
            buffer.data = None  # the dense bytes leave the file; the tensor becomes DENSIFY's output
            tensor.buffer = 0
            subgraph.tensors.append(sparse)
            operator = schema.OperatorT()
            operator.opcodeIndex, operator.inputs, operator.outputs = densify, [len(subgraph.tensors) - 1], [index]
            operator.builtinOptionsType, operator.builtinOptions = schema.BuiltinOptions.DensifyOptions, \
                schema.DensifyOptionsT()
            densifies.append(operator)
            encoded.append({"weight": _text(tensor.name), "zero_fraction": round(1 - values.size / dense.size, 4)})
            dense_bytes, sparse_bytes = dense_bytes + dense.nbytes, sparse_bytes + size
        subgraph.operators = densifies + list(subgraph.operators)  # constant inputs only: first is topological
    if not encoded:
        raise ConversionError(
            f"no conv or fully-connected weight of '{path.name}' is sparse enough for the sparse encoding to save "
            f"{MIN_SAVING:.0%} of it (about a third of its values must be zero): prune the model first "
            "(samples/prune_and_convert.py) or convert to tflite-fp32")
    flatbuffer_utils.write_model(model, str(path))
    return {"sparse_weights": encoded,
            "sparse_encoding": f"{len(encoded)} weight(s) stored sparse (CSR): {dense_bytes / 1e6:.2f} MB of dense "
                               f"weights -> {sparse_bytes / 1e6:.2f} MB; DENSIFY restores them at load, outputs "
                               "bit-identical to tflite-fp32"}


def _csr(schema: Any, dense: np.ndarray) -> tuple[np.ndarray, Any, int]:
    """Every dimension dense but the last, which is compressed rows: (non-zero values, SparsityParametersT,
    encoded bytes). Index vectors take the narrowest type TFLite allows for their largest value."""
    rows = dense.reshape(-1, dense.shape[-1])
    nonzero = rows != 0
    values = rows[nonzero].astype(np.float32)
    segments = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))])
    indices = np.nonzero(nonzero)[1]
    parameters = schema.SparsityParametersT()
    parameters.traversalOrder = list(range(dense.ndim))
    parameters.dimMetadata = []
    for size in dense.shape[:-1]:
        dimension = schema.DimensionMetadataT()
        dimension.format, dimension.denseSize = schema.DimensionType.DENSE, int(size)
        parameters.dimMetadata.append(dimension)
    last = schema.DimensionMetadataT()
    last.format = schema.DimensionType.SPARSE_CSR
    last.arraySegmentsType, last.arraySegments, segment_bytes = _index_vector(schema, segments)
    last.arrayIndicesType, last.arrayIndices, index_bytes = _index_vector(schema, indices)
    parameters.dimMetadata.append(last)
    return values, parameters, values.nbytes + segment_bytes + index_bytes


def _index_vector(schema: Any, array: np.ndarray) -> tuple[int, Any, int]:
    largest = int(array.max()) if array.size else 0
    for limit, kind, vector, dtype in ((255, schema.SparseIndexVector.Uint8Vector, schema.Uint8VectorT, np.uint8),
                                       (65535, schema.SparseIndexVector.Uint16Vector, schema.Uint16VectorT,
                                        np.uint16),
                                       (2**31 - 1, schema.SparseIndexVector.Int32Vector, schema.Int32VectorT,
                                        np.int32)):
        if largest <= limit:
            typed = vector()
            typed.values = array.astype(dtype)
            return kind, typed, typed.values.nbytes
    raise ConversionError(f"a sparse index of {largest} does not fit TFLite's int32 index vectors")


def _opcode_index(schema: Any, model: Any) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DENSIFY:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DENSIFY
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _text(name: Any) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
