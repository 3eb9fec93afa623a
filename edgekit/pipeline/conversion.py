"""The conversion pipeline shared by every target: ``edgekit.convert``.

prepared job (``edgekit.pipeline.job``: source and data) -> artifact in a staging folder -> validation against
the float original -> quantization audit -> JSON report -> atomic publish.
Nothing reaches the output folder until it is complete; an existing file is
never overwritten without ``force``.
"""

from __future__ import annotations

import datetime
import importlib
import io
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit._files import ensure_writable, publish, staging_dir
from edgekit.audit import audit_model
from edgekit.converters import WEIGHT_ONLY, Target, check_options, check_route, resolve_targets
from edgekit.converters._quiet import native_stderr_silenced
from edgekit.converters._source import Source
from edgekit.pipeline.calibration import RANDOM_SOURCE, Dataset, build_dataset, fail_if_empty
from edgekit.pipeline.engine_log import engine_messages
from edgekit.pipeline.job import ConversionJob, Progress, as_job, no_progress, split_keywords, tool_versions
from edgekit.pipeline.repair import try_remedies
from edgekit.pipeline.speed import (
    REMEDY_SLOWER_BELOW,
    bf16_slower_warning,
    slower_than_float,
    slower_warning,
    speed_check,
)
from edgekit.pipeline.validation import ValidationReport, validate
from edgekit.runtimes import open_runtime
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import ConversionError, EdgekitError, spelled
from edgekit.runtimes.formats import hash_feeds, open_model_file
from edgekit.runtimes.sparsity import weight_sparsity

log = logging.getLogger("edgekit")

#: where an artifact that failed its checks is kept aside, inside the output folder: never under the name a good
#: artifact would have, where a deploy script globbing the folder would ship it
FAILED_FOLDER = "failed"


@dataclass(frozen=True)
class ConversionResult:
    """One target's outcome. ``report["status"]`` is ``ok``, ``failed`` (an artifact was made but failed its
    checks: kept aside in ``FAILED_FOLDER``) or ``error`` (no artifact could be made, with ``keep_going``:
    ``artifact`` and ``report_path`` are None and ``error`` says why)."""

    target: str
    artifact: Path | None
    report_path: Path | None
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.report["status"] == "ok"

    @property
    def error(self) -> str | None:
        return self.report["failures"][0] if self.report["status"] == "error" else None

    @property
    def validation(self) -> dict[str, Any] | None:
        return self.report.get("validation")


def convert(
    source: Any,
    to: str | list[str],
    *,
    output_dir: str | Path = ".",
    max_drop: float | None = None,
    accept_loss: bool = False,
    decide: Callable[[dict[str, Any]], Any] | None = None,
    repair: bool = True,
    validate_outputs: bool = True,
    check_speed: bool = True,
    force: bool = False,
    keep_going: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> list[ConversionResult]:
    """Convert a trained model to one or more edge targets, validate and report each.

    Args:
        source: A ``ConversionJob`` from ``edgekit.prepare`` (the model opened and its data read once), or
            anything ``prepare`` takes (a Keras .keras/.h5 file, a SavedModel folder, an .onnx, a float .tflite,
            a PyTorch ``.pt2`` file or a torch ``nn.Module``) with ``prepare``'s keywords among ``options``:
            ``calibration``, ``example_inputs``, ``output_names``, ``name``, ``trust_pickle``, ``input_shapes``,
            ``recipe``, ``calib_size``, ``validation_size``, ``seed``, ``dequantize``.
        to: Target names, e.g. ``"tflite-int8,tflite-fp32"`` (see ``edgekit.converters.TARGETS``).
        output_dir: Where ``<stem>_<variant>.<ext>`` and its ``.json`` report go (created if missing).
        max_drop: Fail (report status "failed") when accuracy drops more than this many points
            (with labels), more than this percentage of ``decide``'s decisions change (with it), or
            (1 - cosine) x 100 exceeds it (otherwise).
        accept_loss: Keep an artifact whose outputs collapsed (decision agreement or SQNR below the floors in
            ``edgekit.pipeline.validation``) as "ok", with a warning; by default it is "failed".
        decide: Your application's reading of the outputs, for decisions no output shape shows (an embedding
            a later model classifies, windows your code joins): called with every validation sample's outputs
            stacked in order (``{output name: array}``), it returns an array of decisions; the share each
            artifact keeps is judged like any decision (see ``edgekit.pipeline.validation.validate``).
        repair: When a quantized artifact collapses or exceeds ``max_drop``, try the target's remedies (outputs
            in float, other calibration, the most sensitive layers in float, int16 activations) and keep the
            first that holds and, where ``check_speed`` times it, runs at least half float's speed; every attempt
            is in the report's ``repair`` section.
        validate_outputs: Compare every artifact with the float original (on by default).
        check_speed: Time every int8 artifact built for this machine's CPU against its float sibling (about a
            second each; the report's ``speed_vs_float_here``, a warning when int8 is slower; a repair remedy
            under half float's speed is not kept).
        force: Overwrite existing artifacts and reports.
        keep_going: When a target cannot be converted, record it (a result with status "error" and no
            artifact) and go on with the next target, as ``edgekit convert`` does; by default its error is
            raised and the targets after it are not tried.
        progress: ``progress(description, total)`` context manager factory for long loops.
        **options: Converter options, passed to the targets that take them; one that no chosen
            target takes is an error. TFLite: ``io`` (int8/uint8/float/int16), ``allow_float_ops``.
            ONNX: ``calib_method``, ``per_channel``, ``activation_type``, ``weight_type``, ``symmetric``,
            ``exclude_nodes``, ``exclude_op_types``, ``keep_output_float``, ``onnx_format``, ``for_cpu``,
            ``reduce_range``, ``opset``. Weight-only: ``group_size``, ``symmetric_weights``,
            ``accuracy_level``.

    Returns:
        One ``ConversionResult`` per target, in the order asked.

    Raises:
        ConversionError: A target could not be made (unless ``keep_going``), or an artifact could not be written.
        CalibrationError: The calibration data cannot be read or does not fit the model's inputs.
        UnsupportedModelError: The source, or a target for it, is not supported.
        MissingDependencyError: A converter or engine a target needs is not installed (the error says how).
    """
    started = time.perf_counter()
    progress = progress or no_progress
    targets = resolve_targets(to)
    preparation, options = split_keywords({k: v for k, v in options.items() if v is not None})
    check_options(targets, options)
    job = as_job(source, preparation, "convert")
    src = job.fresh_source()
    check_route(src, targets, has_data=job.dataset is not None)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:  # fail before any work rather than after minutes of it
        final = out_dir / target.artifact_name(job.stem, options)
        for path in [final, Path(f"{final}.json")] + [out_dir / n for n in target.companion_names(job.stem, options)]:
            ensure_writable(path, force=force)
    results = []
    with staging_dir(out_dir) as staging:
        reference = job.float_reference(staging, progress, src) if validate_outputs else None
        for target in targets:
            run = _TargetRun(job, src, target, out_dir, staging, reference, max_drop, accept_loss, options, progress,
                             decide)
            try:
                results.append(_convert_one(run, repair=repair, force=force, check_speed=check_speed))
            except EdgekitError as exc:
                if not keep_going:
                    raise
                log.info("not converted: %s", exc)
                results.append(ConversionResult(target.name, None, None, {
                    "target": target.name, "status": "error", "failures": [str(exc)], "source": job.source_info}))
        if reference is not None:
            reference.close()
    log.info("converted %s to %d target(s) in %.1f s", src.path, len(results), time.perf_counter() - started)
    return results


def sensitivity_ranking(source: Any, target: str, *, work_dir: str | Path,
                        **options: Any) -> list[dict[str, Any]] | None:
    """The per-layer sensitivity ranking of ``target``'s int8 model (``tflite-int8``, ``onnx-int8``,
    ``openvino-int8``): layers by the quantization noise each adds, worst first, measured with the engine's own
    tooling on the calibration samples (what the repair loop ranks, and what ``optimize`` keeps the top k of in
    float). None when the target's route gives nothing to rank. Cached per model and calibration set
    (``_sensitivity``).

    ``source`` is a ``ConversionJob`` prepared with calibration data, or a model with ``prepare``'s keywords
    among ``options``, as for ``convert``; the other ``options`` are the target's converter options."""
    (chosen,) = resolve_targets(target)
    ranker = importlib.import_module(f"edgekit.converters._{chosen.family}")
    if not hasattr(ranker, "rank") or chosen.remedies is None:
        raise ConversionError(f"{chosen.name} has no per-layer sensitivity ranking; tflite-int8, onnx-int8 and "
                              "openvino-int8 do")
    preparation, options = split_keywords(options)
    job = as_job(source, preparation, "sensitivity_ranking")
    if job.dataset is None:
        raise ConversionError("a sensitivity ranking needs calibration data: prepare the job with calibration=...")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with staging_dir(work_dir) as staging:
        run = _TargetRun(job, job.fresh_source(), chosen, work_dir, staging, None, None, False, options, no_progress)
        attempt = _attempt(run, 1, "ranking", ranker.RANK_OPTIONS)
        return ranker.rank(attempt.staged, job.dataset.calibration.feeds())


def _calibration_feeds(dataset: Dataset, target: Target, progress: Progress, counter: list[int | None]):
    """The converter's ``calibration``: each call one pass over the samples, counted in ``counter`` (None until a
    pass starts: a converter that reuses earlier ranges reads none)."""

    def feeds():
        counter[0] = 0
        with progress(f"calibrating {target.name}", len(dataset.calibration)) as advance:
            for sample in dataset.calibration.feeds():
                counter[0] += 1
                advance()
                yield sample

    return feeds


@dataclass(frozen=True)
class _TargetRun:
    """What every attempt at one target shares."""

    job: ConversionJob
    src: Source  # this run's (``ConversionJob.fresh_source``)
    target: Target
    out_dir: Path
    staging: Path
    reference: Any
    max_drop: float | None
    accept_loss: bool
    options: dict[str, Any]
    progress: Progress
    decide: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class _Attempt:
    label: str
    extra: dict[str, Any]
    folder: Path
    staged: Path
    used: dict[str, Any]
    model: Any
    audit: Any
    validation: ValidationReport | None
    convert_s: float
    warnings: list[str]
    speed_reference: str | None = None  # the converter's float model of the same engine, for ``_speed_here``
    not_integer: str | None = None  # why an int8 artifact is not what its name says (mostly float)
    speed: dict[str, Any] | None = None  # the speed check's record, once timed (``_speed_of``)
    timed: bool = False

    @property
    def collapsed(self) -> bool:
        return bool(self.validation and self.validation.collapsed)

    @property
    def needs_repair(self) -> bool:
        """Collapsed, or beyond the drop the user allowed: what the target's remedies are tried for."""
        return self.collapsed or bool(self.validation and self.validation.over_budget)


def _attempt(run: _TargetRun, index: int, label: str, extra: dict[str, Any]) -> _Attempt:
    """Convert, check, audit and validate once, in a folder of its own inside staging."""
    started = time.perf_counter()
    target, options = run.target, {**run.options, **extra}
    folder = run.staging / f"{target.name}-attempt-{index}"
    folder.mkdir()
    staged = folder / target.artifact_name(run.job.stem, options)
    counter: list[int | None] = [None]
    calibration = None
    if run.job.dataset and target.calibrates(run.src):
        calibration = _calibration_feeds(run.job.dataset, target, run.progress, counter)
    accepted = target.options()
    function_options = {k: v for k, v in options.items() if k in accepted}
    supplied = {"calibration_count": len(run.job.dataset.calibration) if run.job.dataset else None,
                "validation": run.job.dataset.validation if run.job.dataset else None, "max_drop": run.max_drop}
    function_options.update({k: v for k, v in supplied.items() if k in target.parameters()})
    chatter = io.StringIO()
    # Engines print progress to stdout (onnxruntime's calibrators do); stdout is for results only.
    try:
        with run.progress(f"converting to {target.name}", None) if calibration is None else nullcontext(), \
                redirect_stdout(chatter), native_stderr_silenced(), engine_messages() as said:
            used = target.function()(run.src, target, staged, calibration=calibration, **function_options)
    except OSError as exc:  # a full disk or a vanished folder, mid-write: typed, and staging is cleaned up
        raise ConversionError(f"{target.name}: cannot write in '{run.out_dir}': {exc.strerror or exc}") from exc
    if chatter.getvalue().strip():
        log.debug("%s converter output:\n%s", target.name, chatter.getvalue().rstrip())
    if said:  # kept in the report, not repeated on the terminal (the CLI shows them with -v)
        used["engine_messages"] = said
    if counter[0] is not None:  # a pass over the data was made: it must have found samples
        fail_if_empty(counter[0], run.job.dataset.provenance)
    convert_s = time.perf_counter() - started
    try:
        model = open_model_file(staged)
        # An artifact only its accelerator can run (ethos-u) is checked through the model it was made from; one
        # whose ops are compiled away (qnn-int8's context binary) is audited through the model it compiled.
        checked = open_model_file(Path(used["validated_artifact"])) if "validated_artifact" in used else model
        audited = open_model_file(Path(used.pop("audited_artifact"))) if "audited_artifact" in used else checked
    except EdgekitError as exc:
        raise ConversionError(f"{target.name}: the converter wrote an unusable file: {exc}") from exc
    audit = audit_model(audited)
    warnings: list[str] = list(used.pop("warnings", []))  # what the converter itself found wrong
    kept_for_engine = used.get("kept_float_for_engine", {})
    integer_only = spelled("--integer-only", "allow_float_ops=False")
    if kept_for_engine:
        everywhere = spelled("--int8-placement everywhere", "int8_placement='everywhere'")
        warnings.append(f"{target.name}: {', '.join(kept_for_engine)} kept in float, as its engine runs them fastest "
                        f"({next(iter(kept_for_engine.values()))}); {everywhere} quantizes them")
    unplanned = {op: count for op, count in audit.float_ops.items() if op not in kept_for_engine}
    if target.integer_only and unplanned:
        floats = ", ".join(f"{op}x{count}" for op, count in unplanned.items())
        # the output head or named ops kept float (a remedy, or the user's options) are chosen, not unquantizable
        chosen_float = used.get("kept_float_outputs") or used.get("excluded_nodes")
        if options.get("allow_float_ops") is False and not chosen_float:
            raise ConversionError(
                f"{target.name}: these ops cannot be quantized and would stay float: {floats}; {integer_only} "
                "refuses them (without it they stay float and the report lists them), or change the model"
            )
        why = ("the output head or the ops named in the options are kept float" if chosen_float
               else "the quantizer has no int8 form for them")
        strict = "" if chosen_float else f"; {integer_only} refuses such a model"
        warnings.append(f"{target.name} is not fully integer: {floats} stay float ({why}; "
                        f"{audit.describe_share()}){strict}")
    validation = None
    if run.reference is not None:
        with native_stderr_silenced():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" and the like
            validation = _validate(run, checked.path, used.get("channels_last_inputs", ()),
                                   _SimulatorReplay.of(used, run) if "simulated_outputs" in used else None)
    used.pop("simulated_outputs", None)  # a staging path as well
    used.pop("validated_artifact", None)  # a staging path, gone after this call: not for the report
    speed_reference = used.pop("speed_reference", None)
    not_integer = None
    if target.variant == "int8" and audit.mostly_float:  # engine placements never cause this (they back off)
        floats = ", ".join(f"{op}x{n}" for op, n in audit.float_ops.items())
        not_integer = (f"mostly float: only {audit.describe_share()}; a {target.name} artifact must run mostly "
                       f"in integer (float ops: {floats})")
    return _Attempt(label, extra, folder, staged, used, model, audit, validation, convert_s, warnings,
                    speed_reference, not_integer)


def _convert_one(run: _TargetRun, *, repair: bool, force: bool, check_speed: bool) -> ConversionResult:
    started = time.perf_counter()
    target, out_dir, dataset, stem, options = run.target, run.out_dir, run.job.dataset, run.job.stem, run.options
    source_info, recipe = run.job.source_info, run.job.recipe
    accept_loss, progress = run.accept_loss, run.progress
    first = _attempt(run, 0, "default", {})
    chosen, repaired = first, None
    # remedies re-quantize; a source's own scales are kept as they are, good or bad
    if first.needs_repair and repair and not accept_loss and target.remedies and not target.keeps_scales_of(run.src):
        chosen, repaired = try_remedies(target, first, lambda i, label, extra: _attempt(run, i, label, extra),
                                      run.job.dataset.calibration.feeds if run.job.dataset else (lambda: iter(())),
                                      progress, lambda a: _slower_than_float(run, a) if check_speed else None)
    validation, model, used = chosen.validation, chosen.model, chosen.used
    name = chosen.staged.name
    failures = (list(validation.failures) if validation else []) + ([chosen.not_integer] if chosen.not_integer else [])
    if repaired and repaired["chosen"] is None:
        failures += [f"the repair's remedy '{a['remedy']}' held accuracy but {a['slower_than_float']}, so it was not "
                     "kept: ship the float form" + (", or ask for that form by its own name (tflite-int16x8)"
                                                    if a["options"].get("activations") == "int16" else "")
                     for a in repaired["attempts"] if a.get("slower_than_float")]
    # a failed artifact is kept aside for inspection, never under the name a good one would have
    destination = out_dir / FAILED_FOLDER if failures else out_dir
    warnings = list(chosen.warnings) + (list(validation.notes) if validation else [])
    speed = _speed_of(run, chosen) if check_speed and not failures else None
    slower = slower_warning(target, speed, used.get("kept_float_for_engine")) if speed else None
    warnings += [w for w in (slower, bf16_slower_warning(target, speed)) if w]
    if validation and validation.collapsed and accept_loss:
        warnings.append(f"collapse accepted ({spelled('--accept-loss', 'accept_loss=True')}): "
                        + "; ".join(validation.collapsed))
    artifact_size = model.size_bytes
    report = {
        "edgekit_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": target.name,
        "status": "failed" if failures else "ok",
        "failures": failures,
        "warnings": warnings + (dataset.provenance.warnings if dataset else []),
        "source": source_info,
        "artifact": {"path": str(destination / name), "sha256": model.sha256(), "size_bytes": artifact_size,
                     "size_ratio": round(artifact_size / source_info["size_bytes"], 4)},
        "options": {k: v for k, v in used.items() if k != "engine_messages"},
        "engine_messages": used.get("engine_messages", []),
        "recipe": _artifact_recipe(recipe.to_dict() if dataset is None or dataset.provenance.recipe is None
                                   else dataset.provenance.recipe, used),
        "calibration": dataset.provenance.to_dict() if dataset else None,
        "validation": validation.to_dict() if validation else None,
        "repair": repaired,
        "audit": chosen.audit.to_dict(),
        "sparsity": _sparsity(model, used.get("for_cpu")),
        "speed_vs_float_here": speed,
        "tools": tool_versions(),
        "durations_s": {"convert": round(chosen.convert_s, 3), "total": round(time.perf_counter() - started, 3)},
    }
    report_name = f"{name}.json"
    try:
        (chosen.folder / report_name).write_text(json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        raise ConversionError(f"{target.name}: cannot write its report in '{out_dir}': {exc.strerror}") from exc
    companions = target.companion_names(stem, options)
    if failures:
        destination.mkdir(exist_ok=True)
    # an earlier run's failed copy is a record, not a result: replaced by this run's outcome either way
    for stale in [name, report_name, *companions] if not failures else []:
        (out_dir / FAILED_FOLDER / stale).unlink(missing_ok=True)
    kept_aside = force or bool(failures)
    for companion in companions:  # an IR's .bin goes first: the .xml names a complete pair
        publish(chosen.folder / companion, destination / companion, force=kept_aside)
    artifact = publish(chosen.staged, destination / name, force=kept_aside)
    report_path = publish(chosen.folder / report_name, destination / report_name, force=kept_aside)
    for warning in warnings:  # the data's own warnings were logged when it was read
        log.warning("%s", warning)
    if failures:
        log.warning("%s: %s (kept aside in %s)", target.name, "; ".join(failures), destination)
    return ConversionResult(target.name, artifact, report_path, report)


class _ChannelsLast:
    """An artifact built with NHWC inputs, fed the samples the source takes (NCHW)."""

    def __init__(self, runtime: Any, names: tuple[str, ...] | list[str]) -> None:
        from edgekit.converters._tflite_export import channels_last_feeds

        self._runtime, self._names, self.outputs = runtime, tuple(names), runtime.outputs
        self.precision, self._transpose = runtime.precision, channels_last_feeds

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return self._runtime.run(self._transpose(feeds, self._names))

    def profile_ops(self, feeds: dict[str, Any], *, runs: int) -> list[dict[str, Any]] | None:
        return self._runtime.profile_ops(self._transpose(feeds, self._names), runs=runs)


def _speed_of(run: _TargetRun, attempt: _Attempt) -> dict[str, Any] | None:
    """``_speed_here``, timed once per attempt (the repair times a remedy before it is kept)."""
    if not attempt.timed:
        attempt.speed, attempt.timed = _speed_here(run, attempt), True
    return attempt.speed


def _slower_than_float(run: _TargetRun, attempt: _Attempt) -> str | None:
    """Why a remedy that holds runs under half the float form's speed on the CPU it is built for, or None (not
    that slow, or not measurable here: built for another CPU, or an engine without a float sibling)."""
    return slower_than_float(_speed_of(run, attempt), REMEDY_SLOWER_BELOW)


def _speed_here(run: _TargetRun, attempt: _Attempt) -> dict[str, Any] | None:
    """An int8 artifact against its float sibling (the converter's float model, or the float .tflite the
    reference runs) on this machine, when it was built for this CPU (``edgekit.pipeline.speed``)."""
    target, used = run.target, attempt.used
    if target.variant not in ("int8", *WEIGHT_ONLY) or target.family not in ("tflite", "onnx", "openvino"):
        return None
    float_path = attempt.speed_reference
    reference = run.reference.path if run.reference is not None else None
    if float_path is None and target.family == "tflite" and reference and reference.suffix == ".tflite":
        float_path = reference  # Keras/SavedModel: TensorFlow's converter made no float .tflite of its own
    if float_path is None:
        return {"measured": False, "why": "no float model of this engine at hand (validation off?)"}
    sample = next(iter(_held_out(run).validation), None)
    if sample is None:
        return {"measured": False, "why": "no held-out sample to run"}
    channels_last = used.get("channels_last_inputs", ())
    adapt = (lambda r: _ChannelsLast(r, channels_last)) if channels_last else (lambda r: r)
    return speed_check(attempt.staged, Path(float_path), sample.feeds, used.get("for_cpu"), adapt)


def _sparsity(model: Any, for_cpu: str | None) -> dict[str, Any]:
    """Per-layer zeros and 2:4 patterns of the artifact, and which engine can use them on the CPU it is for.
    A fact about the file: reading it must not cost the user the artifact."""
    try:
        return weight_sparsity(model, for_cpu).to_dict()
    except (ValueError, RuntimeError, OSError) as exc:
        return {"measured": False, "why_not": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def _held_out(run: _TargetRun) -> Dataset:
    """The run's data, or synthetic inputs when none was given (flagged as such by the validation)."""
    if run.job.dataset is not None:
        return run.job.dataset
    return build_dataset(RANDOM_SOURCE, run.src.inputs, calib_size=1, validation_size=50, seed=run.job.seed)


class _SimulatorReplay:
    """What a vendor's simulator gave on the held-out samples while the converter built the artifact, as a
    runtime for validation: rknn-toolkit2's simulator runs only a model built in the same session, never the
    exported file. Samples must come in the order the converter ran them (checked by content)."""

    precision = "int8 (simulated)"

    def __init__(self, outputs: Path, names: list[str], samples: list[Any], simulated: str) -> None:
        import numpy as np

        self.simulated = simulated
        self.outputs = tuple(TensorSpec(name, (), np.dtype(np.float32)) for name in names)
        with np.load(outputs) as saved:
            self._given = [[saved[f"{i}:{j}"] for j in range(len(names))] for i in range(len(samples))]
        self._expected = [_digest(sample.feeds) for sample in samples]
        self._next = 0

    @classmethod
    def of(cls, used: dict[str, Any], run: _TargetRun) -> _SimulatorReplay:
        return cls(Path(used["simulated_outputs"]), [s.name for s in run.reference.outputs],
                   list(_held_out(run).validation), used["validated_on"])

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        index, self._next = self._next, self._next + 1
        if index >= len(self._expected) or _digest(feeds) != self._expected[index]:
            raise ConversionError("the simulator's outputs do not belong to this held-out sample (edgekit bug)")
        return {spec.name: value for spec, value in zip(self.outputs, self._given[index])}

    def __enter__(self) -> _SimulatorReplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def _digest(feeds: dict[str, Any]) -> str:
    import hashlib

    digest = hashlib.sha256()
    hash_feeds(digest, feeds)
    return digest.hexdigest()


def _validate(run: _TargetRun, staged: Path, channels_last: tuple[str, ...] | list[str] = (),
              replay: _SimulatorReplay | None = None) -> ValidationReport:
    target = run.target
    synthetic = run.job.dataset is None or run.job.dataset.provenance.synthetic
    dataset = _held_out(run)
    try:
        candidate = replay or open_runtime(staged)
    except EdgekitError as exc:
        raise ConversionError(
            f"{target.name}: the converted model does not load: {exc}".replace(str(staged.parent) + "/", "")
        ) from exc
    with candidate:
        with run.progress(f"validating {target.name}", len(dataset.validation)) as advance:
            fed = _ChannelsLast(candidate, channels_last) if channels_last else candidate
            report = validate(run.reference, fed, dataset.validation, max_drop=run.max_drop,
                              synthetic=synthetic, accept_loss=run.accept_loss, decide=run.decide, on_sample=advance)
    if candidate.simulated:
        report = replace(report, notes=(*report.notes, f"run on the {candidate.simulated}"))
    return report


def _artifact_recipe(recipe: dict[str, Any], used: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing that feeds this artifact: NHWC when its inputs were made channels-last."""
    if used.get("channels_last_inputs"):
        return {**recipe, "layout": "nhwc"}
    return recipe
