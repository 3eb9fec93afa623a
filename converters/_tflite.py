"""TFLite targets: fp32, fp16, dynamic-range, full int8 and 16x8, from Keras or SavedModel.

TensorFlow is imported inside these functions only. The converter sees a
concrete function whose input specs carry the source's input names and whose
outputs are a dict keyed by its output names, so the .tflite signature shows
the same names as the source and the other targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgekit.converters._quiet import import_tensorflow, native_stderr_silenced
from edgekit.converters._source import KERAS, SAVEDMODEL, Source, load_keras, load_savedmodel
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError

IO_TYPES = ("int8", "uint8", "float")


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
    raise UnsupportedModelError(
        f"TFLite targets convert Keras or SavedModel sources; '{source.path}' is {source.kind}. "
        "A .tflite cannot be re-quantized here: convert from the original Keras/SavedModel model"
    )


def convert(
    source: Source,
    target: Any,
    output: Path,
    *,
    calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
    io: str | None = None,
    allow_float_ops: bool = False,
    activations: str = "int8",
) -> dict[str, Any]:
    """Write ``target`` (a TFLite ``Target``) for ``source`` to ``output``; return the options used.

    Args:
        calibration: Returns a fresh iterable of ``{input_name: array}`` samples (int8/int16x8 only).
        io: I/O type of the int8 target: ``int8`` (default), ``uint8`` or ``float``.
        allow_float_ops: Build a mixed-precision model when some ops cannot be quantized
            (they are listed in the audit) instead of failing.
        activations: ``int16`` makes tflite-int8 a 16x8 model (int16 activations, int8 weights, float I/O):
            the remedy when int8 activations collapse.
    """
    if activations not in ("int8", "int16"):
        raise ConversionError(f"activations must be int8 or int16, got '{activations}'")
    if target.variant == "int8" and activations == "int16":
        from edgekit.converters import TARGETS

        used = convert(source, TARGETS["tflite-int16x8"], output, calibration=calibration, io="float",
                       allow_float_ops=allow_float_ops)
        return {**used, "target": target.name, "activations": "int16 (16x8 fallback)"}
    tf = import_tensorflow()
    function, _, holder = serving_function(tf, source)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    variant = target.variant
    used: dict[str, Any] = {"target": target.name}
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "int16x8"):
        if calibration is None:
            raise ConversionError(f"{target.name} needs calibration data: pass --calib PATH (or --calib random)")
        names = [s.name for s in source.inputs]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([feeds[n] for n in names] for feeds in calibration())
        if variant == "int8":
            io = io or "int8"
            if io not in IO_TYPES:
                raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}, got '{io}'")
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io != "float":
                converter.inference_input_type = getattr(tf, io)
                converter.inference_output_type = getattr(tf, io)
        else:
            io = io or "float"
            if io not in ("float", "int16"):
                raise ConversionError(f"--io for tflite-int16x8 must be float or int16, got '{io}'")
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            if io == "int16":
                converter.inference_input_type = tf.int16
                converter.inference_output_type = tf.int16
        if allow_float_ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        used.update(io=io, allow_float_ops=allow_float_ops)
    try:
        with native_stderr_silenced():
            flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - TF raises ConverterError, ValueError, RuntimeError and more: translate all
        # Ops without an integer kernel do not fail here (the converter keeps them float); the
        # pipeline's audit catches those. What fails here is unsupported ops or broken graphs.
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"TFLite conversion to {target.name} failed: {first[:300]}") from exc
    output.write_bytes(flatbuffer)
    return used


def remedies(first: Path, samples: Any):
    """What to try when the default int8 model collapses: int16 activations (TFLite's 16x8 mode)."""
    yield "int16 activations, int8 weights (16x8)", {"activations": "int16"}, None


def export_float(source: Source, output: Path) -> Path:
    """The float reference that validation compares every artifact against."""
    from edgekit.converters import TARGETS

    convert(source, TARGETS["tflite-fp32"], output)
    return output

