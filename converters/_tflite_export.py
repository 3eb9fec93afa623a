"""Any source as a float32 .tflite: what the TFLite targets quantize and what validation runs as the float
reference of a Keras/SavedModel source.

The source side of the TFLite route, beside ``_onnx_export`` (a source as a float ONNX): Keras and SavedModel
through TensorFlow's TFLiteConverter on the source's serving function, PyTorch with litert-torch, ONNX with
onnx2tf (in its own environment) after edgekit's rewrites, a float .tflite as it is. Made once per source and
layout within one conversion run (``Source.cache``) and reused by every TFLite target and repair attempt.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.converters._quiet import import_tensorflow, native_stderr_silenced
from edgekit.converters._source import KERAS, PYTORCH, SAVEDMODEL, Source
from edgekit.converters._tensorflow import serving_function
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError, first_line, spelled
from edgekit.runtimes.formats import ONNX, TFLITE

log = logging.getLogger("edgekit")


def tensorflow_converter(source: Source) -> tuple[Any, Any]:
    """TensorFlow and its TFLiteConverter on a Keras/SavedModel source's serving function: inputs named as the
    source's, outputs a dict keyed by its output names, so the .tflite signature shows the same names."""
    tf = import_tensorflow()
    function, _, holder = serving_function(tf, source)
    return tf, tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)


def run_converter(convert: Callable[[], bytes], target_name: str) -> bytes:
    """The flatbuffer ``convert`` makes, with TensorFlow's errors (ConverterError, ValueError, RuntimeError and
    more) as one ``ConversionError``."""
    try:
        with native_stderr_silenced():
            return convert()
    except Exception as exc:  # noqa: BLE001 - TF raises ConverterError, ValueError, RuntimeError and more: translate all
        # Ops without an integer kernel do not fail here (the converter keeps them float); the
        # pipeline's audit catches those. What fails here is unsupported ops or broken graphs.
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"TFLite conversion to {target_name} failed: {first[:300]}") from exc


def export_float(source: Source, output: Path) -> Path:
    """A Keras/SavedModel source as a float32 .tflite: the float reference validation compares every artifact
    against (TensorFlow's own conversion, nothing quantized)."""
    _, converter = tensorflow_converter(source)
    output.write_bytes(run_converter(converter.convert, "tflite-fp32"))
    return output


def channels_last_inputs(source: Source) -> list[str]:
    """The inputs ``channels_last`` turns from NCHW to NHWC: the 4-D ones."""
    return [s.name for s in source.inputs if len(s.shape) == 4]


def channels_last_feeds(feeds: dict[str, Any], names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Feeds in the source's layout (NCHW) for an artifact whose ``names`` inputs are NHWC."""
    return {k: v.transpose(0, 2, 3, 1) if k in names else v for k, v in feeds.items()}


def float_tflite(source: Source, work: Path, channels_last: bool = False) -> tuple[Path, dict[str, Any]]:
    """The source as a float32 .tflite (made once per source and layout, reused by every TFLite target)."""
    key = f"float_tflite_{'nhwc' if channels_last else 'source'}"
    if key in source.cache:
        return source.cache[key]
    path = work / "float32.tflite"
    nhwc = channels_last_inputs(source) if channels_last else []
    if channels_last and (source.kind not in (PYTORCH, ONNX) or not nhwc):
        raise ConversionError(f"{spelled('--channels-last')} applies to the 4-D inputs of PyTorch and ONNX sources; "
                              f"this {source.kind} source has none")
    if source.kind in (KERAS, SAVEDMODEL):  # TensorFlow's own float conversion (the keep_output_float path)
        export_float(source, path)
        info = {"route": f"{source.kind} -> TFLite (TFLiteConverter, float32)"}
    elif source.kind == PYTORCH:
        from edgekit.converters._torch import export_tflite

        info = export_tflite(source.torch_model, path, channels_last=tuple(nhwc))
    elif source.kind == ONNX:
        info = _from_onnx(source, work, path, nhwc)
    elif source.kind == TFLITE:
        from edgekit.runtimes.audit import is_quantized_tflite
        from edgekit.runtimes.formats import open_model_file

        if is_quantized_tflite(open_model_file(source.path)):
            raise UnsupportedModelError(f"'{source.path}' is already quantized (it holds int8/int16 tensors with "
                                        "scales); re-quantizing needs its float .tflite or the original model")
        shutil.copyfile(source.path, path)  # beside the attempt, where the repair's sensitivity ranking finds it
        info = {"route": "float .tflite (the source itself)"}
    else:
        raise UnsupportedModelError(f"TFLite targets cannot read a {source.kind} source")
    if nhwc:
        info["channels_last_inputs"] = nhwc
    source.cache[key] = (path, info)
    return path, info


def _from_onnx(source: Source, work: Path, path: Path, nhwc: list[str]) -> dict[str, Any]:
    """onnx2tf on the source with its input shapes fixed, simplified and rewritten for ai-edge-quantizer;
    outputs given back the layout the source had."""
    from edgekit.converters._onnx2tf import convert_float, restore_output_layouts, simplify
    from edgekit.converters._onnx_export import export_onnx

    export_onnx(source, work / "source.onnx")  # the fixed input shapes written in
    kept = [s.name for s in source.inputs if s.name not in nhwc]
    graph, simplified = simplify(work / "source.onnx", work / "simplified.onnx")
    rewritten = _rewritten_for_quantizer(graph, work / "rewritten.onnx")
    info = convert_float(work / "rewritten.onnx" if rewritten else graph, path, kept, work)
    info["onnx2tf_simplified"] = simplified
    if rewritten:
        info["rewritten_before_onnx2tf"] = rewritten
    restored = restore_output_layouts(work / "source.onnx", path, nhwc)
    if restored:
        info["output_layouts_restored"] = restored
    return info


def _rewritten_for_quantizer(onnx_path: Path, output: Path) -> list[str]:
    """Write ``onnx_path`` with the exact rewrites ai-edge-quantizer needs (``_onnx_rewrite``) to ``output``;
    returns what was rewritten (nothing written when nothing was)."""
    import onnx
    from edgekit.converters._onnx_rewrite import rewrite_for_tflite_quantizer

    model = onnx.load(str(onnx_path))
    try:
        rewritten = rewrite_for_tflite_quantizer(model)
    except Exception as exc:  # noqa: BLE001 - an untrusted graph the rewrites do not expect: convert it unrewritten
        log.warning("ONNX rewrites before onnx2tf skipped (%s: %s)", type(exc).__name__, first_line(exc)[:200])
        return []
    if rewritten:
        onnx.save(model, str(output))
    return rewritten
