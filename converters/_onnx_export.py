"""Any source as a float ONNX model, the form the ONNX and OpenVINO targets (and onnx2tf, for TFLite) consume:
PyTorch through torch.onnx, Keras and SavedModel through tf2onnx, an ONNX source with its input shapes fixed
(and its QDQ pairs removed when asked to dequantize it). TensorFlow, tf2onnx and torch are imported inside."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters._source import DEQUANTIZE, KERAS, PYTORCH, SAVEDMODEL, Source
from edgekit.converters._tensorflow import serving_function
from edgekit.runtimes.errors import ConversionError, MissingDependencyError, UnsupportedModelError, spelled
from edgekit.runtimes.formats import ONNX, TFLITE

DEFAULT_OPSET = 17

log = logging.getLogger("edgekit")


def _imports() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx (needed for ONNX targets)", "onnx") from exc
    return onnx


def export_onnx(source: Source, output: Path, opset: int | None = None) -> dict[str, Any]:
    """Write the source as a float ONNX model with the source's input names and fixed shapes."""
    onnx = _imports()
    if source.kind in (KERAS, SAVEDMODEL):
        return _from_tensorflow(source, output, opset or DEFAULT_OPSET)
    if source.kind == PYTORCH:
        return _from_torch(source, output, opset)
    if source.kind == ONNX:
        model = onnx.load(str(source.path))  # by path: external data resolves beside the model
        _fix_input_dims(model, source)
        info = {"exporter": "none (ONNX source)", "opset": opset_of(model)}
        if source.cache.get(DEQUANTIZE):  # asked for: a QAT/QDQ source made float again
            from edgekit.converters._onnx_rewrite import dequantize_qdq

            try:
                info["dequantized_qdq_nodes"] = dequantize_qdq(model)
            except ValueError as exc:
                raise UnsupportedModelError(f"cannot dequantize '{source.path}': {exc}") from exc
        if opset and opset > info["opset"]:
            model = onnx.version_converter.convert_version(model, opset)
            info.update(opset=opset, opset_upgraded_from=info["opset"])
        save_onnx(onnx, model, output)
        return info
    if source.kind == TFLITE:
        raise UnsupportedModelError(
            f"ONNX targets convert ONNX, PyTorch, Keras or SavedModel sources; '{source.path}' is a .tflite. "
            "Convert from the original model"
        )
    raise UnsupportedModelError(f"cannot make ONNX from a {source.kind} source")


def _from_torch(source: Source, output: Path, opset: int | None) -> dict[str, Any]:
    """Export once per source and opset; every ONNX and OpenVINO target reuses that file."""
    from edgekit.converters._torch import export_onnx as export_torch

    key = f"onnx_export_{opset}"
    if key not in source.cache:
        info = export_torch(source.torch_model, output, opset)
        info["opset"] = opset_of(_imports().load(str(output), load_external_data=False))
        source.cache[key] = (output, info)
    exported, info = source.cache[key]
    if exported != output:
        shutil.copyfile(exported, output)
    return dict(info)


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def lower_opset(path: Path, highest: int, tool: str) -> dict[str, Any]:
    """Bring the float export at ``path`` down to opset ``highest`` (what ``tool`` reads) with ONNX's version
    converter, in place; what was done, for the report."""
    onnx = _imports()
    model = onnx.load(str(path))
    opset = opset_of(model)
    if opset <= highest:
        return {}
    try:
        converted = onnx.version_converter.convert_version(model, highest)
    except Exception as exc:  # noqa: BLE001 - the version converter raises bare errors on ops it cannot map
        option = spelled(f"--opset {highest}", f"opset={highest}")
        raise ConversionError(f"{tool} reads ONNX opset <= {highest} and this export is opset {opset}; ONNX could "
                              f"not convert it down ({str(exc).splitlines()[0][:200]}): export the model at opset "
                              f"{highest} (from PyTorch or Keras sources: {option})") from exc
    save_onnx(onnx, converted, path)
    return {"opset": highest, "opset_lowered_from": opset}


def save_onnx(onnx: Any, model: Any, output: Path) -> None:
    # Protobuf cannot serialise 2 GB; large models keep their weights in one file beside the graph.
    if model.ByteSize() > 1_800_000_000:
        onnx.save(model, str(output), save_as_external_data=True, location=f"{output.name}.data")
    else:
        onnx.save(model, str(output))


def _fix_input_dims(model: Any, source: Source) -> None:
    fixed = {s.name: s.shape for s in source.inputs}
    for value in model.graph.input:
        shape = fixed.get(value.name)
        if shape is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, shape):
            if size is not None:
                dim.dim_value = size


def _from_tensorflow(source: Source, output: Path, opset: int) -> dict[str, Any]:
    from edgekit.converters._quiet import import_tensorflow, native_stderr_silenced

    tf = import_tensorflow()
    try:
        import tf2onnx
    except ImportError as exc:
        raise MissingDependencyError("tf2onnx (needed to export Keras/SavedModel to ONNX)", "convert") from exc
    function, specs, _ = serving_function(tf, source)
    try:
        with native_stderr_silenced():
            tf2onnx.convert.from_function(function, input_signature=specs, opset=opset, output_path=str(output))
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types; translate all at this edge
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"tf2onnx cannot convert '{source.path}' (opset {opset}): {first[:300]}") from exc
    info = {"exporter": f"tf2onnx {tf2onnx.__version__}", "opset": opset}
    onnx = _imports()
    model = onnx.load(str(output))  # mended in memory, written once
    inlined = _inline_captured_constants(tf, function, model)
    rewritten = _replace_erfc(model)
    moved = _channel_ops_behind_layout_transpose(model)
    _stable_node_names(model.graph)
    save_onnx(onnx, model, output)
    if inlined:
        info["inlined_constants"] = inlined
    if rewritten:
        info["rewritten_ops"] = {"Erfc": rewritten}
    if moved:
        info["moved_behind_layout_transpose"] = moved
    _require_onnx_ops(output, source)
    return info


_CHANNEL_OPS = {"Mul", "Add", "Sub", "Div"}
_NHWC_TO_NCHW = [0, 3, 1, 2]


def _channel_ops_behind_layout_transpose(model: Any) -> list[str]:
    """Move the arithmetic a Keras model does on its NHWC input (Rescaling, Normalization) behind the Transpose
    to NCHW that tf2onnx puts before the first convolution; returns the moved nodes' names.

    ONNX Runtime broadcasts a per-channel constant over an NHWC tensor in spans of its channels (3 for an
    image), slowly: a Keras EfficientNet-B0's Normalization cost 1.3 ms of 12 at 224x224 on one thread, in the
    float and the int8 model alike (AVX-512 VNNI Xeon, ORT's profiler). After the Transpose the same constant
    spans a whole plane. The chain moves only where each op reads the previous one's output and a constant
    that varies along the channels at most, and nothing else reads what it makes: the same arithmetic on the
    same values, in another order of elements."""
    from edgekit.converters._onnx_rewrite import _attribute, drop_unread_initializers
    from edgekit.converters._ort_placement import _links
    from onnx import numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    read_by = _links(graph)[1]
    outputs = {o.name for o in graph.output}
    moved: list[str] = []
    for graph_input in graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) != 4 or not dims[3].dim_value:
            continue
        channels, chain, tensor = dims[3].dim_value, [], graph_input.name
        while len(read_by[tensor]) == 1 and tensor not in outputs:
            node = read_by[tensor][0]
            if node.op_type == "Transpose" and chain and list(_attribute(node, "perm", [])) == _NHWC_TO_NCHW:
                _move_behind(graph, chain, node, graph_input.name, channels, initializers, numpy_helper)
                moved += [n.name for n in chain]
                break
            others = [i for i in node.input if i != tensor]
            if node.op_type not in _CHANNEL_OPS or len(node.input) != 2 or len(others) != 1 \
                    or not _per_channel(initializers.get(others[0]), channels):
                break
            chain.append(node)
            tensor = node.output[0]
    if moved:  # the channels-last constants, now unread (ONNX Runtime warns of each)
        drop_unread_initializers(graph)
    return moved


def _per_channel(constant: Any, channels: int) -> bool:
    """A constant that broadcasts over NHWC varying along the channels at most (a scalar, (C,), (1, 1, 1, C))."""
    if constant is None or len(constant.dims) > 4:
        return False
    dims = list(constant.dims)
    return all(d == 1 for d in dims[:-1]) and (not dims or dims[-1] in (1, channels))


def _move_behind(graph: Any, chain: list[Any], transpose: Any, source: str, channels: int,
                 initializers: dict[str, Any], numpy_helper: Any) -> None:
    """``source -> chain -> transpose -> out`` becomes ``source -> transpose -> chain -> out``, each constant
    of the chain reshaped from channels-last to (1, C, 1, 1) under a new name (the old one may be shared)."""
    out, nchw = transpose.output[0], f"{source}__nchw"
    transpose.input[0], transpose.output[0] = source, nchw
    chain[0].input[list(chain[0].input).index(source)] = nchw
    chain[-1].output[0] = out
    for node in chain:
        for index, name in enumerate(node.input):
            constant = initializers.get(name)
            if constant is None or not constant.dims or constant.dims[-1] == 1:
                continue
            if f"{name}__nchw" not in initializers:  # one reshaped copy however many of the chain read it
                values = numpy_helper.to_array(constant).reshape(1, channels, 1, 1)
                initializers[f"{name}__nchw"] = numpy_helper.from_array(values, f"{name}__nchw")
                graph.initializer.append(initializers[f"{name}__nchw"])
            node.input[index] = f"{name}__nchw"
    nodes = list(graph.node)
    nodes.remove(transpose)
    nodes.insert(nodes.index(chain[0]), transpose)
    del graph.node[:]
    graph.node.extend(nodes)


def _stable_node_names(graph: Any) -> None:
    """Number tf2onnx's generated node names (``Transpose__168``) in graph order, base by base.

    tf2onnx takes the suffix from a counter that runs on through every export in a process, so exporting the
    same model twice named its nodes differently, and a node kept float by name (``exclude_nodes`` from a
    sensitivity ranking made in one export, applied to another: ``optimize`` does this) named no node."""
    import re

    seen: dict[str, int] = {}
    for node in graph.node:
        numbered = re.fullmatch(r"(.+)__\d+", node.name)
        if numbered:
            base = numbered.group(1)
            node.name = f"{base}__{seen.get(base, 0)}"
            seen[base] = seen.get(base, 0) + 1


def _replace_erfc(model: Any) -> int:
    """Keras 3's exact GELU is 0.5 * x * erfc(-x / sqrt 2); tf2onnx passes TensorFlow's Erfc through, which is
    no ONNX op, so every transformer with exact GELU failed to load. erfc(x) = 1 - erf(x)."""
    from onnx import helper, numpy_helper

    nodes = [n for n in model.graph.node if n.op_type == "Erfc" and n.domain in ("", "ai.onnx")]
    if not nodes:
        return 0
    one = "edgekit_erfc_one"
    model.graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
    for node in nodes:
        index = list(model.graph.node).index(node)
        erf = helper.make_node("Erf", list(node.input), [f"{node.output[0]}_erf"], name=f"{node.name}_erf")
        sub = helper.make_node("Sub", [one, erf.output[0]], list(node.output), name=node.name)
        model.graph.node.remove(node)
        model.graph.node.insert(index, sub)
        model.graph.node.insert(index, erf)
    return len(nodes)


def _require_onnx_ops(path: Path, source: Source) -> None:
    """An exporter may leave ops that are not ONNX (TensorFlow's own): say which, before any engine trips on them."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        reason = next((line for line in str(exc).splitlines() if "No Op registered" in line), str(exc).splitlines()[0])
        raise ConversionError(f"the ONNX export of '{source.path}' is invalid: {reason.strip()[:300]}; "
                              f"try another {spelled('--opset')} or replace the layer") from exc


def _inline_captured_constants(tf: Any, function: Any, model: Any) -> list[str]:
    """Keras 3 layers that compute tensors once at build time (Normalization's mean and variance) reach the
    traced function as captured eager tensors, not variables; tf2onnx freezes variables only and leaves
    those as extra graph inputs. Turn every such input back into the constant it was."""
    from onnx import numpy_helper

    captured = {internal.name: external for external, internal in function.get_concrete_function().graph.captures
                if isinstance(external, tf.Tensor) and external.dtype != tf.resource and hasattr(external, "numpy")}
    extra = [i for i in model.graph.input if i.name in captured]
    for value in extra:
        model.graph.initializer.append(numpy_helper.from_array(captured[value.name].numpy(), value.name))
        model.graph.input.remove(value)
    return [value.name for value in extra]


class CalibrationReader:
    """Adapts edgekit's calibration samples to ONNX Runtime's CalibrationDataReader protocol (the ONNX
    int8 and QNN targets quantize with ONNX Runtime's quantizer)."""

    def __init__(self, samples: Iterable[dict[str, Any]], limit: int | None) -> None:
        self._iterator, self._left = iter(samples), limit

    def get_next(self) -> dict[str, Any] | None:
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        return next(self._iterator, None)

    def rewind(self) -> None:  # part of the protocol; calibration is a single pass
        pass


@contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    """ONNX Runtime's symbolic shape inference saves a debug copy of the model (sym_shape_infer_temp.onnx and
    a <uuid>.data beside it) in the current directory when it fails: run it where that lands in scratch space
    rather than in the user's folder."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess_for_quantization(model_path: Path, output: Path, notes: list[str]) -> Path:
    """ONNX Runtime's quant_pre_process (symbolic shape inference, then its basic optimizations): every
    tensor gets a shape, which QDQ placement and the QNN compiler need; ONNX shape inference where the symbolic
    one fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_path, output = model_path.resolve(), output.resolve()
    try:
        with _working_directory(output.parent):
            quant_pre_process(str(model_path), str(output))
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference asserts on some real graphs
        notes.append(f"symbolic shape inference failed ({type(exc).__name__}); used ONNX shape inference instead")
        log.warning(notes[-1])
        quant_pre_process(str(model_path), str(output), skip_symbolic_shape=True)
    return output
