"""``edgekit profile``: benchmark one or more models, compare them, save reports, enforce budgets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgekit._files import ensure_writable
from edgekit.cli._common import (
    backend_option,
    console,
    device_option,
    emit_json,
    image_feeds,
    json_option,
    npy_feeds,
    parse_input_shapes,
    precision_option,
)
from edgekit.runtimes import GRAPH_OPTIMIZATIONS
from edgekit.runtimes.vela import NPU_CONFIGS


def _thread_counts(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"'{text}': write a count or a list like 1,2,4", param_hint="--threads") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"'{text}': thread counts must be at least 1", param_hint="--threads")
    return counts


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--warmup-runs", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--warmup-seconds", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Steady state: at least this many runs...")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="...and at least this long...")
@click.option("--max-seconds", type=click.FloatRange(min=0.001), default=150.0, show_default=True,
              help="...but never longer than this.")
@click.option("--threads", "threads_text", metavar="N[,N...]", help="Threads; a list sweeps them (1,2,4).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Requests in flight (OpenVINO async requests, threads elsewhere): throughput mode.")
@click.option("--per-op", is_flag=True, help="Time each op where the engine exposes it.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Ops shown with --per-op.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:1,224,224,3",
              help="Shape of a dynamic input's random data.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="Real data for an input.")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False),
              help="Real data: an image, preprocessed with the model's stored recipe.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random data.")
@click.option("--estimate", "estimates", multiple=True, type=click.Choice(list(NPU_CONFIGS)),
              help="Add an Arm Ethos-U estimate (Vela) for a full-int8 .tflite; may repeat.")
@click.option("--estimate-only", is_flag=True, help="Only the --estimate rows: do not run the model here.")
@click.option("--remote", "remotes", multiple=True, metavar="USER@HOST[:PORT]",
              help="Profile on this device over SSH instead of here; may repeat (devices run in parallel).")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="SSH private key for --remote.")
@click.option("--python", "remote_python", default="python3", show_default=True,
              help="The device's Python that has edgekit (e.g. ~/edgekit/bin/python).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust a device's host key on first connection only.")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file for --remote [default: ssh's own].")
@click.option("--ssh-timeout", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Seconds allowed for each remote step.")
@backend_option
@device_option
@precision_option
@click.option("--graph-optimization", type=click.Choice(list(GRAPH_OPTIMIZATIONS)),
              help="ONNX Runtime: graph optimization level [default: ONNX Runtime's own, all].")
@click.option("--save", "save_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report: .json, .csv, .md or .html (plots); may repeat.")
@click.option("--force", is_flag=True, help="Let --save overwrite an existing file.")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A saved .json report to compare p50 latency with.")
@click.option("--max-regression", default="10%", show_default=True, help="Allowed p50 regression vs --baseline.")
@click.option("--fail-if", "conditions", multiple=True, metavar="METRIC>VALUE",
              help="Exit 1 when a report breaks it, e.g. p90_ms>25 or throughput_ips<100.")
@json_option
def profile(models: tuple[Path, ...], warmup_runs: int, warmup_seconds: float, runs: int, min_seconds: float,
            max_seconds: float, threads_text: str | None, concurrency: int, per_op: bool, top: int,
            input_shapes: tuple[str, ...], inputs: tuple[str, ...], image: Path | None, seed: int,
            estimates: tuple[str, ...], estimate_only: bool, remotes: tuple[str, ...], identity: Path | None,
            remote_python: str, accept_new_host_key: bool, known_hosts: Path | None, ssh_timeout: float,
            backend: str | None, device: str, precision: str | None, graph_optimization: str | None,
            save_paths: tuple[Path, ...], force: bool, baseline: Path | None, max_regression: str,
            conditions: tuple[str, ...], as_json: bool) -> None:
    """Benchmark MODEL(s): latency percentiles, throughput, memory, per-op time and device state."""
    from edgekit._api import load
    from edgekit.profiling import output as profile_output
    from edgekit.profiling.profiler import profile as run_profile

    if inputs and image:
        raise click.UsageError("give --input or --image, not both")
    regression = profile_output.parse_percent(max_regression)
    for condition in conditions:  # refuse a malformed budget before minutes of measuring
        profile_output.check_condition([], condition)
    for path in save_paths:
        if path.suffix.lower() not in profile_output.SAVE_FORMATS:
            raise click.BadParameter(f"'{path}': use one of {', '.join(profile_output.SAVE_FORMATS)}",
                                     param_hint="--save")
        ensure_writable(path, force=force)  # before minutes of measuring, not after
    if estimate_only and not estimates:
        raise click.UsageError("--estimate-only needs at least one --estimate NPU")
    shapes = parse_input_shapes(input_shapes)
    reports = []
    if remotes:
        from edgekit.profiling.remote import SshOptions, parse_remote

        parsed = [parse_remote(r) for r in remotes]
        ssh = SshOptions(identity=identity, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                         timeout_s=ssh_timeout, python=remote_python)
        forwarded, files = _forwarded_args(warmup_runs, warmup_seconds, runs, min_seconds, max_seconds, threads_text,
                                           concurrency, per_op, top, input_shapes, inputs, image, seed, backend,
                                           device, precision, graph_optimization)
        reports = _run_remotely(models, parsed, ssh, forwarded, files)
        models = ()  # nothing runs here
    for model in models:
        for npu in estimates:
            from edgekit.profiling.profiler import estimate

            click.echo(f"estimating {model} on {npu} (Vela)...", err=True)
            reports.append(estimate(model, npu).to_dict())
        for threads in [] if estimate_only else _thread_counts(threads_text):
            click.echo(f"profiling {model} (threads {threads or 'default'})...", err=True)
            engine_options = {"graph_optimization": graph_optimization} if graph_optimization else {}
            with load(model, backend=backend, device=device, threads=threads, precision=precision,
                      **engine_options) as runtime:
                feeds = npy_feeds(inputs, runtime) if inputs else image_feeds(image, model, runtime) if image else None
            report = run_profile(model, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds, runs=runs,
                                 min_seconds=min_seconds, max_seconds=max_seconds, threads=threads, device=device,
                                 backend=backend, inputs=feeds, input_shapes=shapes, per_op=per_op,
                                 concurrency=concurrency, seed=seed, precision=precision)
            reports.append(report.to_dict())
    for path in save_paths:
        profile_output.save(reports, path, force=force)
        click.echo(f"saved {path}", err=True)
    if as_json:
        emit_json([_concise(r) for r in reports] if len(reports) > 1 else _concise(reports[0]))
    else:
        _print(reports, top)
    failure = profile_output.check_regression(reports, baseline, regression) if baseline else None
    for condition in conditions:
        failure = failure or profile_output.check_condition(reports, condition)
    if failure:
        click.echo(f"Error: {failure}", err=True)
        sys.exit(1)


def _forwarded_args(warmup_runs: int, warmup_seconds: float, runs: int, min_seconds: float, max_seconds: float,
                    threads_text: str | None, concurrency: int, per_op: bool, top: int, input_shapes: tuple[str, ...],
                    inputs: tuple[str, ...], image: Path | None, seed: int, backend: str | None,
                    device: str, precision: str | None = None,
                    graph_optimization: str | None = None) -> tuple[list[str], list[Path]]:
    """The local flags as arguments for the device's `edgekit profile`, and the files they need copied."""
    args = ["--warmup-runs", str(warmup_runs), "--warmup-seconds", str(warmup_seconds), "--runs", str(runs),
            "--min-seconds", str(min_seconds), "--max-seconds", str(max_seconds), "--concurrency", str(concurrency),
            "--top", str(top), "--seed", str(seed), "--device", device]
    args += ["--threads", threads_text] if threads_text else []
    args += ["--per-op"] if per_op else []
    args += ["--backend", backend] if backend else []
    args += ["--precision", precision] if precision else []
    args += ["--graph-optimization", graph_optimization] if graph_optimization else []
    for shape in input_shapes:
        args += ["--input-shape", shape]
    files = []
    for pair in inputs:  # the .npy files travel with the model; the device sees their bare names
        name, sep, file = pair.rpartition("=")
        files.append(Path(file))
        args += ["--input", f"{name}{sep}{Path(file).name}"]
    if image is not None:
        files.append(image)
        args += ["--image", image.name]
    return args, files


def _run_remotely(models: tuple[Path, ...], remotes: list, ssh: Any, args: list[str], files: list[Path]) -> list:
    """Every model on every device; the devices work in parallel, each model in turn."""
    from concurrent.futures import ThreadPoolExecutor

    from edgekit.profiling.remote import profile_remote

    def on_device(remote: Any) -> list[dict[str, Any]]:
        results = []
        for model in models:
            click.echo(f"profiling {model} on {remote}...", err=True)
            report = profile_remote(model, remote, ssh, args, files)
            results += report if isinstance(report, list) else [report]
        return results

    with ThreadPoolExecutor(max_workers=len(remotes)) as pool:
        per_device = list(pool.map(on_device, remotes))
    return [report for device in per_device for report in device]


def _concise(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its per-run samples (those go to --save files)."""
    return {k: v for k, v in report.items() if k != "latencies_ms"}


def _print(reports: list[dict[str, Any]], top: int) -> None:
    from rich.table import Table

    from edgekit.profiling.output import COMPARISON_HEADER, comparison_rows

    out = console()
    table = Table(title="edgekit profile", title_justify="left")
    for column in COMPARISON_HEADER:
        table.add_column(column)
    for row in comparison_rows(reports):
        table.add_row(*row)
    out.print(table)
    system = reports[0]["system"]
    temps = system["temperatures"]
    hottest = max(temps["after_c"].values()) if temps["after_c"] else None
    out.print(f"device: {system.get('board') or system['cpu']} · {system['arch']} · {system['cores']} cores · "
              f"governor {system.get('governor') or 'unknown'}"
              + (f" · {hottest:.1f} °C after" if hottest is not None else ""))
    for report in reports:
        energy = report.get("energy") or {}
        if energy.get("energy_mj_per_inference") is None:
            out.print(f"energy: {energy.get('note', 'not measured')}")
            break  # one device: the same reason for every model
        out.print(f"energy: {Path(report['model']).name}: {energy['energy_mj_per_inference']:.3f} mJ/inference, "
                  f"{energy['power_w']['mean']:.2f} W mean ({energy['power_w']['idle']:.2f} W idle, "
                  f"{energy['power_w']['max']:.2f} W max) from {energy['source']}")
    for report in reports:
        if not report["per_op"] and "not available" in report["per_op_note"]:
            out.print(f"per-op: {Path(report['model']).name}: {report['per_op_note']}")
        elif report["per_op"]:
            ops = Table(title=f"per-op: {Path(report['model']).name} ({report['per_op_note']})", title_justify="left")
            for column in ("op", "type", "ms", "%", "count"):
                ops.add_column(column)
            for op in report["per_op"][:top]:
                ops.add_row(op["name"], op["type"], f"{op['total_ms']:.4f}", f"{op['percent']:.1f}", str(op["count"]))
            out.print(ops)
