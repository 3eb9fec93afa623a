"""The ``edgekit`` command line.

Results go to stdout (``--json`` for machines), progress and errors to stderr.
An ``EdgekitError`` becomes one ``Error: ...`` line and exit code 1; usage
errors exit 2 (click's convention); a traceback only with ``--debug``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError


class _Group(click.Group):
    """Turns edgekit errors into one line and exit code 1 (or a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            if ctx.meta.get("edgekit.debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--verbose", "-v", is_flag=True, help="Log progress and engine messages to stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Convert, run and profile neural networks on edge devices."""
    ctx.meta["edgekit.debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _console():
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
        console = Console(highlight=False, soft_wrap=True, width=160)
    return console


def _shape(shape: Any) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _spec_table(title: str, specs: Any):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("name", "shape", "dtype", "scale", "zero point"):
        table.add_column(column)
    for s in specs:
        table.add_row(s.name, _shape(s.shape), s.dtype.name, "" if s.scale is None else f"{s.scale:.6g}",
                      "" if s.zero_point is None else str(s.zero_point))
    return table


backend_option = click.option("--backend", type=click.Choice(["litert", "onnxruntime", "openvino"]),
                              help="Engine to use (default: the file format's own).")
device_option = click.option("--device", type=click.Choice(["cpu", "gpu", "npu", "auto"]), default="cpu",
                             show_default=True, help="Where to run.")
threads_option = click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@backend_option
@json_option
def inspect(model: Path, backend: str | None, as_json: bool) -> None:
    """Show a model's format, I/O tensors, op types and how integer it is."""
    from edgekit.inspection import inspect_model

    info = inspect_model(model, backend=backend)
    if as_json:
        _emit_json(info.to_dict())
        return
    console = _console()
    audit = info.audit
    console.print(f"[bold]{info.path}[/bold]")
    console.print(f"format {info.format} · engine {info.engine} · {info.size_bytes:,} bytes")
    console.print(f"sha256 {info.sha256}")
    console.print(_spec_table("inputs", info.inputs))
    console.print(_spec_table("outputs", info.outputs))
    ops = ", ".join(f"{name}×{count}" for name, count in sorted(audit.op_types.items(), key=lambda kv: -kv[1]))
    console.print(f"ops: {ops}")
    floats = ", ".join(f"{k}×{v}" for k, v in audit.float_ops.items()) or "none"
    console.print(f"integer ops: {audit.integer_ops}/{audit.compute_ops} (float: {floats}); "
                  f"I/O {','.join(audit.input_dtypes)} -> {','.join(audit.output_dtypes)}; "
                  f"fully integer: {'yes' if audit.fully_integer else 'no'}")


def _random_feeds(runtime: Any, seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runtime.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            feeds[spec.name] = rng.integers(info.min, info.max, shape, endpoint=True, dtype=spec.dtype)
        elif spec.dtype.kind == "f":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(spec.dtype)
    return feeds


def _npy_feeds(pairs: tuple[str, ...], runtime: Any) -> dict[str, Any]:
    import numpy as np

    feeds = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep:
            if len(runtime.inputs) != 1:
                raise click.BadParameter(f"'{pair}': write NAME=FILE.npy for a model with several inputs",
                                         param_hint="--input")
            name, file = runtime.inputs[0].name, pair
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EdgekitError(f"cannot read input file '{file}' for input '{name}': {exc}") from exc
    return feeds


def _image_feeds(image: Path, model: Path, runtime: Any) -> dict[str, Any]:
    from edgekit.preprocess import Recipe, load_image

    if len(runtime.inputs) != 1:
        raise EdgekitError(f"--image needs a one-input model; this one has {len(runtime.inputs)} inputs")
    spec = runtime.inputs[0]
    recipe = stored_recipe(model).for_input(spec)
    return {spec.name: load_image(str(image), recipe)}


def stored_recipe(model: Path):
    """The preprocessing recipe stored beside a converted model (its .json report), else the default."""
    from edgekit.preprocess import Recipe

    report = Path(str(model) + ".json")
    if report.is_file():
        try:
            data = json.loads(report.read_text())
            recipe = (data.get("calibration") or {}).get("recipe") or data.get("recipe")
            if recipe:
                return Recipe.from_dict(recipe)
        except (OSError, ValueError) as exc:
            raise EdgekitError(f"cannot read the recipe in '{report}': {exc}") from exc
    return Recipe()


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
@json_option
def run(model: Path, inputs: tuple[str, ...], image: Path | None, use_random: bool, seed: int, output: Path | None,
        force: bool, raw: bool, backend: str | None, device: str, threads: int | None, as_json: bool) -> None:
    """Run a model once and summarise its outputs."""
    import time

    import edgekit

    chosen = sum([bool(inputs), image is not None, use_random])
    if chosen != 1:
        raise click.UsageError("give exactly one of --input NAME=FILE.npy, --image FILE or --random")
    if output is not None:
        from edgekit._files import ensure_writable

        ensure_writable(output, force=force)
    with edgekit.load(model, backend=backend, device=device, threads=threads) as runtime:
        if inputs:
            feeds = _npy_feeds(inputs, runtime)
        elif image is not None:
            feeds = _image_feeds(image, model, runtime)
        else:
            feeds = _random_feeds(runtime, seed)
        start = time.perf_counter()
        results = runtime.run(feeds, raw=raw)
        latency_ms = (time.perf_counter() - start) * 1e3
        backend_used, engine, device_used = runtime.backend, runtime.engine, runtime.device
    if output is not None:
        import numpy as np

        from edgekit._files import write_atomic

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **results)

        write_atomic(output, save, force=force)
    report = {"model": str(model), "backend": backend_used, "engine": engine, "device": device_used,
              "latency_ms": latency_ms, "outputs": [_summarise(k, v) for k, v in results.items()]}
    if as_json:
        _emit_json(report)
        return
    console = _console()
    console.print(f"{model} · {engine} · {device_used} · {latency_ms:.2f} ms (first run, includes warm-up)")
    for out in report["outputs"]:
        stats = f" min {out['min']:.4g} max {out['max']:.4g} mean {out['mean']:.4g}" if "min" in out else ""
        console.print(f"[bold]{out['name']}[/bold] {_shape(out['shape'])} {out['dtype']}{stats}")
        for rank, entry in enumerate(out.get("top5", []), 1):
            console.print(f"  top{rank}: class {entry['index']}  {entry['score']:.4f}")
    if output is not None:
        click.echo(f"saved outputs to {output}", err=True)


@cli.command()
@json_option
def devices(as_json: bool) -> None:
    """Show this machine and what each engine can use on it."""
    from edgekit.devices import describe_engines, describe_system

    system, engines = describe_system(), describe_engines()
    if as_json:
        _emit_json({"system": system.to_dict(), "engines": [e.to_dict() for e in engines]})
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{system.board or 'machine'}[/bold]: {system.os} · {system.arch} "
                  f"(kernel {system.kernel_arch}) · {system.cpu} · {system.cores} cores · Python {system.python}")
    for warning in system.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    table = Table()
    for column in ("engine", "installed", "implementation", "version", "accelerators / how to install"):
        table.add_column(column)
    for e in engines:
        detail = ", ".join(e.accelerators) if e.installed else e.install_hint
        if e.error:
            detail = f"error: {e.error}"
        table.add_row(e.backend, "yes" if e.installed else "no", e.implementation or "", e.version or "", detail)
    console.print(table)


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())


def _input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = _parse_shape(dims)
        except ValueError:
            raise click.BadParameter(f"'{value}': write NAME:1,224,224,3", param_hint="--input-shape") from None
    return shapes


def _pair(text: str | None, flag: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
        return height, width
    except ValueError:
        raise click.BadParameter(f"'{text}': write HEIGHTxWIDTH, e.g. 224x224", param_hint=flag) from None


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}': write comma-separated numbers, e.g. 0.485,0.456,0.406",
                                 param_hint=flag) from None


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--to", "targets", required=True, metavar="T1[,T2...]",
              help="Targets, e.g. tflite-int8,tflite-fp32 (see the README's conversions matrix).")
@click.option("--calib", metavar="PATH|random", help="Calibration data: image folder, .npy, .npz, or 'random'.")
@click.option("--calib-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Calibration samples (more are held out for validation).")
@click.option("--val-size", type=click.IntRange(min=1), help="Held-out validation samples [default: max(50, N/4)].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration shuffle.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:1,224,224,3",
              help="Fix an input's dynamic dimensions.")
@click.option("--size", help="Resize images to HEIGHTxWIDTH [default: the model's input size].")
@click.option("--crop", help="Center-crop HEIGHTxWIDTH after resizing.")
@click.option("--scale", type=float, default=1 / 255, show_default="1/255", help="Multiply pixels by this.")
@click.option("--mean", help="Per-channel mean to subtract after scaling, e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Per-channel std to divide by, e.g. 0.229,0.224,0.225.")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), default="rgb", show_default=True)
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), help="Image layout [default: from the input shape].")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where artifacts and their .json reports go.")
@click.option("--max-drop", type=float, help="Fail (exit 1) when accuracy drops more than this many points.")
@click.option("--no-validate", is_flag=True, help="Skip comparing each artifact with the float original.")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts and reports.")
@click.option("--io", type=click.Choice(["int8", "uint8", "float", "int16"]),
              help="TFLite: I/O type of integer targets [default: int8 for tflite-int8, float for tflite-int16x8].")
@click.option("--allow-float-ops", is_flag=True, default=None, help="TFLite: keep ops that cannot be quantized in float.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              help="ONNX int8: range calibration [default: minmax].")
@click.option("--per-channel/--per-tensor", default=None, help="ONNX int8: weight quantization granularity "
              "[default: per-channel].")
@click.option("--activation-type", type=click.Choice(["int8", "uint8"]),
              help="ONNX int8: activation type [default: from --for].")
@click.option("--weight-type", type=click.Choice(["int8", "uint8"]), help="ONNX int8: weight type [default: int8].")
@click.option("--symmetric", is_flag=True, default=None, help="ONNX int8: symmetric activation ranges.")
@click.option("--exclude-nodes", help="ONNX int8: comma-separated node names to keep in float.")
@click.option("--exclude-op-types", help="ONNX int8: comma-separated op types to keep in float.")
@click.option("--keep-output-float", is_flag=True, default=None,
              help="ONNX int8: keep the nodes producing the model's outputs in float (detector heads).")
@click.option("--onnx-format", type=click.Choice(["qdq", "qoperator"]),
              help="ONNX int8: QDQ (portable, default) or QOperator (com.microsoft ops, ONNX Runtime only).")
@click.option("--for", "for_cpu", type=click.Choice(["x86", "arm64", "auto"]),
              help="ONNX int8: the CPU the model is for; picks types and reduce_range [default: this machine].")
@click.option("--reduce-range/--full-range", default=None, help="ONNX int8: 7-bit weights (x86 without VNNI) "
              "[default: from --for].")
@click.option("--opset", type=click.IntRange(min=7), help="ONNX: opset of the export [default: 17].")
@click.option("--preset", type=click.Choice(["performance", "mixed"]),
              help="OpenVINO int8: NNCF preset [default: performance; mixed = asymmetric activations].")
@click.option("--model-type", type=click.Choice(["transformer"]), help="OpenVINO int8: NNCF model type.")
@click.option("--ignored-names", help="OpenVINO int8: comma-separated layer names to keep in float.")
@click.option("--ignored-types", help="OpenVINO int8: comma-separated layer types to keep in float.")
@click.option("--ignored-patterns", help="OpenVINO int8: comma-separated name regexes to keep in float.")
@click.option("--fast-bias-correction/--bias-correction", default=None,
              help="OpenVINO int8: NNCF's fast bias correction [default] or the slower full one.")
@json_option
def convert(source: Path, targets: str, calib: str | None, calib_size: int, val_size: int | None, seed: int,
            input_shapes: tuple[str, ...], size: str | None, crop: str | None, scale: float, mean: str | None,
            std: str | None, color: str, layout: str | None, output_dir: Path, max_drop: float | None,
            no_validate: bool, force: bool, as_json: bool, exclude_nodes: str | None, exclude_op_types: str | None,
            ignored_names: str | None, ignored_types: str | None, ignored_patterns: str | None,
            **options: Any) -> None:
    """Convert a Keras/SavedModel/ONNX/TFLite model to edge targets, validate and report each."""
    from edgekit._progress import rich_progress
    from edgekit.conversion import convert as run_conversion
    from edgekit.preprocess import Recipe

    if options.get("io") == "uint8":
        click.echo("warning: uint8 I/O runs slower than int8 on XNNPACK and 32-bit ARM; prefer int8 unless the "
                   "device needs uint8", err=True)
    recipe = Recipe(size=_pair(size, "--size"), crop=_pair(crop, "--crop"), scale=scale,
                    mean=_floats(mean, "--mean"), std=_floats(std, "--std"), color=color, layout=layout)
    with rich_progress() as progress:
        results = run_conversion(
            source, targets, calibration=calib, output_dir=output_dir, input_shapes=_input_shapes(input_shapes),
            recipe=recipe, calib_size=calib_size, validation_size=val_size, seed=seed, max_drop=max_drop,
            validate_outputs=not no_validate, force=force, progress=progress,
            exclude_nodes=_names(exclude_nodes), exclude_op_types=_names(exclude_op_types),
            ignored_names=_names(ignored_names), ignored_types=_names(ignored_types),
            ignored_patterns=_names(ignored_patterns), **options)
    if as_json:
        _emit_json([r.report for r in results])
    else:
        _print_conversions(results)
    failed = [r for r in results if not r.passed]
    if failed:
        reasons = "; ".join(f"{r.target}: {', '.join(r.report['failures'])}" for r in failed)
        click.echo(f"Error: {reasons} (artifacts kept, marked failed in their reports)", err=True)
        sys.exit(1)


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def _print_conversions(results: list) -> None:
    from rich.table import Table

    table = Table()
    for column in ("target", "artifact", "size", "vs source", "accuracy", "drop", "top-1 agree", "integer", "status"):
        table.add_column(column)
    for r in results:
        report, v = r.report, r.report.get("validation") or {}
        accuracy = "" if v.get("accuracy_converted") is None else \
            f"{v['accuracy_converted']:.1f}% (float {v['accuracy_float']:.1f}%)"
        drop = "" if v.get("drop") is None else f"{v['drop']:.2f}"
        agree = "" if v.get("top1_agreement") is None else f"{v['top1_agreement']:.1f}%"
        audit = report["audit"]
        integer = f"{audit['integer_ops']}/{audit['compute_ops']}" + (" full" if audit["fully_integer"] else "")
        table.add_row(r.target, r.artifact.name, f"{report['artifact']['size_bytes']:,}",
                      f"{report['artifact']['size_ratio']:.2f}x", accuracy, drop, agree, integer,
                      report["status"] + (" (synthetic data)" if v.get("synthetic") else ""))
    _console().print(table)


def main() -> None:
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
