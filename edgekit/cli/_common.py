"""Helpers shared by the CLI's commands: output, common options, input files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgekit._escape import terminal_console, visible
from edgekit.errors import EdgekitError
from edgekit.runtimes import BACKENDS, DEVICES, PRECISIONS


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def console():
    """stdout for results; names from model files are printed as text (``terminal_console``)."""
    console = terminal_console(soft_wrap=True)
    if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
        console = terminal_console(soft_wrap=True, width=160)
    return console


def bold(text: object) -> Any:
    from rich.text import Text

    return Text(visible(text), style="bold")


def shape_text(shape: Any) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


backend_option = click.option("--backend", type=click.Choice(list(BACKENDS)),
                              help="Engine to use (default: the file format's own).")
device_option = click.option("--device", type=click.Choice(list(DEVICES)), default="cpu",
                             show_default=True, help="Where to run.")
threads_option = click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
precision_option = click.option("--precision", type=click.Choice(list(PRECISIONS)),
                                help="Precision float layers run in: an OpenVINO hint; on LiteRT f16 forces "
                                     "XNNPACK's fp16 arithmetic; ONNX Runtime runs f32 [default: auto, the engine's "
                                     "own choice].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``--input-shape NAME:1,224,224,3`` values (convert, optimize, profile) as ``{name: shape}``."""
    shapes = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise click.BadParameter(f"'{value}': write NAME:1,224,224,3", param_hint="--input-shape") from None
    return shapes


def stored_recipe(model: Path):
    """The preprocessing recipe stored beside a converted model (its .json report), else the default."""
    from edgekit.pipeline.preprocess import Recipe
    from edgekit.report.schema import MAX_REPORT_BYTES, RECIPE, check

    report = Path(str(model) + ".json")
    if report.is_file():  # it travels with the model: untrusted like the model
        try:
            with open(report, "rb") as handle:
                data = json.loads(handle.read(MAX_REPORT_BYTES))
        except (OSError, ValueError, RecursionError) as exc:
            raise EdgekitError(f"cannot read the recipe in '{report}': {str(exc)[:160]}") from None
        calibration = data.get("calibration") if isinstance(data, dict) else None
        recipe = (calibration.get("recipe") if isinstance(calibration, dict) else None) or \
            (data.get("recipe") if isinstance(data, dict) else None)
        if recipe:
            check(recipe, RECIPE, f"the recipe in '{report}'")
            return Recipe.from_dict(recipe)
    return Recipe()


def npy_feeds(pairs: tuple[str, ...], runtime: Any) -> dict[str, Any]:
    """``--input NAME=FILE.npy`` values as feeds (a bare FILE.npy for a one-input model)."""
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


def image_feeds(image: Path, model: Path, runtime: Any) -> dict[str, Any]:
    from edgekit.pipeline.preprocess import load_image

    if len(runtime.inputs) != 1:
        raise EdgekitError(f"--image needs a one-input model; this one has {len(runtime.inputs)} inputs")
    spec = runtime.inputs[0]
    recipe = stored_recipe(model).for_input(spec)
    return {spec.name: load_image(str(image), recipe)}
