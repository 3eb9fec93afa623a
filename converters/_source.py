"""Source models: recognise them, describe their inputs, fix their shapes.

Keras (.keras/.h5) and TensorFlow SavedModel folders are loaded with
TensorFlow, PyTorch modules and .pt2 files with torch (both imported inside
functions); ONNX and TFLite files are described through the runtime layer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import _torch
from edgekit.converters._torch import PYTORCH
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError
from edgekit.runtimes.formats import ONNX, OPENVINO, open_model_file

KERAS, SAVEDMODEL = "keras", "savedmodel"
#: ``Source.cache`` key: a quantized ONNX source is made float on request (``dequantize_source``)
DEQUANTIZE = "dequantize_qdq"


@dataclass
class Source:
    """A model to convert, with input specs whose non-batch dimensions are fixed."""

    path: Path
    kind: str  # keras | savedmodel | onnx | tflite | pytorch
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    signature: str | None = None  # SavedModel signature key
    # how an ONNX/TFLite source arrives already quantized (``audit.source_quantization``); None: float
    quantization: str | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def torch_model(self) -> dict[str, Any]:
        """A PyTorch source's module, wrapper and example inputs (``_torch.describe``)."""
        return self.cache["torch"]

    @property
    def size_bytes(self) -> int:
        if self.kind == PYTORCH:
            return self.torch_model["size_bytes"]
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        if self.kind == ONNX:  # with the external data files beside it (a large model's weights live there)
            from edgekit.runtimes.formats import check_onnx

            beside = {self.path.parent / name for name in check_onnx(self.path).external_locations}
            return self.path.stat().st_size + sum(p.stat().st_size for p in beside)
        if self.kind == OPENVINO:  # the .xml and its weights
            weights = self.path.with_suffix(".bin")
            return self.path.stat().st_size + (weights.stat().st_size if weights.is_file() else 0)
        return self.path.stat().st_size


def dequantize_source(source: Source) -> Source:
    """The quantized ONNX ``source`` as a float source: its exports drop the Q/DQ pairs and fold the weights'
    DequantizeLinear into float weights (``_onnx_rewrite.dequantize_qdq``), so any target can take it.

    Raises:
        ConversionError: The source is not a quantized ONNX model.
    """
    if source.quantization is None:
        raise ConversionError(f"dequantize: '{source.path.name}' is not quantized; convert it without the option")
    if source.kind != ONNX:
        raise ConversionError(f"dequantize applies to ONNX sources; '{source.path.name}' is {source.quantization}: "
                              "convert the float model instead")
    source.cache[DEQUANTIZE] = True
    return replace(source, quantization=None)


def sanitize_name(name: str) -> str:
    """A tensor name TensorFlow accepts in a signature (Keras may add ':0' or slashes)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0])
    return cleaned if re.match(r"[A-Za-z]", cleaned) else f"input_{cleaned}"


def open_source(path: Any, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
                example_inputs: Any = None, output_names: tuple[str, ...] | None = None,
                name: str | None = None, trust_pickle: bool = False) -> Source:
    """Identify a source model and describe its inputs, applying ``input_shapes`` overrides.

    ``path`` may also be a torch ``nn.Module`` (with ``example_inputs``); ``output_names``, ``name`` (the
    artifacts' stem) and ``trust_pickle`` (load a .pt2 whose pickles hold more than tensors) apply to
    PyTorch sources.

    Raises:
        UnsupportedModelError: Not a model edgekit can convert.
        ConversionError: An input keeps a dynamic non-batch dimension, or an override names no input.
    """
    if _torch.is_module(path) or str(path).lower().endswith(".pt2"):
        return _describe_torch(path, input_shapes or {}, example_inputs, output_names, name, trust_pickle)
    if example_inputs is not None or output_names:
        raise ConversionError("example_inputs and output_names apply to PyTorch sources only")
    path = Path(path)
    if not path.exists():
        raise UnsupportedModelError(f"source model '{path}' does not exist; check the path")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UnsupportedModelError(
                f"'{path}' is a folder without saved_model.pb; pass a SavedModel folder, .keras, .h5, .onnx or .tflite"
            )
        source = _describe_savedmodel(path)
    elif path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        source = _describe_keras(path)
    else:
        model = open_model_file(path)
        source = _describe_runtime_model(path, model.format)
        if model.format == OPENVINO and source.quantization is None:
            raise UnsupportedModelError(
                f"'{path}' is a float OpenVINO IR: an IR is a conversion source only when already quantized "
                "(FakeQuantize layers, e.g. NNCF's), for openvino-int8; convert from the model it was made from")
    return _fix_shapes(source, input_shapes or {})


def _describe_torch(model: Any, overrides: dict[str, tuple[int, ...]], example_inputs: Any,
                    output_names: tuple[str, ...] | None, name: str | None, trust_pickle: bool) -> Source:
    if not _torch.is_module(model) and not Path(model).is_file():
        raise UnsupportedModelError(f"source model '{model}' does not exist; check the path")
    described = _torch.describe(model, example_inputs, tuple(output_names or ()), name, trust_pickle)
    source = Source(described["path"] or Path(described["stem"]), PYTORCH, described["inputs"], described["outputs"],
                    quantization=described["quantization"], cache={"torch": described})
    source = _fix_shapes(source, overrides)
    described["examples"] = _torch.reshape_examples(described["examples"], source.inputs)
    return source


def _fix_shapes(source: Source, overrides: dict[str, tuple[int, ...]]) -> Source:
    names = [s.name for s in source.inputs]
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ConversionError(f"--input-shape names unknown input(s) {unknown}; the model's inputs are {names}")
    fixed = []
    for spec in source.inputs:
        shape = tuple(overrides.get(spec.name, spec.shape))
        if spec.name in overrides and len(shape) != len(spec.shape):
            raise ConversionError(
                f"--input-shape for '{spec.name}' has rank {len(shape)}, the model's input has rank {len(spec.shape)}"
            )
        for axis, size in enumerate(shape):
            if size is None and axis > 0:
                shown = ",".join("?" if d is None else str(d) for d in shape)
                raise ConversionError(
                    f"input '{spec.name}' has a dynamic dimension {axis} (shape [{shown}]); fix it with "
                    f"--input-shape {spec.name}:{','.join('1' if d is None else str(d) for d in shape)}"
                )
        fixed.append(replace(spec, shape=shape))
    return replace(source, inputs=tuple(fixed))


def _tf():
    from edgekit.converters._quiet import import_tensorflow

    return import_tensorflow()


def load_keras(source: Source) -> Any:
    if "keras" not in source.cache:
        tf = _tf()
        try:
            source.cache["keras"] = tf.keras.models.load_model(source.path, compile=False)
        except (OSError, ValueError, TypeError) as exc:
            raise UnsupportedModelError(f"Keras cannot load '{source.path}': {exc}".splitlines()[0]) from exc
    return source.cache["keras"]


def _describe_keras(path: Path) -> Source:
    source = Source(path, KERAS, (), ())
    model = load_keras(source)
    inputs = tuple(
        TensorSpec(sanitize_name(_keras_name(t, t.name)), tuple(None if d is None else int(d) for d in t.shape),
                   np.dtype(getattr(t.dtype, "name", t.dtype)))
        for t in model.inputs
    )
    outputs = tuple(sanitize_name(_keras_name(t, f"output_{i}")) for i, t in enumerate(model.outputs))
    return replace(source, inputs=inputs, output_names=outputs)


def _keras_name(tensor: Any, default: str) -> str:
    """The name of the layer that made a Keras tensor (Keras 3 names the tensors themselves 'keras_tensor_N')."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or default


def load_savedmodel(source: Source) -> Any:
    if "savedmodel" not in source.cache:
        tf = _tf()
        try:
            source.cache["savedmodel"] = tf.saved_model.load(str(source.path))
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(f"TensorFlow cannot load '{source.path}': {exc}".splitlines()[0]) from exc
    return source.cache["savedmodel"]


def _describe_savedmodel(path: Path) -> Source:
    source = Source(path, SAVEDMODEL, (), ())
    loaded = load_savedmodel(source)
    keys = list(loaded.signatures.keys())
    if not keys:
        raise UnsupportedModelError(f"SavedModel '{path}' has no signatures; export it with a serving signature")
    key = "serving_default" if "serving_default" in keys else keys[0]
    function = loaded.signatures[key]
    specs = function.structured_input_signature[1]
    inputs = tuple(
        TensorSpec(name, tuple(None if d is None else int(d) for d in spec.shape), np.dtype(spec.dtype.as_numpy_dtype))
        for name, spec in sorted(specs.items())
    )
    return replace(source, inputs=inputs, output_names=tuple(sorted(function.structured_outputs)), signature=key,
                   quantization=_fake_quantization(function))


def _fake_quantization(function: Any) -> str | None:
    """A SavedModel trained with fake quantization (TensorFlow Model Optimization's QAT) carries FakeQuant ops
    whose learned ranges are its scales; None for a float model."""
    graph = function.graph.as_graph_def()
    ops = Counter(node.op for node in graph.node)
    for library_function in graph.library.function:
        ops.update(node.op for node in library_function.node_def)
    fake = {op: count for op, count in sorted(ops.items()) if op.startswith("FakeQuantWithMinMax")}
    if not fake:
        return None
    counts = ", ".join(f"{count} {op}" for op, count in fake.items())
    return f"SavedModel with FakeQuant ops ({counts}: quantization-aware training)"


def _describe_runtime_model(path: Path, fmt: str) -> Source:
    from edgekit.runtimes import open_runtime
    from edgekit.runtimes.audit import source_quantization

    with open_runtime(path) as runtime:
        inputs, outputs = runtime.inputs, tuple(s.name for s in runtime.outputs)
    return Source(path, fmt, inputs, outputs, quantization=source_quantization(open_model_file(path)))


def serving_function(tf: Any, source: Source) -> tuple[Any, list[Any], Any]:
    """A tf.function over the source whose input specs carry the source's input names and whose
    outputs are a dict keyed by its output names, its input specs, and the object that holds its
    variables (what the TFLite converter freezes)."""
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]
    names = [s.name for s in source.inputs]
    if source.kind == KERAS:
        model = load_keras(source)

        def serve(*args):
            outputs = model(args[0] if len(args) == 1 else list(args), training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return dict(zip(source.output_names, outputs))

        # The converter freezes only variables it can find through the trackable object; Keras 3
        # variables wrap tf.Variables, so hand it those (else READ_VARIABLE ops stay in the model).
        holder = tf.Module()
        holder.variables_to_freeze = [getattr(v, "value", v) for v in model.variables]
        return tf.function(serve, input_signature=specs), specs, holder
    if source.kind == SAVEDMODEL:
        loaded = load_savedmodel(source)
        signature = loaded.signatures[source.signature]

        def serve(*args):
            return signature(**dict(zip(names, args)))

        return tf.function(serve, input_signature=specs), specs, loaded
    raise UnsupportedModelError(f"TensorFlow cannot read a {source.kind} source ('{source.path}')")
