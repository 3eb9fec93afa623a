"""The ``edgekit`` command line.

Results go to stdout (``--json`` for machines), progress and errors to stderr.
An ``EdgekitError`` becomes one ``Error: ...`` line and exit code 1; usage
errors exit 2 (click's convention); a traceback only with ``--debug``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from edgekit import __version__, _progress
from edgekit._escape import visible
from edgekit.cli._common import (
    backend_option,
    bold,
    console,
    device_option,
    emit_json,
    image_feeds,
    json_option,
    npy_feeds,
    precision_option,
    shape_text,
    threads_option,
)
from edgekit.errors import EdgekitError
from edgekit.pipeline.engine_log import is_edgekit_record
from edgekit.runtimes.errors import COMMAND_LINE

_terminated = False
_main_pid: int | None = None


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM unwind as KeyboardInterrupt, so every `finally` runs and no partial artifact is left.

    Only in edgekit's own process: a child an engine forked inherits this handler, and there it ends the way
    the signal's default would instead of printing a stray traceback. Raised inside a finalizer or a gc
    callback (jax registers one), the exception is ignored: ``_ignore_interrupts`` keeps that quiet, and
    the stop flag set here makes the next progress step raise instead."""
    global _terminated
    if os.getpid() != _main_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _terminated = _terminated or signum == signal.SIGTERM
    _progress.stop_requested = True
    raise KeyboardInterrupt


def _ignore_interrupts(unraisable: Any) -> None:
    """An interrupt that landed in a finalizer or gc callback: already handled through the stop flag. Once a
    stop was asked for, finalizers failing on objects the interrupt left half-built (TensorFlow's ApiDefMap when
    SIGINT lands during its import) are its echo too, and would print a traceback after "nothing was
    written"."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt) and not _progress.stop_requested:
        sys.__unraisablehook__(unraisable)


class _Group(click.Group):
    """Turns edgekit errors into one line and exit code 1 (or a traceback with --debug), and imports each
    command defined in its own module only when it is run or listed: ``edgekit run`` on a board never loads the
    converter vocabulary ``convert``'s options are made of (click's lazily loaded subcommands)."""

    LAZY = {name: f"edgekit.cli._{name}" for name in ("convert", "demo", "optimize", "profile", "report", "setup")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            self.add_command(getattr(importlib.import_module(self.LAZY[name]), name))
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"Error: {'terminated' if _terminated else 'interrupted'}; nothing was written", err=True)
            ctx.exit(143 if _terminated else 130)
        except (EdgekitError, OSError) as exc:
            if _terminated:  # an engine may wrap the interruption raised inside its callback
                click.echo("Error: terminated; nothing was written", err=True)
                ctx.exit(143)
            if ctx.meta.get("edgekit.debug"):
                raise
            message = str(exc) if isinstance(exc, EdgekitError) else f"{exc.strerror or exc}: {exc.filename or ''}"
            click.echo(f"Error: {visible(message)}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--verbose", "-v", is_flag=True, help="Log progress and engine messages to stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Convert, run and profile neural networks on edge devices."""
    ctx.meta["edgekit.debug"] = debug
    spoken = COMMAND_LINE.set(True)  # errors name --flags, not Python keywords, until the command ends
    ctx.call_on_close(lambda: COMMAND_LINE.reset(spoken))
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(_TextFormatter("%(levelname)s %(name)s: %(message)s"))
    if not (verbose or debug):  # engines' and converters' loggers (and Python warnings) only with -v
        handler.addFilter(is_edgekit_record)
    logging.captureWarnings(True)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        handlers=[handler])


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing: while a converter's native output is silenced (file
    descriptor 2 sent to /dev/null), ``sys.stderr`` is the terminal and edgekit's own messages still reach it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _TextFormatter(logging.Formatter):
    """Log lines quote names from model files and devices: their control characters are shown, not obeyed."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return visible(super().formatMessage(record))


def _spec_table(title: str, specs: Any):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("name", "shape", "dtype", "scale", "zero point"):
        table.add_column(column)
    for s in specs:
        table.add_row(s.name, shape_text(s.shape), s.dtype.name, "" if s.scale is None else f"{s.scale:.6g}",
                      "" if s.zero_point is None else str(s.zero_point))
    return table


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@backend_option
@click.option("--isolated", is_flag=True, help="Let the engine parse the file in a limited subprocess first.")
@json_option
def inspect(model: Path, backend: str | None, isolated: bool, as_json: bool) -> None:
    """Show a model's format, I/O tensors, op types and how integer it is."""
    from edgekit.inspection import inspect_model

    info = inspect_model(model, backend=backend, isolated=isolated)
    if as_json:
        emit_json(info.to_dict())
        return
    out = console()
    audit = info.audit
    out.print(bold(info.path))
    runs_in = f"compiled for the {info.compiled_for}" if info.compiled_for else \
        f"float layers run in {info.precision}"
    out.print(f"format {info.format} · engine {info.engine} · {runs_in} · {info.size_bytes:,} bytes")
    if info.simulated:
        out.print(f"runs here on the {info.simulated}")
    out.print(f"sha256 {info.sha256}")
    out.print(_spec_table("inputs", info.inputs))
    out.print(_spec_table("outputs", info.outputs))
    ops = ", ".join(f"{name}×{count}" for name, count in sorted(audit.op_types.items(), key=lambda kv: -kv[1]))
    out.print(f"ops: {ops}")
    floats = ", ".join(f"{k}×{v}" for k, v in audit.float_ops.items()) or "none"
    io = f"I/O {','.join(audit.input_dtypes)} -> {','.join(audit.output_dtypes)}"
    if audit.compiled_for:
        out.print(f"integer: {audit.describe_share()}; {io}")
    else:
        out.print(f"integer: {audit.describe_share()} (float ops: {floats}); {io}; "
                  f"fully integer: {'yes' if audit.fully_integer else 'no'}")
    out.print(f"sparsity: {info.sparsity.describe()}")
    if info.sparsity.measured and info.sparsity.sparse_layers:
        for engine, verdict in info.sparsity.engines.items():
            out.print(f"  {engine}: {verdict}")


def _summarise(name: str, value: Any) -> dict[str, Any]:
    import numpy as np

    summary: dict[str, Any] = {"name": name, "shape": list(value.shape), "dtype": value.dtype.name}
    if value.size and value.dtype.kind in "fiu":
        summary.update(min=float(value.min()), max=float(value.max()), mean=float(value.mean()))
    flat = value.reshape(-1) if value.ndim == 1 or (value.ndim == 2 and value.shape[0] == 1) else None
    if flat is not None and 1 < flat.size and value.dtype.kind == "f":
        top = np.argsort(flat)[::-1][:5]
        summary["top5"] = [{"index": int(i), "score": float(flat[i])} for i in top]
    return summary


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="Feed an input from a .npy file.")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False),
              help="Feed an image, preprocessed with the model's stored recipe.")
@click.option("--random", "use_random", is_flag=True, help="Feed seeded random data in each input's range.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Save all outputs to a .npz file.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--raw", is_flag=True, help="Pass integer tensors through without (de)quantizing.")
@backend_option
@device_option
@threads_option
@precision_option
@json_option
def run(model: Path, inputs: tuple[str, ...], image: Path | None, use_random: bool, seed: int, output: Path | None,
        force: bool, raw: bool, backend: str | None, device: str, threads: int | None, precision: str | None,
        as_json: bool) -> None:
    """Run a model once and summarise its outputs."""
    import time

    import edgekit

    chosen = sum([bool(inputs), image is not None, use_random])
    if chosen != 1:
        raise click.UsageError("give exactly one of --input NAME=FILE.npy, --image FILE or --random")
    if output is not None:
        from edgekit._files import ensure_writable

        ensure_writable(output, force=force)
    with edgekit.load(model, backend=backend, device=device, threads=threads, precision=precision) as runtime:
        if inputs:
            feeds = npy_feeds(inputs, runtime)
        elif image is not None:
            feeds = image_feeds(image, model, runtime)
        else:
            from edgekit.profiling.profiler import random_feeds

            feeds, _ = random_feeds(runtime, seed, as_float=not raw)
        start = time.perf_counter()
        results = runtime.run(feeds, raw=raw)
        latency_ms = (time.perf_counter() - start) * 1e3
        backend_used, engine, device_used, precision_used = runtime.backend, runtime.engine, runtime.device, \
            runtime.precision
        simulated = runtime.simulated
    if output is not None:
        import numpy as np

        from edgekit._files import write_atomic

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **results)

        write_atomic(output, save, force=force)
    # a vendor simulator's time is not the device's latency: it is kept apart, under its own name
    report = {"model": str(model), "backend": backend_used, "engine": engine, "device": device_used,
              "precision": precision_used, "latency_ms": None if simulated else latency_ms,
              **({"simulated": simulated, "simulator_ms": latency_ms} if simulated else {}),
              "outputs": [_summarise(k, v) for k, v in results.items()]}
    if as_json:
        emit_json(report)
        return
    out = console()
    timing = f"{latency_ms:.2f} ms on the simulator, not the device's latency" if simulated else \
        f"{latency_ms:.2f} ms (first run, includes warm-up)"
    out.print(f"{model} · {engine} · {device_used} · {precision_used} · {timing}")
    if simulated:
        out.print(f"ran on the {simulated}")
    for summary in report["outputs"]:
        stats = (f" min {summary['min']:.4g} max {summary['max']:.4g} mean {summary['mean']:.4g}"
                 if "min" in summary else "")
        out.print(bold(summary["name"]), f"{shape_text(summary['shape'])} {summary['dtype']}{stats}")
        for rank, entry in enumerate(summary.get("top5", []), 1):
            out.print(f"  top{rank}: class {entry['index']}  {entry['score']:.4f}")
    if output is not None:
        click.echo(f"saved outputs to {output}", err=True)


@cli.command()
@json_option
def devices(as_json: bool) -> None:
    """Show this machine and what each engine can use on it."""
    from edgekit.devices import describe_engines, describe_npus, describe_system

    system, engines, npus = describe_system(), describe_engines(), describe_npus()
    if as_json:
        emit_json({"system": system.to_dict(), "engines": [e.to_dict() for e in engines],
                   "npus": [n.to_dict() for n in npus]})
        return
    from rich.table import Table
    from rich.text import Text

    out = console()
    out.print(bold(f"{system.board or 'machine'}:"), f"{system.os} · {system.arch} "
              f"(kernel {system.kernel_arch}) · {system.cpu} · {system.cores} cores · Python {system.python}")
    for warning in system.warnings:
        out.print(Text("warning:", style="yellow"), warning)
    table = Table()
    for column in ("engine", "installed", "implementation", "version", "accelerators / how to install", "NPU"):
        table.add_column(column)
    for e in engines:
        detail = ", ".join(e.accelerators) if e.installed else e.install_hint
        if e.error:
            detail = f"error: {e.error}"
        table.add_row(e.backend, "yes" if e.installed else "no", e.implementation or "", e.version or "", detail,
                      e.npu or "")
    out.print(table)
    from edgekit.runtimes.vela import vela_installed

    out.print("Arm Ethos-U (offline compile and estimates): "
              + ("vela installed" if vela_installed() else "absent: pip install 'edgekit[ethos-u]'"))
    for npu in npus:
        found = f" ({', '.join(npu.found)})" if npu.found else ""
        out.print(f"{npu.name}: present{found}" if npu.present
                  else f"{npu.name}: absent{found}; missing {'; '.join(npu.missing)}")


def _results_only_on_stdout() -> None:
    """Native libraries write to file descriptor 1 behind Python's back (LiteRT's GPU accelerator prints "INFO:
    Loaded OpenCL library with dlopen." there), which broke ``--json`` output. Descriptor 1 becomes a copy of
    stderr for the whole run, and ``sys.stdout`` — where edgekit writes its results — keeps the real stdout, so
    what a pipe or a file receives is only the result. Subprocesses inherit the same arrangement."""
    try:
        sys.stdout.flush()
        results = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # no real descriptors (an embedding host): leave them be
        return
    like = sys.stdout  # its replacement stays open for the life of the process, as sys.stdout does
    sys.stdout = open(results, "w", encoding=getattr(like, "encoding", None) or "utf-8",
                      errors=getattr(like, "errors", None) or "strict", buffering=1 if os.isatty(results) else -1)


def main() -> None:
    global _main_pid
    _main_pid = os.getpid()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.unraisablehook = _ignore_interrupts
    _results_only_on_stdout()
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
