"""OpenVINO IR targets: fp32, fp16 (compressed weights) and int8 (NNCF, optionally accuracy-controlled).

Every source becomes an OpenVINO model first (``openvino.convert_model``; Keras
goes through a SavedModel of edgekit's serving function so input and output
names match the other forms), and NNCF quantizes that: NNCF 3 has no
TensorFlow backend. openvino and nncf are imported inside these functions only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import MODEL_TYPES, OVERFLOW_FIXES, PRESETS, WEIGHT_ONLY, kept_source_scales, work_folder
from edgekit.converters._source import DEQUANTIZE, KERAS, PYTORCH, SAVEDMODEL, Source
from edgekit.converters._tensorflow import serving_function
from edgekit.runtimes._openvino import engine_message
from edgekit.runtimes.audit import QCDQ
from edgekit.runtimes.cpu import INT8_INSTRUCTIONS, X86_WITHOUT_VNNI, describe_cpu, is_arm
from edgekit.runtimes.errors import (
    ConversionError,
    EdgekitError,
    MissingDependencyError,
    calibration_advice,
    spelled,
)
from edgekit.runtimes.formats import ONNX, OPENVINO, TFLITE
from edgekit.runtimes.telemetry import keep_engine_telemetry_off

log = logging.getLogger("edgekit")

_COMPUTE_TYPES = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}


def _openvino() -> Any:
    keep_engine_telemetry_off()
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError("openvino (needed for OpenVINO targets)", "openvino") from exc
    return openvino


def read_source(source: Source, work: Path) -> Any:
    """The source as an ``openvino.Model`` with the source's names and fixed shapes."""
    ov = _openvino()
    is_onnx = source.kind in (ONNX, PYTORCH)
    if source.kind in (KERAS, SAVEDMODEL):
        path = _savedmodel(source, work / "savedmodel")
    elif source.kind in (ONNX, TFLITE, OPENVINO) and not source.cache.get(DEQUANTIZE):
        path = source.path  # (an IR source is a quantized one: read as it is, its FakeQuantize layers kept)
    elif source.kind == ONNX:  # made float on request: through the dequantized export
        from edgekit.converters._onnx_export import export_onnx

        path = work / "source.onnx"
        export_onnx(source, path)
    elif source.kind == PYTORCH:  # through its ONNX export: the same graph and names as the ONNX targets
        from edgekit.converters._onnx_export import export_onnx

        path = work / "source.onnx"
        source.cache["openvino_route"] = export_onnx(source, path)["route"] + " -> openvino.convert_model"
    else:
        raise ConversionError(f"OpenVINO targets cannot read a {source.kind} source")
    # ONNX graphs whose ranks are only known once the inputs are fixed (recurrent models, If bodies)
    # convert only when told the shapes up front.
    shapes = {s.name: ov.PartialShape([-1 if d is None else d for d in s.shape]) for s in source.inputs}
    try:
        if source.kind == OPENVINO:
            model = ov.Core().read_model(str(path))
        else:
            model = ov.convert_model(str(path), input=shapes) if is_onnx else ov.convert_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpConversionFailure and friends: translate all at this edge
        raise ConversionError(f"openvino.convert_model cannot read '{source.path}': {conversion_failure(exc)}") \
            from exc
    _match_names(model.inputs, [s.name for s in source.inputs])
    _match_names(model.outputs, list(source.output_names))
    model.reshape({port: ov.PartialShape([-1 if d is None else d for d in spec.shape])
                   for port, spec in zip(model.inputs, _by_name(model.inputs, source))})
    if not is_onnx:
        _name_layers_by_position(model)
    return model


def conversion_failure(exc: BaseException) -> str:
    """The reason in an OpenVINO front end's report: which ops failed, else its last meaningful line."""
    text = str(exc)
    summary = re.search(r"Conversion is failed for: ([^\n]+)", text)
    if summary:
        return f"ops that OpenVINO cannot convert: {summary.group(1).strip()}; try another source form or fix " \
               f"the input shapes with {spelled('--input-shape', 'input_shapes')}"
    return engine_message(exc)[:300]


def _name_layers_by_position(model: Any) -> None:
    """The TensorFlow and TFLite readers name many layers from a process-wide counter (``Convolution_66``, an
    Add called ``Transpose_503``; read again: ``Convolution_3756``): rename those by type and position in the
    graph, so ``--ignored-names`` and the sensitivity ranking name the same layer in every conversion."""
    for position, op in enumerate(model.get_ordered_ops()):
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{position}")


def _by_name(ports: Any, source: Source) -> list[Any]:
    specs = {s.name: s for s in source.inputs}
    return [specs[port.get_any_name()] for port in ports]


def _match_names(ports: Any, names: list[str]) -> None:
    """Give ports the source's names: OpenVINO's TFLite reader names tensors 'serving_default_x:0'."""
    for index, port in enumerate(ports):
        current = port.get_names()
        if any(name in current for name in names):
            continue
        match = next((n for n in names if any(n in c for c in current)), None)
        if match is None and len(ports) == len(names):
            match = names[index]
        if match is not None:
            port.get_tensor().set_names({match})


def _savedmodel(source: Source, folder: Path) -> Path:
    from edgekit.converters._quiet import import_tensorflow, native_stderr_silenced

    tf = import_tensorflow()
    function, _, holder = serving_function(tf, source)
    holder.serve = function
    with native_stderr_silenced():
        tf.saved_model.save(holder, str(folder), signatures={"serving_default": function.get_concrete_function()})
    return folder


class _Samples:
    """A re-iterable view of a calibration callable: NNCF passes over the data more than once."""

    def __init__(self, make: Callable[[], Iterable[Any]], count: int | None) -> None:
        self._make, self._count = make, count

    def __iter__(self) -> Iterator[Any]:
        return iter(self._make())

    def __len__(self) -> int:
        if self._count is None:
            raise TypeError("unknown length")
        return self._count


@dataclass(frozen=True)
class NncfOptions:
    """What NNCF is asked for, as the report records it."""

    preset: str = "performance"
    model_type: str | None = None  # "transformer" or None (NNCF's default); "auto" is resolved before
    ignored_names: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()
    ignored_patterns: tuple[str, ...] = ()
    fast_bias_correction: bool = True
    overflow_fix: str | None = None  # None: NNCF's default (the first layer's weights in 7 bits)


def convert(
    source: Source,
    target: Any,
    output: Path,
    *,
    calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
    calibration_count: int | None = None,
    validation: Iterable[Any] | None = None,
    max_drop: float | None = None,
    preset: str = "performance",
    model_type: str | None = "auto",
    ignored_names: tuple[str, ...] = (),
    ignored_types: tuple[str, ...] = (),
    ignored_patterns: tuple[str, ...] = (),
    fast_bias_correction: bool = True,
    overflow_fix: str | None = None,
    for_cpu: str = "auto",
    keep_output_float: bool = False,
    group_size: int | None = None,
    symmetric_weights: bool | None = None,
) -> dict[str, Any]:
    """Write an OpenVINO IR ``target`` (.xml + .bin) for ``source``; return the options used and notes.

    openvino-w4 / openvino-w8: ``nncf.compress_weights`` (weights of MatMul/Convolution/embedding layers in
    int4 / int8, activations in float). ``symmetric_weights`` default: INT4_SYM (OpenVINO's recommended
    int4 mode for speed) and INT8_ASYM (NNCF's own default); ``group_size`` (int4 only) NNCF's default, 128.

    ``overflow_fix`` (NNCF's: ``enable``, ``first_layer_only``, ``disable``) defaults from the CPU the model is
    for: x86 without VNNI gets every layer's weights in 7 bits (``enable``), since its int8 dot products
    saturate a 16-bit intermediate (OpenVINO's "saturation issue"); elsewhere NNCF's own default."""
    ov = _openvino()
    work = work_folder(output)
    model = read_source(source, work)
    reader = "openvino.Core.read_model (IR)" if source.kind == OPENVINO else f"openvino.convert_model ({source.kind})"
    used: dict[str, Any] = {"target": target.name, "reader": reader}
    if "openvino_route" in source.cache:
        used["route"] = source.cache["openvino_route"]
    notes: list[str] = []
    if target.variant in ("fp32", "fp16"):
        ov.save_model(model, str(output), compress_to_fp16=target.variant == "fp16")
        used["weights"] = "float16" if target.variant == "fp16" else "float32"
    elif target.variant in WEIGHT_ONLY:
        ov.save_model(model, str(work / FLOAT_IR), compress_to_fp16=False)
        used["speed_reference"] = str(work / FLOAT_IR)
        used.update(_compress_weights(model, output, int(target.variant[1:]), group_size, symmetric_weights))
    elif target.keeps_scales_of(source):  # the source's Q/DQ pairs became FakeQuantize layers as they are
        if QCDQ in (source.quantization or ""):
            raise ConversionError(
                f"openvino-int8 cannot keep the scales of '{source.path.name}': OpenVINO reads its {QCDQ} as float "
                "layers (measured: a QCDQ Conv ran float, one output step off the source); use onnx-int8, which "
                "keeps them")
        ov.save_model(model, str(output), compress_to_fp16=False)
        used.update(kept_source_scales(source))
    elif target.variant == "int8":
        if keep_output_float:  # the layers computing the outputs (a detector's concat, a final softmax) stay float
            ignored_names = tuple(ignored_names) + tuple(_output_producers(model))
            used["keep_output_float"] = True
        # what NNCF was given, beside the attempt: the sensitivity ranking compares the int8 IR with it
        ov.save_model(model, str(work / FLOAT_IR), compress_to_fp16=False)
        used["speed_reference"] = str(work / FLOAT_IR)
        cpu = describe_cpu(for_cpu)
        model_type = _model_type(model, model_type, notes)
        if model_type == "transformer" and preset == "performance":
            # NNCF picks mixed for a transformer when no preset is given: the override must be visible
            notes.append(f"NNCF preset 'performance' (symmetric activations), where NNCF's own default for a "
                         f"transformer is 'mixed' (asymmetric): on a trained BERT the mixed form ran 0.84-0.88x as "
                         f"fast at the same accuracy (AMX Xeon, 2026-12-07); {spelled('--preset')} mixed for NNCF's")
        options = NncfOptions(preset, model_type, tuple(ignored_names), tuple(ignored_types), tuple(ignored_patterns),
                              fast_bias_correction, overflow_fix or overflow_fix_for(cpu))
        quantized, details = _quantize(model, calibration, calibration_count, validation, max_drop, options)
        ov.save_model(quantized, str(output), compress_to_fp16=False)
        used.update(details)
        if is_arm(cpu):
            notes.append("OpenVINO's ARM CPU plugin runs int8 models in fp16: expect no speed-up over an fp16 IR "
                         "on this device")
        used["for_cpu"], used["int8_instructions"] = cpu, INT8_INSTRUCTIONS[cpu]
    else:
        raise ConversionError(f"unknown OpenVINO target {target.name}")
    used["notes"] = notes
    return used


def _nncf() -> Any:
    keep_engine_telemetry_off()
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError("nncf (needed for openvino-int8 and weight-only targets)", "convert") from exc
    return nncf


def _compress_weights(model: Any, output: Path, bits: int, group_size: int | None,
                      symmetric: bool | None) -> dict[str, Any]:
    nncf = _nncf()
    if bits == 8 and group_size:
        raise ConversionError(f"group_size applies to openvino-w4 (int8 weights are per channel), got {group_size}")
    symmetric = bits == 4 if symmetric is None else symmetric
    mode = getattr(nncf.CompressWeightsMode, f"INT{bits}_{'SYM' if symmetric else 'ASYM'}")
    options: dict[str, Any] = {"mode": mode}
    if bits == 4:
        options["group_size"] = group_size or 128
    try:
        compressed = nncf.compress_weights(model, **options)
    except Exception as exc:  # noqa: BLE001 - nncf raises many types: translate all at this edge
        raise ConversionError(f"nncf.compress_weights ({mode.value}) failed: {engine_message(exc)[:300]}") from exc
    _openvino().save_model(compressed, str(output), compress_to_fp16=False)
    return {"weights": f"{mode.value}" + (f", groups of {options['group_size']}" if bits == 4 else ", per channel")
                       + " (nncf.compress_weights; NNCF keeps the embedding and last layer in int8 for int4)",
            "bits": bits, "group_size": options.get("group_size"), "symmetric": symmetric,
            "compute": "float activations; the CPU plugin decompresses weights inside its matmul kernels"}


#: what sits between an attention MatMul's operand and where it came from without making it a weight
_PASS_THROUGH = {"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Multiply", "Divide", "FakeQuantize"}


def _model_type(model: Any, asked: str | None, notes: list[str]) -> str | None:
    """NNCF's model type: ``auto`` (the default) picks "transformer" for a graph with attention — a MatMul of
    two activations feeding a Softmax's graph — as NNCF's documentation asks for transformer models (its default
    scheme failed on a BERT export with a KeyError); ``none`` is NNCF's default."""
    asked = "none" if asked is None else asked
    if asked not in MODEL_TYPES:
        raise ConversionError(f"{spelled('--model-type')} must be one of {', '.join(MODEL_TYPES)}, got '{asked}'")
    if asked != "auto":
        return None if asked == "none" else asked
    attention = attention_matmuls(model)
    if not attention:
        return None
    notes.append(f"NNCF model type 'transformer': the graph has {attention} attention op(s) "
                 f"({spelled('--model-type')} none for NNCF's default scheme)")
    return "transformer"


#: the products attention computes its scores and context with: PyTorch and ONNX exports give MatMul, Keras'
#: MultiHeadAttention gives Einsum (missed before, its encoder got NNCF's default scheme: cosine 0.981 where the
#: transformer scheme reads 0.997, and 0.86x bf16's speed at 2 threads on an AMX Xeon)
_ATTENTION_PRODUCTS = ("MatMul", "Einsum")


def attention_matmuls(model: Any) -> int:
    """Attention blocks: OpenVINO's fused ScaledDotProductAttention ops, or else MatMuls or Einsums whose
    operands are all activations (no constant behind any) in a graph with a Softmax."""
    ops = model.get_ordered_ops()
    fused = sum(1 for op in ops if op.get_type_name() == "ScaledDotProductAttention")
    if fused or not any(op.get_type_name() in ("Softmax", "SoftMax") for op in ops):
        return fused

    def from_constant(node: Any) -> bool:
        for _ in range(8):  # weights reach a MatMul through a few conversions at most
            kind = node.get_type_name()
            if kind == "Constant":
                return True
            if kind not in _PASS_THROUGH or node.get_input_size() == 0:
                return False
            node = node.input_value(0).get_node()
        return False

    return sum(1 for op in ops if op.get_type_name() in _ATTENTION_PRODUCTS and op.get_input_size() >= 2
               and not any(from_constant(op.input_value(i).get_node()) for i in range(op.get_input_size())))


def overflow_fix_for(cpu: str) -> str | None:
    """NNCF's overflow fix for a CPU description (``describe_cpu``): every layer on x86 without VNNI, NNCF's
    own default (None: the first layer only) elsewhere."""
    return "enable" if cpu == X86_WITHOUT_VNNI else None


def _output_producers(model: Any) -> list[str]:
    return sorted({result.input_value(0).get_node().get_friendly_name() for result in model.get_results()})


def remedies(first: Path, samples: Any):
    """What to try when NNCF's default int8 model collapses, cheapest first: yields (label, options, ranking).
    The per-layer ranking is computed only if the cheap remedies fail, from the default attempt's own files."""
    yield "outputs in float", {"keep_output_float": True}, None
    yield "outputs in float, mixed preset (asymmetric activations)", \
        {"keep_output_float": True, "preset": "mixed"}, None
    from edgekit.converters._sensitivity import keep_most_sensitive

    yield from keep_most_sensitive(rank(first, samples()), {"keep_output_float": True}, "ignored_names", "layer(s)")


#: the float model NNCF quantized, kept in the attempt's work folder
FLOAT_IR = "float.xml"
#: the options of the attempt ``rank`` ranks: the default int8 model
RANK_OPTIONS: dict[str, Any] = {}


def rank(quantized: Path, samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layers by the quantization noise they add, worst first, from a staged int8 IR and the float model NNCF
    was given (its work folder's float.xml), both run by OpenVINO at f32 with every layer's output exposed."""
    from itertools import islice

    from edgekit.converters._sensitivity import SENSITIVITY_SAMPLES, rank_nodes

    work = quantized.parent / f".{quantized.name}-work"
    return rank_nodes(work / FLOAT_IR, quantized, islice(samples, SENSITIVITY_SAMPLES), work)


def _quantize(model: Any, calibration: Callable[[], Iterable[dict[str, Any]]] | None, count: int | None,
              validation: Iterable[Any] | None, max_drop: float | None,
              options: NncfOptions) -> tuple[Any, dict[str, Any]]:
    nncf = _nncf()
    if calibration is None:
        raise ConversionError(f"openvino-int8 needs calibration data: {calibration_advice()}")
    if options.preset not in PRESETS:
        raise ConversionError(f"{spelled('--preset')} must be one of {', '.join(PRESETS)}, got '{options.preset}'")
    if options.overflow_fix not in (None, *OVERFLOW_FIXES):
        raise ConversionError(f"{spelled('--overflow-fix')} must be one of {', '.join(OVERFLOW_FIXES)}, got "
                              f"'{options.overflow_fix}'")
    dataset = nncf.Dataset(_Samples(calibration, count))
    common = {
        "preset": nncf.QuantizationPreset(options.preset),
        # NNCF silently caps calibration at 300 samples unless told: use all of them.
        "subset_size": count or 300,
        "fast_bias_correction": options.fast_bias_correction,
        "model_type": nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
    }
    if options.ignored_names or options.ignored_types or options.ignored_patterns:
        common["ignored_scope"] = nncf.IgnoredScope(names=list(options.ignored_names),
                                                    types=list(options.ignored_types),
                                                    patterns=list(options.ignored_patterns))
    advanced = {}
    if options.overflow_fix:
        advanced["overflow_fix"] = nncf.OverflowFix(options.overflow_fix)
    details = {"preset": options.preset, "subset_size": common["subset_size"],
               "fast_bias_correction": options.fast_bias_correction, "model_type": options.model_type,
               "overflow_fix": options.overflow_fix or "first_layer_only (NNCF's default)",
               "ignored_scope": {"names": list(options.ignored_names), "types": list(options.ignored_types),
                                 "patterns": list(options.ignored_patterns)}}
    try:
        plain = nncf.quantize(model, dataset, advanced_parameters=nncf.AdvancedQuantizationParameters(**advanced),
                              **common)
        if max_drop is None:
            return plain, details
        labeled = [s for s in (validation or []) if s.label is not None]
        if not labeled:
            details["accuracy_control"] = "not used: it needs labeled validation data (class sub-folders)"
            return plain, details
        controlled = nncf.quantize_with_accuracy_control(
            model, dataset, nncf.Dataset(labeled, lambda s: s.feeds), _accuracy_fn(labeled),
            max_drop=max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=nncf.AdvancedQuantizationParameters(**advanced), **common)
    except EdgekitError:
        raise  # our own (a calibration sample that cannot be read): already says what to do
    except nncf.ValidationError as exc:
        raise ConversionError(f"NNCF rejected the options: {exc}".splitlines()[0]) from exc
    except Exception as exc:  # noqa: BLE001 - NNCF raises KeyError, IndexError, RuntimeError...: translate all here
        raise ConversionError(f"NNCF could not quantize the model ({type(exc).__name__}: "
                              f"{engine_message(exc)[:300]}); keep the "
                              f"failing layers in float with {spelled('--ignored-names')}/"
                              f"{spelled('--ignored-types')}, try {spelled('--model-type')} "
                              "transformer for attention models, or use openvino-fp16 / onnx-int8") from exc
    details.update(accuracy_control={"max_drop_points": max_drop, "validation_samples": len(labeled),
                                     "reverted_to_float": reverted_layers(plain, controlled)})
    return controlled, details


def _accuracy_fn(labeled: list[Any]) -> Callable[[Any, Iterable[Any]], float]:
    """Top-1 accuracy in [0, 1]; NNCF hands it the untransformed samples (feeds and label)."""

    def accuracy(compiled: Any, samples: Iterable[Any]) -> float:
        output = compiled.outputs[0]
        hits = [int(np.argmax(compiled(s.feeds)[output])) == s.label for s in samples]
        return float(np.mean(hits)) if hits else 0.0

    return accuracy


def reverted_layers(plain: Any, controlled: Any) -> list[str]:
    """Compute layers quantized (fed by a FakeQuantize) in ``plain`` but not in ``controlled``."""
    return sorted(_quantized_layers(plain) - _quantized_layers(controlled))


def _quantized_layers(model: Any) -> set[str]:
    names = set()
    for op in model.get_ops():
        if op.get_type_name() not in _COMPUTE_TYPES:
            continue
        producers = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
        if "FakeQuantize" in producers:
            names.add(op.get_friendly_name())
    return names
