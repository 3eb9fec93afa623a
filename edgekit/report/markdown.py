"""A compact markdown table for pull-request comments: one line per artifact, with the regression verdict."""

from __future__ import annotations

from edgekit._escape import markdown_code, markdown_text
from edgekit.report.artifacts import Artifact


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(rows: list[Artifact], *, baseline: list[Artifact] | None = None,
           max_regression: float | None = None) -> str:
    """With a baseline, each row compares its p50 with the baseline row of the same file name; a rise above
    ``max_regression`` (a fraction) is "regressed"."""
    before = {r.label: r.latency("p50") for r in baseline or []}
    header = ["artifact", "p50 ms", "size KB", "drop", "energy mJ", "status"]
    if baseline is not None:
        header[2:2] = ["baseline ms", "change"]
        header.append("verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    regressions = 0
    for row in rows:
        p50 = row.latency("p50")
        cells = [markdown_code(row.label), _fmt(p50, 3),
                 _fmt(None if row.size_bytes is None else row.size_bytes / 1024, 1), _fmt(row.drop, 2),
                 _fmt(row.energy_mj, 3), markdown_text(row.status)]
        if baseline is not None:
            old = before.get(row.label)
            change = (p50 - old) / old if p50 is not None and old else None
            regressed = change is not None and max_regression is not None and change > max_regression
            regressions += regressed
            verdict = "no baseline" if old is None else ("**regressed**" if regressed else "ok")
            cells[2:2] = [_fmt(old, 3), "–" if change is None else f"{change:+.1%}"]
            cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    if baseline is not None and max_regression is not None:
        lines += ["", f"{regressions} regression(s) over {max_regression:.0%} in p50 latency."]
    return "\n".join(lines) + "\n"
