"""``edgekit report``: any saved conversion and profile reports as one HTML page or a markdown table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.cli._common import console


@click.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="report.html (self-contained page with plots) or report.md (compact table).")
@click.option("--title", default="edgekit report", show_default=True)
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False),
              help="Markdown: profile reports to compare p50 latency with (matched by file name).")
@click.option("--max-regression", metavar="PCT", help="Markdown with --baseline: exit 1 when a p50 rises more, "
              "e.g. 10%.")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
def report(reports: tuple[Path, ...], output: Path, title: str, baseline: Path | None, max_regression: str | None,
           force: bool) -> None:
    """Render conversion reports (MODEL.json beside each artifact) and profile reports (--save x.json) into one
    report; rows are joined per model file."""
    from edgekit.profiling.output import parse_percent
    from edgekit.report import load_reports, write_report

    loaded = load_reports(list(reports))
    limit = parse_percent(max_regression) if max_regression else None
    if output.suffix.lower() == ".md":
        options = {"baseline": load_reports([baseline]) if baseline else None, "max_regression": limit}
    elif baseline or max_regression:
        raise click.UsageError("--baseline and --max-regression apply to a markdown (.md) report")
    else:
        options = {"title": title}
    written = write_report(loaded, output, force=force, **options)
    console().print(f"wrote {written}")
    if limit is not None and "**regressed**" in written.read_text():
        click.echo(f"Error: p50 latency regressed more than {max_regression} against {baseline}", err=True)
        sys.exit(1)
