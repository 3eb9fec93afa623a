"""The Keras / TensorFlow SavedModel source family: load, describe, and serve as a TF function.

TensorFlow is imported inside functions only. What the other modules read from here: ``describe_keras`` and
``describe_savedmodel`` (a source's inputs, outputs, signature, QAT scales), and ``serving_function`` (the
source as a ``tf.function`` whose inputs carry the source's names and whose outputs are a dict keyed by its
output names: what TensorFlow's TFLite converter, tf2onnx and OpenVINO take). A source is anything with
``path``, ``kind``, ``inputs``, ``output_names``, ``signature`` and a ``cache`` dict (``_source.Source``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import UnsupportedModelError

KERAS, SAVEDMODEL = "keras", "savedmodel"


def sanitize_name(name: str) -> str:
    """A tensor name TensorFlow accepts in a signature (Keras may add ':0' or slashes)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0])
    return cleaned if re.match(r"[A-Za-z]", cleaned) else f"input_{cleaned}"


def _tf():
    from edgekit.converters._quiet import import_tensorflow

    return import_tensorflow()


def load_keras(path: Path, cache: dict[str, Any]) -> Any:
    """The Keras model at ``path`` (loaded once, kept in a source's ``cache``)."""
    if "keras" not in cache:
        tf = _tf()
        try:
            cache["keras"] = tf.keras.models.load_model(path, compile=False)
        except (OSError, ValueError, TypeError) as exc:
            raise UnsupportedModelError(f"Keras cannot load '{path}': {exc}".splitlines()[0]) from exc
    return cache["keras"]


def describe_keras(path: Path, cache: dict[str, Any]) -> dict[str, Any]:
    """A Keras file's inputs and output names (the loaded model is kept in ``cache``)."""
    model = load_keras(path, cache)
    inputs = tuple(
        TensorSpec(sanitize_name(_keras_name(t, t.name)), tuple(None if d is None else int(d) for d in t.shape),
                   np.dtype(getattr(t.dtype, "name", t.dtype)))
        for t in model.inputs
    )
    outputs = tuple(sanitize_name(_keras_name(t, f"output_{i}")) for i, t in enumerate(model.outputs))
    return {"inputs": inputs, "output_names": outputs}


def _keras_name(tensor: Any, default: str) -> str:
    """The name of the layer that made a Keras tensor (Keras 3 names the tensors themselves 'keras_tensor_N')."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or default


def load_savedmodel(path: Path, cache: dict[str, Any]) -> Any:
    """The SavedModel at ``path`` (loaded once, kept in a source's ``cache``)."""
    if "savedmodel" not in cache:
        tf = _tf()
        try:
            cache["savedmodel"] = tf.saved_model.load(str(path))
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(f"TensorFlow cannot load '{path}': {exc}".splitlines()[0]) from exc
    return cache["savedmodel"]


def describe_savedmodel(path: Path, cache: dict[str, Any]) -> dict[str, Any]:
    """A SavedModel's serving signature: its inputs, output names, key and QAT scales (loaded into ``cache``)."""
    loaded = load_savedmodel(path, cache)
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
    return {"inputs": inputs, "output_names": tuple(sorted(function.structured_outputs)), "signature": key,
            "quantization": _fake_quantization(function)}


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


def serving_function(tf: Any, source: Any) -> tuple[Any, list[Any], Any]:
    """A tf.function over the source whose input specs carry the source's input names and whose
    outputs are a dict keyed by its output names, its input specs, and the object that holds its
    variables (what the TFLite converter freezes)."""
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]
    names = [s.name for s in source.inputs]
    if source.kind == KERAS:
        model = load_keras(source.path, source.cache)

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
        loaded = load_savedmodel(source.path, source.cache)
        signature = loaded.signatures[source.signature]

        def serve(*args):
            return signature(**dict(zip(names, args)))

        return tf.function(serve, input_signature=specs), specs, loaded
    raise UnsupportedModelError(f"TensorFlow cannot read a {source.kind} source ('{source.path}')")
