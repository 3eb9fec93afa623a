"""``edgekit optimize``: the fastest artifact within an accuracy budget, from the command line."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import click

from edgekit.cli._common import console, emit_json, json_option, parse_input_shapes
from edgekit.cli._convert import data_options, recipe_from


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match:
        raise click.BadParameter(f"'{text}': write a duration like 90s, 30m or 2h", param_hint="--timeout")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@data_options
@click.option("--val", type=click.Path(path_type=Path), help="Labeled validation data (image folder with class "
              "sub-folders): the drop is then in accuracy points [default: the part of --calib held out].")
@click.option("--budget", type=float, default=1.0, show_default=True,
              help="Largest accuracy drop allowed (points with labels, else (1 - cosine) x 100).")
@click.option("--require-bound", is_flag=True, help="Hold the budget on the held-out drop's upper 95 % confidence "
              "bound, not the measured drop (the bound is shown either way, with the samples that would prove it).")
@click.option("--cosine", type=float, help="Judge by cosine similarity with the float model: at least this much.")
@click.option("--formats", default="tflite,onnx,openvino", show_default=True, help="Formats to search.")
@click.option("--trials", type=click.IntRange(min=1), default=30, show_default=True,
              help="Trials the study ends with (a rerun continues up to this count).")
@click.option("--timeout", "timeout_text", metavar="DURATION", help="Stop starting trials after this (90s, 30m, 2h).")
@click.option("--storage", metavar="URL", envvar="EDGEKIT_STORAGE", show_envvar=True,
              help="Optuna storage, e.g. postgresql://user@host/db to share the study (a URL with a password is "
              "better given in the environment variable than in argv) [default: sqlite in -o].")
@click.option("--study", "study_name", help="Study name [default: the model's stem and a digest of the settings].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine (needs a server --storage).")
@click.option("--worker", "as_worker", is_flag=True, help="Join the study --study in --storage as a worker only.")
@click.option("--max-kept-float", type=click.IntRange(min=0), default=8, show_default=True,
              help="Most layers kept in float, by sensitivity rank.")
@click.option("--settle-rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved re-measurements of the front and the baselines at the end.")
@click.option("--search-seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option("--remote", metavar="USER@HOST[:PORT]", help="Measure latency on this device over SSH.")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="SSH private key for --remote.")
@click.option("--python", "remote_python", default="python3", show_default=True,
              help="The device's Python that has edgekit.")
@click.option("--accept-new-host-key", is_flag=True, help="Trust a device's host key on first connection only.")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False), help="known_hosts file for --remote.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("optimize-out"),
              show_default=True, help="Study, cache, trial table, report and the chosen artifact.")
@json_option
def optimize(model: Path | None, calib: str | None, calib_size: int, val_size: int | None, seed: int,
             input_shapes: tuple[str, ...], size: str | None, crop: str | None, scale: float, mean: str | None,
             std: str | None, color: str, layout: str | None, name: str | None, trust_pickle: bool,
             val: Path | None, budget: float, require_bound: bool, cosine: float | None, formats: str, trials: int,
             timeout_text: str | None, storage: str | None, study_name: str | None, workers: int, as_worker: bool,
             max_kept_float: int, settle_rounds: int, search_seed: int, remote: str | None, identity: Path | None,
             remote_python: str, accept_new_host_key: bool, known_hosts: Path | None, output_dir: Path,
             as_json: bool) -> None:
    """Find the fastest form of MODEL within an accuracy budget: search formats, precisions, quantization and
    runtime options with Optuna, measuring latency on the device."""
    from edgekit.optimizing.study import optimize as run_optimize
    from edgekit.optimizing.study import run_worker, trial_log

    trial_log.setLevel(logging.INFO)  # a search takes minutes: one line per trial on stderr

    ssh = {"identity": identity, "known_hosts": known_hosts, "accept_new_host_key": accept_new_host_key,
           "python": remote_python}
    if as_worker:  # the study says what to search; trust (pickles, SSH) comes only from these flags
        if not (storage and study_name):
            raise click.UsageError("--worker needs --storage URL and --study NAME of a study already started")
        evaluated = run_worker(storage, study_name, output_dir, trust_pickle=trust_pickle, ssh=ssh)
        click.echo(f"worker evaluated {evaluated} trial(s) of study '{study_name}'", err=True)
        return
    if model is None or calib is None:
        raise click.UsageError("give MODEL and --calib DATA (or --worker --storage URL --study NAME)")
    try:
        result = run_optimize(
            model, calibration=calib, output_dir=output_dir, val=val, budget=budget, cosine=cosine,
            formats=formats.split(","), trials=trials, timeout_s=_seconds(timeout_text), storage=storage,
            study=study_name, workers=workers, remote=remote, ssh=ssh if remote else None,
            input_shapes=parse_input_shapes(input_shapes),
            recipe=recipe_from(size, crop, scale, mean, std, color, layout), calib_size=calib_size,
            validation_size=val_size, seed=seed, name=name, trust_pickle=trust_pickle, max_kept_float=max_kept_float,
            settle_rounds=settle_rounds, search_seed=search_seed, require_bound=require_bound)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished trials are kept in the study; run the same command again to continue "
                   f"({output_dir})", err=True)
        raise
    if as_json:
        emit_json(result.to_dict())
    else:
        _print(result)
    if result.best is None:
        click.echo(f"Error: {result.why_none}; raise --budget, add --formats or --trials", err=True)
        raise SystemExit(1)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _print(result: Any) -> None:
    from rich.table import Table

    from edgekit.optimizing.space import Candidate

    table = Table(title=f"Pareto front and baselines ({len(result.trials)} trials, {result.trials_run_now} run now)")
    for column in ("trial", "point", "p50 ms", "± noise", "search drop", "held-out drop", "95% bound", "size",
                   "verdict"):
        table.add_column(column)
    for p in result.shown:
        table.add_row(str(p.trial), Candidate.from_dict(p.candidate).describe(), f"{p.latency_ms:.4f}",
                      f"{p.noise_ms or 0:.4f}", f"{p.drop:.2f}", _number(p.heldout_drop),
                      _number(p.heldout_drop_ucb), f"{p.size_bytes:,}",
                      " · ".join(filter(None, [p.verdict, p.baseline if p.verdict != "chosen" else ""])))
    out = console()
    out.print(table)
    judged = "the held-out drop's 95 % bound (--require-bound)" if result.require_bound else \
        "the measured held-out drop (--require-bound judges its 95 % bound)"
    out.print(f"budget {result.budget:g} {result.basis}, judged on {judged}")
    best = result.best
    if best:
        proof = ("" if best.heldout_drop_ucb is None or best.heldout_drop_ucb <= result.budget else
                 f"; its bound {best.heldout_drop_ucb:.2f} exceeds the budget with {best.heldout_samples} held-out "
                 f"samples" + (f": about {best.samples_to_prove} would prove it" if best.samples_to_prove else ""))
        out.print(f"chosen: {best.artifact} ({best.latency_ms:.4f} ms, held-out drop {_number(best.heldout_drop)} "
                  f"{result.basis}{proof})")
        out.print(f"reproduce: {best.command}")
    out.print(f"report: {result.report_path}")
