"""Reports people look at: one self-contained HTML page (and a compact markdown table) for conversion reports,
profile reports, or both joined per artifact. Used by ``edgekit report``, ``profile --save``, ``convert --html``
and the demo.

Device-safe: HTML plots need matplotlib (the ``report`` extra); markdown needs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.report.artifacts import Artifact, collect
from edgekit.report.schema import read_reports
from edgekit.runtimes.errors import EdgekitError

__all__ = ["Artifact", "collect", "load_reports", "render_html", "render_markdown", "write_report"]


def load_reports(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every report in these JSON files (a file may hold one report or a list of them), each checked against
    its schema (``edgekit.report.schema``)."""
    return [report for path in paths for report in read_reports(Path(path))]


def render_html(reports: list[dict[str, Any]], *, title: str = "edgekit report") -> str:
    from edgekit.report.html import render

    return render(collect(reports), title=title)


def render_markdown(reports: list[dict[str, Any]], *, baseline: list[dict[str, Any]] | None = None,
                    max_regression: float | None = None) -> str:
    from edgekit.report.markdown import render

    return render(collect(reports), baseline=collect(baseline) if baseline else None, max_regression=max_regression)


def write_report(reports: list[dict[str, Any]], path: Path, *, force: bool = True, **options: Any) -> Path:
    """Render to ``path`` by its suffix (.html or .md), atomically."""
    from edgekit._files import write_atomic

    suffix = path.suffix.lower()
    if suffix not in (".html", ".md"):
        raise EdgekitError(f"'{path}': a report is .html or .md")
    text = render_html(reports, **options) if suffix == ".html" else render_markdown(reports, **options)
    return write_atomic(path, lambda tmp: tmp.write_text(text), force=force)
