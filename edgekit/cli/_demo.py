"""``edgekit demo``: convert, validate and profile the bundled digits MobileNet in one command."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli._common import console, emit_json, json_option


@click.command()
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("edgekit-demo"),
              show_default=True, help="Where the models and the report go.")
@click.option("--sample", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A folder with digits_mobilenet.keras and images/ [default: the bundled samples/digits].")
@click.option("--profile-seconds", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Steady-state seconds per artifact.")
@click.option("--force", is_flag=True, help="Write into --output-dir even if it holds other files.")
@json_option
def demo(output_dir: Path, sample: Path | None, profile_seconds: float, force: bool, as_json: bool) -> None:
    """Convert the bundled digits MobileNet to TFLite/ONNX/OpenVINO int8 and float, validate and profile each."""
    from rich.table import Table

    from edgekit._progress import rich_progress
    from edgekit.demo import HEADER, TITLE, cpu_notes, run_demo, table_cells

    with rich_progress() as progress:
        rows, files = run_demo(output_dir, sample=sample, force=force, progress=progress,
                               say=lambda text: click.echo(text, err=True), profile_seconds=profile_seconds)
    if as_json:
        emit_json({"rows": [r.to_dict() for r in rows], "reports": {k: str(v) for k, v in files.items()}})
        return
    table = Table(title=f"{TITLE}: accuracy on 100 held-out labeled images", title_justify="left")
    for column in HEADER:
        table.add_column(column)
    for row in rows:
        table.add_row(*table_cells(row))
    out = console()
    out.print(table)
    for note in cpu_notes(rows):
        out.print(note)
    out.print(f"full report: {files['md']}, {files['html']} (plots), {files['json']}; "
              f"models in {output_dir / 'models'}")
