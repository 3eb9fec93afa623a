"""Profile reports as files (json, csv, md, html with plots) and as CI budgets.

matplotlib is needed only for the HTML plots (``pip install 'edgekit[report]'``);
everything else works on a bare device install.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from edgekit._escape import markdown_code, markdown_text
from edgekit._files import write_atomic
from edgekit.runtimes.errors import EdgekitError

SAVE_FORMATS = (".json", ".csv", ".md", ".html")
METRICS = {
    "mean_ms": ("latency_ms", "mean"), "std_ms": ("latency_ms", "std"), "cv": ("latency_ms", "cv"),
    "min_ms": ("latency_ms", "min"), "p50_ms": ("latency_ms", "p50"), "p90_ms": ("latency_ms", "p90"),
    "p95_ms": ("latency_ms", "p95"), "p99_ms": ("latency_ms", "p99"), "max_ms": ("latency_ms", "max"),
    "throughput_ips": ("throughput_ips",), "load_ms": ("load_ms",), "first_inference_ms": ("first_inference_ms",),
    "peak_rss_mb": ("peak_rss_mb",), "model_size_bytes": ("model_size_bytes",),
    "energy_mj_per_inference": ("energy", "energy_mj_per_inference"),
}
_CONDITION = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*$")


def metric(report: dict[str, Any], name: str) -> float:
    value: Any = report
    for key in METRICS[name]:
        value = value[key]
    return float(value)


def check_condition(reports: list[dict[str, Any]], condition: str) -> str | None:
    """``--fail-if p90_ms>25``: the one-line reason a report breaches it, else None."""
    match = _CONDITION.match(condition)
    if not match or match.group(1) not in METRICS:
        raise EdgekitError(f"--fail-if '{condition}' is not METRIC>VALUE; metrics: {', '.join(METRICS)}")
    name, op, limit = match.group(1), match.group(2), float(match.group(3))
    compare = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}[op]
    for report in reports:
        if report.get("simulated"):
            raise EdgekitError(f"--fail-if {name}: {Path(report['model']).name} ran on the {report['simulated']}; "
                               "a simulator's timing is not the device's: profile it on the device (--remote)")
        try:
            value = metric(report, name)
        except (KeyError, TypeError):  # energy on a device that cannot measure it, or a report from before it
            raise EdgekitError(f"--fail-if {name}: {Path(report['model']).name} has no {name} "
                               f"({(report.get('energy') or {}).get('note', 'not in this report')})") from None
        if compare(value, limit):
            return f"{Path(report['model']).name}: {name} = {value:.4g}, breaking --fail-if {condition}"
    return None


def parse_percent(text: str) -> float:
    try:
        return float(text.strip().rstrip("%")) / 100.0
    except ValueError:
        raise EdgekitError(f"--max-regression '{text}' is not a percentage like 10%") from None


def check_regression(reports: list[dict[str, Any]], baseline_path: Path, max_regression: float) -> str | None:
    """Compare each report's p50 with the baseline's (matched by model file name, else by position)."""
    from edgekit.report.schema import read_reports

    baseline = read_reports(baseline_path)
    by_name = {Path(b["model"]).name: b for b in baseline if "model" in b}
    for index, report in enumerate(reports):
        old = by_name.get(Path(report["model"]).name) or (baseline[index] if index < len(baseline) else None)
        if old is None:
            raise EdgekitError(f"baseline '{baseline_path}' has no entry for {Path(report['model']).name}")
        before, after = metric(old, "p50_ms"), metric(report, "p50_ms")
        change = (after - before) / before if before else 0.0
        if change > max_regression:
            return (f"{Path(report['model']).name}: p50 regressed {change:.1%} vs baseline ({before:.3f} -> "
                    f"{after:.3f} ms), over --max-regression {max_regression:.0%}")
    return None


def render(reports: list[dict[str, Any]], suffix: str) -> str:
    """The reports as the text of a .json, .csv, .md or .html file."""
    if suffix not in SAVE_FORMATS:
        raise EdgekitError(f"cannot write a '{suffix}' report; use one of {', '.join(SAVE_FORMATS)}")
    return {".json": _json, ".csv": _csv, ".md": _markdown, ".html": _html}[suffix](reports)


def save(reports: list[dict[str, Any]], path: Path, *, force: bool = True) -> Path:
    text = render(reports, path.suffix.lower())
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force=force)


def _json(reports: list[dict[str, Any]]) -> str:
    return json.dumps(reports[0] if len(reports) == 1 else reports, indent=2, default=str) + "\n"


_CSV_COLUMNS = ["model", "backend", "engine", "device", "precision", "threads", "concurrency", "runs", "mean_ms",
                "std_ms", "cv", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_ips", "load_ms",
                "first_inference_ms", "peak_rss_mb", "model_size_bytes", "unstable"]


def _csv(reports: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(_CSV_COLUMNS)
    for r in reports:
        row = []
        for column in _CSV_COLUMNS:
            if column in METRICS:
                row.append(f"{metric(r, column):.6g}")
            elif column == "unstable":
                row.append("; ".join(r["unstable"]))
            else:
                row.append(r.get(column))
        writer.writerow(row)
    return out.getvalue()


def comparison_rows(reports: list[dict[str, Any]]) -> list[list[str]]:
    """One row per report, ratios against the first: the shared content of the terminal and markdown tables."""
    first = metric(reports[0], "p50_ms")
    rows = []
    for r in reports:
        lat = r["latency_ms"]
        # a simulator's time compared with anything is not a speed-up
        comparable = not r.get("simulated") and not reports[0].get("simulated") and lat["p50"]
        speedup = f"{first / lat['p50']:.2f}x" if comparable else "—"
        stability = "estimate" if r.get("estimated") else "simulated" \
            if r.get("simulated") else (("UNSTABLE: " + "; ".join(r["unstable"])) if r["unstable"] else "stable")
        rows.append([Path(r["model"]).name, r["backend"], r["device"], r.get("precision", ""),
                     str(r["threads"] or "default"),
                     f"{lat['p50']:.3f}",
                     f"{lat['p90']:.3f}", f"{lat['mean']:.3f} ± {lat['std']:.3f}", f"{lat['cv']:.1%}",
                     f"{r['throughput_ips']:.1f}", f"{r['load_ms']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['model_size_bytes'] / 1024:.1f}", speedup, stability])
    return rows


COMPARISON_HEADER = ["model", "backend", "device", "precision", "threads", "p50 ms", "p90 ms", "mean ± std ms", "CV",
                     "inf/s", "load ms", "peak MB", "size KB", "vs first", "stability"]


def _markdown(reports: list[dict[str, Any]]) -> str:
    lines = ["# edgekit profile", "", "| " + " | ".join(COMPARISON_HEADER) + " |",
             "|" + "---|" * len(COMPARISON_HEADER)]
    lines += ["| " + " | ".join(map(markdown_text, row)) + " |" for row in comparison_rows(reports)]
    system = reports[0]["system"]
    lines += ["", markdown_text(f"Device: {system.get('board') or system['cpu']} · {system['os']} · {system['arch']} "
                                f"· {system['cores']} cores · governor {system.get('governor') or 'unknown'}"), ""]
    for r in reports:
        if r["per_op"]:
            lines += ["## Per-op time: " + markdown_text(f"{Path(r['model']).name} ({r['per_op_note']})"), "",
                      "| op | type | ms | % | count |", "|---|---|---|---|---|"]
            lines += [f"| {markdown_code(o['name'])} | {markdown_text(o['type'])} | {o['total_ms']:.4f} | "
                      f"{o['percent']:.1f} | {o['count']} |" for o in r["per_op"][:15]]
            lines.append("")
    return "\n".join(lines) + "\n"


def _html(reports: list[dict[str, Any]]) -> str:
    from edgekit.report import render_html

    return render_html(reports, title="edgekit profile")
