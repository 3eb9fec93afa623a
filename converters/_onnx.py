"""ONNX targets: fp32 (optimized export), fp16, dynamic int8 and static int8 (QDQ), from ONNX, Keras or SavedModel.

onnxruntime.quantization, tf2onnx and TensorFlow are imported inside these
functions only. Static int8 defaults depend on the CPU the model is built for
(``for_cpu``): on x86, uint8 activations with int8 weights (ONNX Runtime's fast
U8S8 kernels; int8 activations run about as slow as float there), with
``reduce_range`` when the CPU lacks VNNI so results do not depend on the CPU;
on arm64, int8 activations and weights (S8S8). ``runtimes/cpu.py`` names the CPUs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import (
    CALIB_METHODS,
    ONNX_FORMATS,
    ONNX_QUANT_TYPES,
    check_int8_placement,
    kept_source_scales,
    placement_backs_off,
    work_folder,
)
from edgekit.converters._onnx_export import (
    CalibrationReader,
    export_onnx,
    opset_of,
    preprocess_for_quantization,
    save_onnx,
)
from edgekit.converters._source import Source
from edgekit.runtimes._ort import engine_errors
from edgekit.runtimes.cpu import INT8_INSTRUCTIONS, X86_WITHOUT_VNNI, describe_cpu, is_arm
from edgekit.runtimes.errors import (
    ConversionError,
    MissingDependencyError,
    calibration_advice,
    first_line,
    spelled,
)
from edgekit.runtimes.formats import open_model_file

log = logging.getLogger("edgekit")

MIN_PER_CHANNEL_OPSET = 13  # DequantizeLinear has no axis attribute before opset 13
# Entropy and percentile keep every activation of every sample until the end: cap the samples.
# MinMax keeps only per-tensor min/max values per sample, so it streams at any size. (ONNX Runtime's
# CalibMaxIntermediateOutputs is not used: in 1.32 it discards each full batch instead of merging it.)
HISTOGRAM_CALIB_CAP = 100


def _imports() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnx and onnxruntime (needed for ONNX targets)", "onnx") from exc
    return onnx, onnxruntime


def int8_defaults(for_cpu: str, cpuinfo: str | None = None) -> dict[str, Any]:
    """Activation/weight types and reduce_range for the CPU the model is converted for (``describe_cpu``):
    S8S8 on arm64 (its sdot/smmla and NEON kernels take signed pairs), U8S8 on x86 (vpmaddubsw/vpdpbusd take
    u8 x s8; S8S8 runs about as slow as float there), 7-bit weights where vpmaddubsw's int16 saturates."""
    cpu = describe_cpu(for_cpu, cpuinfo)
    return {"for_cpu": cpu, "activation_type": "int8" if is_arm(cpu) else "uint8", "weight_type": "int8",
            "reduce_range": cpu == X86_WITHOUT_VNNI, "int8_instructions": INT8_INSTRUCTIONS[cpu]}


def name_unnamed_nodes(graph: Any) -> int:
    """Give every unnamed node a name (``<op_type>_<n>``) so it can be excluded or blocked by name."""
    unnamed = [n for n in graph.node if not n.name]
    for index, node in enumerate(unnamed):
        node.name = f"{node.op_type}_{index}"
    return len(unnamed)


_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "Cast"}


def output_nodes(graph: Any) -> list[str]:
    """The nodes that make the outputs, followed upstream through data movement and Concat: a detector's
    Concat of pixel boxes and 0-1 scores sits behind a Transpose, and one int8 scale cannot serve both."""
    producers = {out: node for node in graph.node for out in node.output}
    found, stack = [], [producers[o.name] for o in graph.output if o.name in producers]
    while stack:
        node = stack.pop()
        if node.name in found:
            continue
        found.append(node.name)
        if node.op_type in _PASS_THROUGH:
            stack += [producers[i] for i in node.input if i in producers]
    return found


FLOAT16_MAX = 65504.0


def _to_float16(onnx: Any, float_path: Path, output: Path, notes: list[str]) -> dict[str, Any]:
    """Weights and activations in float16, I/O kept float32. Nodes fed a constant that float16 cannot hold
    (PaddleOCR's BatchNormalization variances reach 1e7) stay float32: clamping those constants silently
    wrecks the model (the detector's cosine fell to 0.78). ORT's converter clamps at 1e4 by default; only
    values beyond float16's own range are a reason to keep a node in float."""
    from onnx import numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(float_path))
    graph = model.graph
    # Constant nodes become initializers: the converter keeps an initializer float32 when only float32 nodes
    # use it, but a Constant node's output would travel through a float16 Cast on its way.
    for node in [n for n in graph.node if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]]:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    name_unnamed_nodes(graph)  # blocking works by node name
    too_big = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT
               and _max_abs(numpy_helper.to_array(i)) > FLOAT16_MAX}
    kept = sorted({n.name for n in graph.node if too_big & set(n.input)})
    if kept:
        notes.append(f"{len(kept)} node(s) kept in float32: they use constants beyond float16's range")
    model = convert_float_to_float16(model, keep_io_types=True, max_finite_val=FLOAT16_MAX,
                                     node_block_list=kept or None)
    save_onnx(onnx, model, output)
    return {"io": "float32 (kept)", "kept_float32_nodes": kept}


def _max_abs(array: Any) -> float:
    return float(np.abs(array).max()) if array.size else 0.0


def remedies(first: Path, samples: Callable[[], Iterable[dict[str, Any]]]):
    """What to try, cheapest first, when the default int8 model collapses: yields (label, options, ranking).
    The per-node sensitivity ranking (ONNX Runtime's qdq_loss_debug) is computed only if the cheap remedies
    fail, from the default attempt's own files."""
    yield "outputs in float", {"keep_output_float": True}, None
    yield "outputs in float, percentile calibration", {"keep_output_float": True, "calib_method": "percentile"}, None
    from edgekit.converters._sensitivity import keep_most_sensitive

    yield from keep_most_sensitive(rank(first, samples()), {"keep_output_float": True}, "exclude_nodes", "node(s)")


#: the options of the attempt ``rank`` ranks: the default int8 model
RANK_OPTIONS: dict[str, Any] = {}


def rank(quantized: Path, samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes by the quantization noise they add (ONNX Runtime's qdq_loss_debug), worst first, from a staged
    int8 model and the float model it was quantized from (its work folder's prepared.onnx)."""
    from itertools import islice

    from edgekit.converters._sensitivity import SENSITIVITY_SAMPLES, rank_nodes

    work = quantized.parent / f".{quantized.name}-work"
    return rank_nodes(work / "prepared.onnx", quantized, islice(samples, SENSITIVITY_SAMPLES), work)


def _quant_type(quantization: Any, name: str, flag: str) -> Any:
    types = {"int8": quantization.QuantType.QInt8, "uint8": quantization.QuantType.QUInt8}
    if name not in ONNX_QUANT_TYPES:
        raise ConversionError(f"{flag} must be one of {', '.join(ONNX_QUANT_TYPES)}, got '{name}'")
    return types[name]


def convert(
    source: Source,
    target: Any,
    output: Path,
    *,
    calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
    calib_method: str = "minmax",
    per_channel: bool = True,
    activation_type: str | None = None,
    weight_type: str | None = None,
    symmetric: bool = False,
    exclude_nodes: tuple[str, ...] = (),
    exclude_op_types: tuple[str, ...] = (),
    keep_output_float: bool = False,
    onnx_format: str = "qdq",
    for_cpu: str = "auto",
    reduce_range: bool | None = None,
    opset: int | None = None,
    int8_placement: str = "engine",
    group_size: int | None = None,
    symmetric_weights: bool | None = None,
    accuracy_level: str | int = "auto",
) -> dict[str, Any]:
    """Write an ONNX ``target`` for ``source`` to ``output``; return the options used and notes.

    onnx-w4 / onnx-w8 (``_onnx_weight_only``): ``group_size`` weights share a scale (ORT's default 128),
    ``symmetric_weights`` (ORT's default: asymmetric), ``accuracy_level`` ``auto`` (time ORT's default 0
    against 4 here and keep the faster) or one of 0-4.

    ``int8_placement`` (onnx-int8): ``engine`` keeps in float the gated activations ONNX Runtime has no int8
    kernel for, with the convolution it fuses them into (``_ort_placement``); ``everywhere`` quantizes every
    op ``quantize_static`` can, as ONNX Runtime's quantizer does."""
    onnx, ort = _imports()
    from onnxruntime import quantization

    work = work_folder(output)
    used: dict[str, Any] = {"target": target.name}
    notes: list[str] = []
    float_path = work / "float.onnx"
    used.update(export_onnx(source, float_path, opset))
    variant = target.variant
    if variant == "fp32":
        options = ort.SessionOptions()
        # BASIC = hardware-independent rewrites only, so the file stays portable across CPUs and runtimes.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(output)
        try:
            ort.InferenceSession(str(float_path), options, providers=["CPUExecutionProvider"])
        except engine_errors() as exc:
            raise ConversionError(f"ONNX Runtime cannot load the float export of '{source.path}': "
                                  f"{first_line(exc)[:300]}") from exc
        used["optimization"] = "onnxruntime basic graph optimizations"
        try:  # a saved optimized graph does not always load back (seen on BERT encoders): keep the plain export
            ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        except engine_errors() as exc:
            shutil.copyfile(float_path, output)
            used["optimization"] = "none (ONNX Runtime's own optimizations apply at load time)"
            notes.append(f"the optimized graph did not load back ({first_line(exc)[:120]}); kept the plain export")
    elif variant == "fp16":
        used.update(_to_float16(onnx, float_path, output, notes))
    elif variant == "int8-dynamic":
        quantization.quantize_dynamic(str(float_path), str(output), per_channel=per_channel,
                                      weight_type=_quant_type(quantization, weight_type or "int8",
                                                              spelled("--weight-type")))
        used.update(per_channel=per_channel, weight_type=weight_type or "int8")
    elif variant in ("w4", "w8"):
        from edgekit.converters._onnx_weight_only import ORT_DEFAULT_GROUP, quantize_weights

        used.update(quantize_weights(float_path, output, work, source.inputs, bits=int(variant[1:]),
                                     group_size=group_size or ORT_DEFAULT_GROUP, symmetric=bool(symmetric_weights),
                                     accuracy_level=accuracy_level))
        used["speed_reference"] = str(float_path)
    elif target.keeps_scales_of(source):  # QDQ/QOperator as it came, its input shapes fixed
        shutil.copyfile(float_path, output)
        used.update(kept_source_scales(source))
    elif variant == "int8":
        used["speed_reference"] = str(float_path)
        used.update(_quantize_static(onnx, quantization, float_path, output, work, calibration, notes,
                                     calib_method=calib_method, per_channel=per_channel,
                                     activation_type=activation_type, weight_type=weight_type, symmetric=symmetric,
                                     exclude_nodes=exclude_nodes, exclude_op_types=exclude_op_types,
                                     keep_output_float=keep_output_float, onnx_format=onnx_format,
                                     for_cpu=for_cpu, reduce_range=reduce_range, int8_placement=int8_placement,
                                     placement_cache=source.cache.setdefault("ort_float_islands", {}),
                                     prepared_cache=source.cache.setdefault("ort_prepared", {}),
                                     ranges_cache=source.cache.setdefault("ort_calibration_ranges", {})))
    else:
        raise ConversionError(f"unknown ONNX target {target.name}")
    used["notes"] = notes
    return used


def _quantize_static(onnx: Any, quantization: Any, float_path: Path, output: Path, work: Path,
                     calibration: Callable[[], Iterable[dict[str, Any]]] | None, notes: list[str], *,
                     calib_method: str, per_channel: bool, activation_type: str | None, weight_type: str | None,
                     symmetric: bool, exclude_nodes: tuple[str, ...], exclude_op_types: tuple[str, ...],
                     keep_output_float: bool, onnx_format: str, for_cpu: str, reduce_range: bool | None,
                     int8_placement: str, placement_cache: dict[Any, Any], prepared_cache: dict[str, Any],
                     ranges_cache: dict[Any, str]) -> dict[str, Any]:
    if calibration is None:
        raise ConversionError(f"onnx-int8 needs calibration data: {calibration_advice()}")
    if calib_method not in CALIB_METHODS:
        raise ConversionError(f"{spelled('--calib-method')} must be one of {', '.join(CALIB_METHODS)}, "
                              f"got '{calib_method}'")
    if onnx_format not in ONNX_FORMATS:
        raise ConversionError(f"{spelled('--onnx-format')} must be qdq or qoperator, got '{onnx_format}'")
    check_int8_placement(int8_placement)
    defaults = int8_defaults(for_cpu)
    activation_type = activation_type or defaults["activation_type"]
    weight_type = weight_type or defaults["weight_type"]
    reduce_range = defaults["reduce_range"] if reduce_range is None else reduce_range
    model = onnx.load(str(float_path))
    used: dict[str, Any] = {}
    if per_channel and opset_of(model) < MIN_PER_CHANNEL_OPSET:
        # Per-channel QDQ below opset 13 yields an invalid graph: upgrade first and say so.
        used["opset_upgraded_from"] = opset_of(model)
        model = onnx.version_converter.convert_version(model, MIN_PER_CHANNEL_OPSET)
        onnx.save(model, str(float_path))
        used["opset"] = MIN_PER_CHANNEL_OPSET
        notes.append(f"upgraded opset {used['opset_upgraded_from']} -> 13 for per-channel quantization")
    prepared = _prepared(float_path, work / "prepared.onnx", notes, prepared_cache)
    prepared_model = onnx.load(str(prepared))
    # Exclusion works by node name, and unnamed nodes would all match '' at once: name them.
    if name_unnamed_nodes(prepared_model.graph):
        onnx.save(prepared_model, str(prepared))
    names = {n.name for n in prepared_model.graph.node}
    if int8_placement == "engine":
        prepared_model = _rewritten_for_ort_int8(onnx, prepared_model, prepared, set(exclude_nodes), used)
    # the sensitivity ranking's remedies name nodes of the rewritten graph, a user the model's own
    unknown = sorted(set(exclude_nodes) - names - {n.name for n in prepared_model.graph.node})
    if unknown:
        raise ConversionError(f"{spelled('--exclude-nodes')} names no node of the model: {unknown}")
    excluded = list(exclude_nodes)
    if keep_output_float:
        excluded += output_nodes(prepared_model.graph)
    op_types = None
    if exclude_op_types:
        present = {n.op_type for n in prepared_model.graph.node}
        op_types = sorted(present - set(exclude_op_types))
    limit = HISTOGRAM_CALIB_CAP if calib_method != "minmax" else None
    if limit:
        notes.append(f"{calib_method} calibration keeps every activation in memory: capped at {limit} samples")
    methods = {"minmax": quantization.CalibrationMethod.MinMax, "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    fmt = quantization.QuantFormat.QDQ if onnx_format == "qdq" else quantization.QuantFormat.QOperator

    ranges = _CalibrationRanges(quantization, ranges_cache, work / "calibration-ranges.json",
                                (open_model_file(prepared).sha256(), calib_method, limit, tuple(op_types or ())))

    def quantize(float_nodes: list[str]) -> None:
        try:
            quantization.quantize_static(
                str(prepared), str(output), ranges.reader(lambda: CalibrationReader(calibration(), limit)),
                quant_format=fmt, op_types_to_quantize=op_types, per_channel=per_channel, reduce_range=reduce_range,
                activation_type=_quant_type(quantization, activation_type, spelled("--activation-type")),
                weight_type=_quant_type(quantization, weight_type, spelled("--weight-type")),
                nodes_to_exclude=float_nodes or None, calibrate_method=methods[calib_method], extra_options=extra,
                **ranges.options(),
            )
        except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConversionError(f"ONNX Runtime could not quantize the model: {first[:300]}") from exc
        ranges.keep()

    if int8_placement == "engine":
        key = (activation_type, weight_type, onnx_format, per_channel)
        # measured on this CPU only: a stem kept float for another CPU would be a guess
        here = defaults["for_cpu"] == describe_cpu("auto")
        stem = placement_cache.get((key, "stem"), {}) if here else {}
        used.update(_placed_for_ort(quantize, excluded + stem.get("nodes", []), prepared_model.graph, work,
                                    output, placement_cache, key))
        if here and (key, "stem") not in placement_cache:
            stem = placement_cache[(key, "stem")] = _stem_for_ort(
                quantize, excluded + used.get("float_islands", []), prepared_model.graph, float_path, output,
                work, calibration)
        if stem.get("nodes"):
            used["float_stem"] = stem["nodes"]
            used.setdefault("kept_float_for_engine", {})["first convolution"] = stem["why"]
    else:
        quantize(excluded)
        used["int8_placement"] = "everywhere"
    if ranges.reused and not ranges.computed:  # no sample was read in this attempt
        used["calibration_reused"] = ("the activation ranges of an earlier attempt on the same prepared model, "
                                      "calibration method and samples")
    used.update(format=onnx_format, calib_method=calib_method, per_channel=per_channel,
                activation_type=activation_type, weight_type=weight_type, reduce_range=reduce_range,
                symmetric_activations=symmetric, for_cpu=defaults["for_cpu"],
                int8_instructions=defaults["int8_instructions"], excluded_nodes=excluded,
                excluded_op_types=list(exclude_op_types), calibration_sample_cap=limit)
    return used


def _prepared(float_path: Path, output: Path, notes: list[str], cache: dict[str, Any]) -> Path:
    """``preprocess_for_quantization`` once per float export (by content): every attempt of a repair quantizes
    the same export, and ONNX Runtime's symbolic shape inference takes about half a second on the PP-OCR
    detector, each time. Its output holds no external data (quant_pre_process writes one file)."""
    key = open_model_file(float_path).sha256()
    if key not in cache:
        own_notes: list[str] = []
        preprocess_for_quantization(float_path, output, own_notes)
        cache[key] = (output.read_bytes(), own_notes)
    else:
        output.write_bytes(cache[key][0])
    notes.extend(cache[key][1])
    return output


class _CalibrationRanges:
    """ONNX Runtime's calibration ranges, computed once per prepared model, method and samples and reused by
    every later quantization of them (the repair's attempts differ in which nodes stay float, and the
    placement quantizes twice): each calibration runs the whole sample set through an augmented model.
    Uses quantize_static's own ``calibration_cache_path``; an ONNX Runtime without it calibrates every time."""

    def __init__(self, quantization: Any, cache: dict[Any, str], path: Path, key: tuple[Any, ...]) -> None:
        import inspect

        self._supported = "calibration_cache_path" in inspect.signature(quantization.quantize_static).parameters
        self._cache, self._path, self._key = cache, path, key
        self.computed = self.reused = False

    def reader(self, make: Callable[[], Any]) -> Any:
        """The calibration reader, or None where the ranges are known (no sample is read)."""
        if self._supported and self._key in self._cache:
            self._path.write_text(self._cache[self._key])
            self.reused = True
            return None
        self._path.unlink(missing_ok=True)
        self.computed = True
        return make()

    def options(self) -> dict[str, Any]:
        return {"calibration_cache_path": str(self._path)} if self._supported else {}

    def keep(self) -> None:
        if self._supported and self._key not in self._cache and self._path.is_file():
            self._cache[self._key] = self._path.read_text()


def _rewritten_for_ort_int8(onnx: Any, model: Any, path: Path, leave: set[str], used: dict[str, Any]) -> Any:
    """``model`` with its hard-sigmoid gates and spatial means in forms ONNX Runtime runs in int8
    (``_ort_rewrite``), saved to ``path`` when anything changed; ``model`` itself when the rewrite cannot read
    the graph."""
    from edgekit.converters._ort_rewrite import rewrite_for_ort_int8

    rewritten_model = onnx.ModelProto()
    rewritten_model.CopyFrom(model)
    try:
        rewritten = rewrite_for_ort_int8(rewritten_model, leave)
    except Exception as exc:  # noqa: BLE001 - an untrusted graph the rewrite does not expect: quantize it as it is
        log.warning("rewrites for ONNX Runtime's int8 kernels skipped (%s: %s)", type(exc).__name__,
                    first_line(exc)[:200])
        return model
    if not rewritten:
        return model
    onnx.save(rewritten_model, str(path))
    used["rewritten_before_quantization"] = rewritten
    return rewritten_model


def _stem_for_ort(quantize: Callable[[list[str]], None], float_nodes: list[str], graph: Any, float_path: Path,
                  output: Path, work: Path, calibration: Callable[[], Iterable[dict[str, Any]]]) -> dict[str, Any]:
    """Keep the stem (the first convolution, what feeds it from the input, its activation) in float when ONNX
    Runtime's profiler says its int8 form, with the quantizing and layout change of the whole input it needs,
    costs more than float's, and the model then runs faster: measured on this CPU with ORT's default threads
    (AMX Xeon, 2 threads: a YOLO-style detector's stem at 640x640 ran 3.4 ms in int8, 1.5 ms in float;
    EfficientNet-B0's int8 went from 0.80x to 1.11x float). ``output`` holds the int8 model quantized with
    ``float_nodes``; it is left as the faster of the two."""
    import statistics

    import onnxruntime
    from edgekit.converters._ort_placement import STEM_GAIN, speedups, stem_ms, stem_nodes

    stem = [n for n in stem_nodes(graph) if n not in float_nodes]
    if not stem:
        return {}
    everywhere, ratios = work / "stem-int8.onnx", []
    try:
        feeds = next(iter(calibration()))
        int8_ms, float_ms = stem_ms(output, feeds), stem_ms(float_path, feeds)
        if int8_ms <= float_ms:
            return {}
        shutil.copyfile(output, everywhere)
        quantize(float_nodes + stem)
        # speed never buys an "-int8" name for a mostly float model (a net whose stem holds most weights)
        if not placement_backs_off(output, "the first convolution", ""):
            ratios = speedups(everywhere, output, feeds)
    except engine_errors():  # a model ORT cannot profile keeps its stem in int8
        pass
    # kept only when faster in all but one round (the sign test's 95 % for 9): a noisy tie changes nothing
    if len(ratios) > 1 and statistics.median(ratios) > 1 + STEM_GAIN and ratios[1] > 1:
        return {"nodes": stem, "why": (
            f"ONNX Runtime {onnxruntime.__version__}'s int8 first convolution, with the quantizing and layout "
            f"change of its input, ran {int8_ms:.2g} ms against {float_ms:.2g} ms in float on this CPU "
            f"({describe_cpu('auto')}, its profiler, default threads); in float the model ran "
            f"{statistics.median(ratios):.2f}x as fast")}
    if everywhere.is_file():
        shutil.copyfile(everywhere, output)
    return {}


def _placed_for_ort(quantize: Callable[[list[str]], None], excluded: list[str], graph: Any, work: Path,
                    output: Path, cache: dict[Any, Any], key: tuple[Any, ...]) -> dict[str, Any]:
    """Quantize everywhere, read which gated activations ONNX Runtime runs in float, and if any, quantize
    again with those islands in float. The islands are kept per source and quantization types, for the
    repair's later attempts."""
    import onnxruntime
    from edgekit.converters._ort_placement import float_islands, ops_run_in_float

    fresh = key not in cache
    if fresh:
        quantize(excluded)
        try:
            cache[key] = float_islands(graph, ops_run_in_float(output, work))
        except engine_errors():  # ORT cannot load its own quantizer's output: validation will say so
            cache[key] = {}
    islands = cache[key]
    if not islands:
        if not fresh:
            quantize(excluded)
        return {"int8_placement": cache.get((key, "dropped")) or "engine"}
    float_nodes = [n for gates in islands.values() for island in gates for n in island if n not in excluded]
    quantize(excluded + float_nodes)
    dropped = placement_backs_off(output, f"{', '.join(islands)} gates and their convolutions", "ONNX Runtime "
                                  "runs those gates in float between DequantizeLinear and QuantizeLinear")
    if dropped:
        cache[key], cache[(key, "dropped")] = {}, dropped
        quantize(excluded)
        return {"int8_placement": cache[(key, "dropped")]}
    engine = f"ONNX Runtime {onnxruntime.__version__}"
    return {"int8_placement": "engine", "float_islands": float_nodes, "kept_float_for_engine": {
        op: f"{engine} runs no int8 {op}: {len(gates)} x*{op}(x) gate(s) kept in float with the convolution "
            "ORT fuses them into" for op, gates in islands.items()}}
