"""TFLite targets: fp32, fp16, dynamic-range, full int8 and 16x8.

Keras and SavedModel sources go through TensorFlow's TFLiteConverter (imported inside these functions
only): it sees a concrete function whose input specs carry the source's input names and whose outputs
are a dict keyed by its output names, so the .tflite signature shows the same names as the source and
the other targets. Every other source becomes a float32 .tflite first — PyTorch with litert-torch, ONNX
with onnx2tf (in its own environment), a float .tflite as it is — and ai-edge-quantizer makes the
quantized variants from it, without TensorFlow.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import (
    INT8_IO_TYPES,
    INT16X8_IO_TYPES,
    check_int8_placement,
    kept_source_scales,
    placement_backs_off,
    work_folder,
)
from edgekit.converters._quiet import native_stderr_silenced
from edgekit.converters._source import KERAS, SAVEDMODEL, Source
from edgekit.converters._tflite_export import (
    channels_last_feeds,
    float_tflite,
    run_converter,
    tensorflow_converter,
)
from edgekit.runtimes.errors import ConversionError, calibration_advice, spelled
from edgekit.runtimes.litert_interpreter import implementation_version, import_interpreter

log = logging.getLogger("edgekit")


def convert(
    source: Source,
    target: Any,
    output: Path,
    *,
    calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
    io: str | None = None,
    allow_float_ops: bool | None = None,
    activations: str = "int8",
    channels_last: bool = False,
    keep_output_float: bool = False,
    exclude_nodes: tuple[str, ...] = (),
    int8_placement: str = "engine",
    group_size: int | None = None,
    fp16_arithmetic: bool = True,
) -> dict[str, Any]:
    """Write ``target`` (a TFLite ``Target``) for ``source`` to ``output``; return the options used.

    Args:
        calibration: Returns a fresh iterable of ``{input_name: array}`` samples (int8/int16x8 only).
        io: I/O type of the int8 target: ``int8`` (default), ``uint8`` or ``float``.
        allow_float_ops: Ops that cannot be quantized stay in float (the TFLite converter's own default,
            "integer with float fallback"; the audit lists them and the report warns); ``False`` is the strict
            full-integer mode (``--integer-only``), where such a model fails. Default: allowed.
        activations: ``int16`` makes tflite-int8 a 16x8 model (int16 activations, int8 weights, float I/O):
            the remedy when int8 activations collapse.
        channels_last: A PyTorch or ONNX source's 4-D (NCHW) inputs become NHWC in the .tflite (TFLite's own
            layout); by default every form keeps the source's layout. Recorded in the report and its recipe.
        keep_output_float: Leave the ops computing the outputs in float (a detector head that one scale cannot
            cover); done by ai-edge-quantizer on the float .tflite, for Keras/SavedModel sources too.
        exclude_nodes: Ops to leave in float, named by their output tensors (the sensitivity ranking's
            ``node``); as ``keep_output_float``, through ai-edge-quantizer.
        fp16_arithmetic: tflite-fp16 only: mark the model so XNNPACK may compute in fp16 where the CPU can
            (``_mark_fp16_arithmetic``); False keeps fp32 arithmetic with half-size weights.
        group_size: tflite-w4 only: 32 or 64 weights per scale (ai-edge-quantizer's blockwise recipes);
            default one scale per output channel. (tflite-dynamic is the 8-bit-weight form.)
        int8_placement: ``engine`` (tflite-int8's default) keeps in float the op types LiteRT's XNNPACK
            delegate runs no int8 kernel for, when they sit mid-graph (each one splits the delegate and runs a
            slow reference kernel: MobileNetV3's HARD_SWISH made int8 3x slower than float); ``everywhere``
            quantizes every op the quantizer can, as the TFLite converter does.
    """
    if activations not in ("int8", "int16"):
        raise ConversionError(f"activations must be int8 or int16, got '{activations}'")
    allow_float_ops = True if allow_float_ops is None else allow_float_ops
    check_int8_placement(int8_placement)
    if group_size is not None and target.variant != "w4":
        raise ConversionError(f"group_size applies to tflite-w4, not {target.name}")
    if target.keeps_scales_of(source):
        if source.kind == "tflite":  # an integer .tflite: LiteRT runs it as it is
            shutil.copyfile(source.path, output)
            return {"target": target.name, **kept_source_scales(source)}
        # a SavedModel with FakeQuant ops (QAT): TensorFlow's converter quantizes with their learned ranges
        return {**_with_tensorflow(source, target, output, None, io, allow_float_ops), **kept_source_scales(source)}
    if target.variant == "sparse":  # the float model with its mostly-zero weights stored sparse-encoded
        from edgekit.converters import TARGETS
        from edgekit.converters._tflite_sparse import sparsify

        used = convert(source, TARGETS["tflite-fp32"], output, channels_last=channels_last)
        return {**used, "target": target.name, **sparsify(output)}
    if target.variant == "int8" and activations == "int8" and int8_placement == "engine":
        return _placed_for_xnnpack(source, target, output, calibration, io, allow_float_ops, channels_last,
                                   keep_output_float, exclude_nodes)
    if target.variant == "int8" and activations == "int16":
        from edgekit.converters import TARGETS

        used = convert(source, TARGETS["tflite-int16x8"], output, calibration=calibration, io="float",
                       allow_float_ops=allow_float_ops, channels_last=channels_last,
                       keep_output_float=keep_output_float, exclude_nodes=exclude_nodes,
                       int8_placement=int8_placement)
        return {**used, "target": target.name, "activations": "int16 (16x8 fallback)"}
    if _through_float_tflite(source, target, keep_output_float, exclude_nodes):
        used = _from_float_tflite(source, target, output, calibration, io, channels_last, keep_output_float,
                                  exclude_nodes, group_size=group_size)
    elif channels_last:
        raise ConversionError(f"{spelled('--channels-last')} applies to PyTorch and ONNX sources; a {source.kind} "
                              "model is channels-last already")
    else:
        used = _with_tensorflow(source, target, output, calibration, io, allow_float_ops)
    if target.variant == "fp16":
        used["fp16_arithmetic"] = _mark_fp16_arithmetic(output, fp16_arithmetic)
    return used


#: the metadata XNNPACK reads before it computes in fp16 (TFLite's reduced_precision_support.h): fp16
#: inference with fp16 accumulation. Without it XNNPACK runs a tflite-fp16 model in fp32 on every CPU.
REDUCED_PRECISION_KEY, FP16_ARITHMETIC = b"reduced_precision_support", b"fp16accfp16"


def _mark_fp16_arithmetic(path: Path, allowed: bool) -> str:
    """Write (or remove) the metadata that lets XNNPACK compute a tflite-fp16 model in fp16 on CPUs with fp16
    arithmetic; returns what the report says. TensorFlow's converter writes "fp16accfp32" for fp16 weights,
    which XNNPACK does not take as permission; ai-edge-quantizer writes none."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    model.metadata = [m for m in (model.metadata or []) if m.name != REDUCED_PRECISION_KEY]
    if allowed:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(FP16_ARITHMETIC, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = REDUCED_PRECISION_KEY, len(model.buffers) - 1
        model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))
    if not allowed:
        return "not allowed (--no-fp16-arithmetic): fp16 weights, fp32 arithmetic on every CPU"
    return ("allowed (reduced_precision_support: fp16accfp16): XNNPACK computes in fp16 on CPUs with fp16 "
            "arithmetic (Armv8.2-A and later, e.g. a Raspberry Pi 5's Cortex-A76) and in fp32 elsewhere (a Pi 4's "
            "Cortex-A72, x86 without AVX512-FP16), where only the weights are half size")


def _through_float_tflite(source: Source, target: Any, keep_output_float: bool, exclude_nodes: tuple[str, ...]) -> bool:
    """Whether ``target`` is made from a float .tflite by ai-edge-quantizer rather than by TensorFlow's
    converter: every non-TensorFlow source, and a quantized target with ops picked to stay float. tflite-fp32
    is the float .tflite itself (TensorFlow's conversion, made once per run: the float reference is it too)."""
    partly_float = (keep_output_float or exclude_nodes) and target.variant in ("int8", "int16x8")
    return source.kind not in (KERAS, SAVEDMODEL) or bool(partly_float) or target.variant in ("w4", "fp32")


def _with_tensorflow(source: Source, target: Any, output: Path,
                     calibration: Callable[[], Iterable[dict[str, Any]]] | None, io: str | None,
                     allow_float_ops: bool, float_ops: tuple[str, ...] = ()) -> dict[str, Any]:
    """TensorFlow's TFLiteConverter on a Keras/SavedModel source; ``float_ops`` (int8 only) are op types left
    in float through TensorFlow's own selective quantization (its QuantizationDebugger's denylist), so the
    rest keeps the converter's calibration and its quality."""
    tf, converter = tensorflow_converter(source)
    variant = target.variant
    used: dict[str, Any] = {"target": target.name}
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not target.keeps_scales_of(source):  # (a QAT model's FakeQuant ops carry the ranges instead)
            if calibration is None:
                raise ConversionError(f"{target.name} needs calibration data: {calibration_advice()}")
            names = [s.name for s in source.inputs]
            converter.representative_dataset = lambda: ([feeds[n] for n in names] for feeds in calibration())
        if variant == "int8":
            io = io or "int8"
            if io not in INT8_IO_TYPES:
                raise ConversionError(f"{spelled('--io')} must be one of {', '.join(INT8_IO_TYPES)}, got '{io}'")
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io != "float":
                converter.inference_input_type = getattr(tf, io)
                converter.inference_output_type = getattr(tf, io)
        else:
            io = io or "float"
            if io not in INT16X8_IO_TYPES:
                raise ConversionError(f"{spelled('--io')} for tflite-int16x8 must be float or int16, got '{io}'")
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            if io == "int16":
                converter.inference_input_type = tf.int16
                converter.inference_output_type = tf.int16
        if allow_float_ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        if not target.keeps_scales_of(source):  # (the int8-only op set demands a representative dataset)
            converter.target_spec.supported_ops = ops
        used.update(io=io, allow_float_ops=allow_float_ops)
        if float_ops:
            used["quantizer"] = "TFLiteConverter, selective (QuantizationDebugger's denylisted_ops)"
    convert_now = (lambda: _selectively_quantized(tf, converter, float_ops, io)) if float_ops else converter.convert
    output.write_bytes(run_converter(convert_now, target.name))
    return used


def _selectively_quantized(tf: Any, converter: Any, float_ops: tuple[str, ...], io: str) -> bytes:
    """The int8 model with ``float_ops`` in float; its I/O int8 (``fully_quantize``) or float."""
    converter.inference_input_type = converter.inference_output_type = tf.float32  # the debugger sets them
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops),
                                                            fully_quantize=io == "int8")
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=converter.representative_dataset,
                                                         debug_options=options)
    return debugger.get_nondebug_quantized_model()


def _placed_for_xnnpack(source: Source, target: Any, output: Path,
                        calibration: Callable[[], Iterable[dict[str, Any]]] | None, io: str | None,
                        allow_float_ops: bool, channels_last: bool, keep_output_float: bool,
                        exclude_nodes: tuple[str, ...]) -> dict[str, Any]:
    """tflite-int8 with ``int8_placement="engine"``: quantize everything, see which int8 op types XNNPACK
    leaves mid-graph, and if any, quantize again with those op types in float (TensorFlow's selective
    quantization for Keras/SavedModel, so its calibration is kept; ai-edge-quantizer for the rest).

    What XNNPACK takes is a fact of the LiteRT build, not of the CPU, so it is measured by loading the
    model, not assumed from a list; the answer is kept per source for the repair's later attempts."""
    from edgekit.converters._aeq import DATA_MOVEMENT

    options = {"calibration": calibration, "io": io, "allow_float_ops": allow_float_ops,
               "channels_last": channels_last, "keep_output_float": keep_output_float, "exclude_nodes": exclude_nodes}
    if (io or "int8") == "uint8":  # TensorFlow's selective quantizer writes int8 or float I/O only
        used = convert(source, target, output, int8_placement="everywhere", **options)
        return {**used, "int8_placement": "everywhere (uint8 I/O: no selective quantization for it)"}

    def with_float(ops: dict[str, int]) -> dict[str, Any]:
        if not ops:
            return convert(source, target, output, int8_placement="everywhere", **options)
        if _through_float_tflite(source, target, keep_output_float, exclude_nodes):
            return _from_float_tflite(source, target, output, calibration, io, channels_last, keep_output_float,
                                      exclude_nodes, keep_float_ops=tuple(ops))
        return _with_tensorflow(source, target, output, calibration, io, allow_float_ops, tuple(ops))

    placed = source.cache.get("xnnpack_float_ops")
    dropped = source.cache.get("xnnpack_placement_dropped")
    if placed is None:
        used = with_float({})
        # data movement costs a copy wherever it runs (a reshape to a computed shape stays outside XNNPACK
        # in float too): only compute ops are worth a float island
        candidates = {op: n for op, n in ops_outside_xnnpack(output).items() if op not in DATA_MOVEMENT}
        placed = candidates
        if candidates:
            used = with_float(candidates)
            still_outside = ops_outside_xnnpack(output, int8_only=False)
            placed = {op: n for op, n in candidates.items() if op not in still_outside}
            if placed != candidates:  # XNNPACK refused them for another reason than int8: no use in float
                used = with_float(placed)
            dropped = placement_backs_off(output, f"{', '.join(placed)} for XNNPACK", "outside XNNPACK they run "
                                          "on slower reference kernels") if placed else None
            if dropped:
                placed = {}
                used = with_float({})
        source.cache["xnnpack_float_ops"], source.cache["xnnpack_placement_dropped"] = placed, dropped
    else:
        used = with_float(placed)
    used["int8_placement"] = dropped or "engine"
    if placed:
        name, _ = import_interpreter()
        engine = f"{name} {implementation_version(name)}"
        used["kept_float_for_engine"] = {
            op: f"{engine}'s XNNPACK delegate runs no int8 {op}: {count} op(s) would run outside it, mid-graph"
            for op, count in placed.items()}
    return used


def ops_outside_xnnpack(path: Path, int8_only: bool = True) -> dict[str, int]:
    """The (int8) op types LiteRT's default XNNPACK delegate did not take although delegated ops follow them
    (so each one splits the delegate), with their counts."""
    _, module = import_interpreter()
    with native_stderr_silenced():
        interpreter = module.Interpreter(str(path), num_threads=1)  # XNNPACK is applied here, by default
        interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only view of which nodes the delegate replaced
    delegated = [op for op in ops if op["op_name"] == "DELEGATE"]
    made_inside = {t for op in delegated for t in op["outputs"]}
    read_inside = {t for op in delegated for t in op["inputs"]}
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    outside: dict[str, int] = {}
    for op in ops:
        if op["op_name"] == "DELEGATE" or any(t in made_inside for t in op["outputs"]):
            continue  # the delegate itself, or an op it replaced
        feeds_delegate = any(t in read_inside for t in op["outputs"])
        int8 = any(tensors[t]["dtype"] == np.int8 for t in op["outputs"] if t in tensors)
        if feeds_delegate and (int8 or not int8_only) and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
            outside[op["op_name"]] = outside.get(op["op_name"], 0) + 1
    return outside


def _from_float_tflite(source: Source, target: Any, output: Path,
                       calibration: Callable[[], Iterable[dict[str, Any]]] | None, io: str | None,
                       channels_last: bool, keep_output_float: bool = False,
                       exclude_nodes: tuple[str, ...] = (), keep_float_ops: tuple[str, ...] = (),
                       group_size: int | None = None) -> dict[str, Any]:
    from edgekit.converters._aeq import quantize

    work = work_folder(output)
    float_path, info = float_tflite(source, work, channels_last)
    # made by an earlier attempt: link it here, where this attempt's ranking looks (once: placement quantizes twice)
    if float_path.parent != work and not (work / float_path.name).exists():
        try:
            os.link(float_path, work / float_path.name)
        except OSError:  # a file system without hard links (FAT, some network shares)
            shutil.copyfile(float_path, work / float_path.name)
    nhwc = info.get("channels_last_inputs", [])
    if nhwc and calibration is not None:  # the samples arrive in the source's layout
        calibration = _transposed(calibration, nhwc)
    used: dict[str, Any] = {"target": target.name, **info}
    if target.variant == "fp32":
        if io not in (None, "float"):
            raise ConversionError(f"{spelled('--io')} {io} applies to quantized targets, not {target.name}")
        shutil.copyfile(float_path, output)
        return used
    used.update(quantize(float_path, output, target.variant, calibration=calibration, io=io,
                         keep_output_float=keep_output_float, exclude_nodes=exclude_nodes,
                         keep_float_ops=keep_float_ops, group_size=group_size))
    used["route"] += f" -> {used['recipe']} (ai-edge-quantizer)"
    used["speed_reference"] = str(work / float_path.name)
    return used


def _transposed(samples: Callable[[], Iterable[dict[str, Any]]], names: list[str]):
    def feeds():
        for sample in samples():
            yield channels_last_feeds(sample, names)

    return feeds


#: the options of the attempt ``rank`` ranks: the output head in float (what the remedies build on)
RANK_OPTIONS: dict[str, Any] = {"keep_output_float": True, "allow_float_ops": True}


def rank(quantized: Path, samples: Any) -> list[dict[str, Any]] | None:
    """Ops by the quantization noise they add, worst first, from a staged int8 model and the float .tflite
    ai-edge-quantizer quantized (its work folder's float32.tflite); None when that route was not taken."""
    from itertools import islice

    from edgekit.converters._sensitivity import SENSITIVITY_SAMPLES, rank_nodes

    float_path = next(quantized.parent.glob(".*-work/float32.tflite"), None)
    if float_path is None or not quantized.is_file():
        return None
    try:
        return rank_nodes(float_path, quantized, islice(samples, SENSITIVITY_SAMPLES), quantized.parent)
    except (ValueError, KeyError, RuntimeError) as exc:  # feeds the model refuses: rank nothing, go on
        log.warning("TFLite sensitivity ranking failed (%s); skipping the sensitive-ops remedies", exc)
        return None


def remedies(first: Path, samples: Any):
    """What to try, cheapest first, when the default int8 model collapses: the output head in float (int8
    elsewhere, so int8 speed), then the most sensitive ops in float too, ranked per op on the output-head
    attempt against its float model, then int16 activations (TFLite's 16x8 mode: XNNPACK has no fast 16x8
    kernels, so expect it to run many times slower)."""
    head = RANK_OPTIONS
    yield "outputs in float", head, None
    folder = first.parent.with_name(first.parent.name.rsplit("-", 1)[0] + "-1")  # that attempt's own folder
    from edgekit.converters._sensitivity import keep_most_sensitive

    yield from keep_most_sensitive(rank(folder / first.name, samples()), head, "exclude_nodes", "op(s)")
    yield "int16 activations, int8 weights (16x8)", {"activations": "int16"}, None
