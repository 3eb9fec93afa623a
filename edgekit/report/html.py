"""One self-contained HTML page: no network, no external JS or CSS, plots embedded as PNG.

Header (device, engine versions, state) -> a latency vs accuracy-drop plot of every artifact (marker size =
file size, the Pareto front drawn) -> a sortable comparison table -> one folded section per row with its
latency histogram, latency per run with the temperature, per-op time by type and by node, the quantization
audit and the validation metrics per output. Narrow screens scroll the table, and the plots shrink.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import io
from collections import Counter
from collections.abc import Callable
from typing import Any

from edgekit.pareto import non_dominated
from edgekit.report.artifacts import Artifact
from edgekit.runtimes.errors import MissingDependencyError

COLUMNS = ("artifact", "target", "engine", "p50 ms", "p90 ms", "size KB", "accuracy %", "drop", "integer ops",
           "energy mJ", "status")

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.4em;margin:.2em 0}.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;display:block;overflow-x:auto;font-size:.9em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f0f0f0;cursor:pointer}
img{max-width:100%;height:auto}details{border:1px solid #ddd;border-radius:6px;margin:.5em 0;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}.bad{color:#b00020}
"""
# Click a header to sort by it (numbers as numbers); click again to reverse.
_SORT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var ascending = th.dataset.order !== 'asc'; th.dataset.order = ascending ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
      var nx = parseFloat(x), ny = parseFloat(y), r = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return ascending ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib (needed for HTML reports with plots)", "report") from exc
    return plt


def plain_text(plot: Callable[..., Any]) -> Callable[..., Any]:
    """Run a plot function with matplotlib's math parsing off: labels are names from model files, and a
    ``$x^{$`` in one made the math parser raise instead of drawing it."""

    @functools.wraps(plot)
    def drawn_as_text(*args: Any, **kwargs: Any) -> Any:
        try:
            import matplotlib
        except ImportError:
            return plot(*args, **kwargs)  # it says what to install
        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return drawn_as_text


def _png(figure: Any) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(source: str, alt: str) -> str:
    return f"<img class='plot' alt='{html.escape(alt)}' src='{source}'/>"


@plain_text
def comparison_plot(rows: list[Artifact]) -> str | None:
    """Latency vs accuracy drop, marker area ~ file size, the Pareto front joined by a line."""
    points = [(r.latency("p50"), r.drop if r.drop is not None else 0.0, r) for r in rows if r.profile]
    if not points:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.2))
    largest = max((r.size_bytes or 1) for _, _, r in points)
    for x, y, row in points:
        area = 40 + 600 * (row.size_bytes or 0) / largest
        hollow = row.drop is None
        axes.scatter([x], [y], s=area, alpha=0.6, facecolors="none" if hollow else None, edgecolors="C0")
        axes.annotate(row.label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = [points[i] for i in non_dominated([(x, y) for x, y, _ in points])]
    axes.plot([x for x, _, _ in front], [y for _, y, _ in front], "r--o", linewidth=1, markersize=3,
              label="Pareto front")
    axes.set(xlabel="p50 latency (ms)", ylabel="accuracy drop (points; hollow: not validated)",
             title="every artifact: latency vs accuracy drop (marker size = file size)")
    axes.legend(loc="best", fontsize=8)
    return _png(figure)


@plain_text
def _profile_plots(profile: dict[str, Any], top: int = 12) -> str:
    plt = _pyplot()
    samples = profile.get("latencies_ms") or []
    ops = profile.get("per_op") or []
    figure, axes = plt.subplots(1, 4 if ops else 2, figsize=(16 if ops else 9, 3.4))
    cut = profile["latency_ms"]["p99"]
    kept = [v for v in samples if v <= cut] or samples
    axes[0].hist(kept, bins=40)
    axes[0].set(title=f"latency histogram (to p99; {len(samples) - len(kept)} slower runs not shown)",
                xlabel="ms", ylabel="runs")
    axes[1].plot(samples, linewidth=0.6, label="latency")
    axes[1].set(title="latency per run", xlabel="run", ylabel="ms")
    temps = profile["system"]["temperatures"]
    before, after = (max(t.values()) if t else None for t in (temps["before_c"], temps["after_c"]))
    if before is not None and after is not None:
        twin = axes[1].twinx()
        twin.plot([0, max(len(samples) - 1, 1)], [before, after], "r--")
        twin.set_ylabel("SoC °C (before, after)", color="r")
    if ops:
        by_type = Counter()
        for op in ops:
            by_type[op["type"]] += op["total_ms"]
        kinds = by_type.most_common(top)
        axes[2].barh([k for k, _ in kinds][::-1], [v for _, v in kinds][::-1])
        axes[2].set(title="time by op type", xlabel="ms per inference")
        nodes = ops[:top]
        axes[3].barh([o["name"][:28] for o in nodes][::-1], [o["total_ms"] for o in nodes][::-1])
        axes[3].set(title=f"time by node (top {len(nodes)})", xlabel="ms per inference")
    return _img(_png(figure), f"latency plots for {profile['model']}")


def _text(value: Any) -> str:
    """Every value from a report (a file someone else may have written) is text in the page, never markup."""
    return html.escape(str(value))


def _cell(value: Any, text: str | None = None) -> str:
    sort_key = "" if value is None else value
    return f"<td data-value='{html.escape(str(sort_key))}'>{html.escape(text if text is not None else str(value))}</td>"


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(row: Artifact) -> str:
    audit = (row.conversion or {}).get("audit")
    integer = _integer_share(audit)
    engine = (row.profile or {}).get("engine", "")
    size_kb = None if row.size_bytes is None else row.size_bytes / 1024
    cells = [_cell(row.label), _cell(row.target), _cell(engine),
             _cell(row.latency("p50"), _number(row.latency("p50"), 3)),
             _cell(row.latency("p90"), _number(row.latency("p90"), 3)), _cell(size_kb, _number(size_kb, 1)),
             _cell(row.accuracy, _number(row.accuracy, 1)), _cell(row.drop, _number(row.drop, 2)),
             _cell(_share(audit), integer),
             _cell(row.energy_mj, _number(row.energy_mj, 3)), _cell(row.status)]
    return "<tr>" + "".join(cells) + "</tr>"


def _share(audit: dict[str, Any] | None) -> float | None:
    """The integer share a report states; reports written before it existed give the op share."""
    if not audit:
        return None
    share = audit.get("integer_share")
    return share if share is not None else audit["integer_ops"] / max(audit["compute_ops"], 1)


def _integer_share(audit: dict[str, Any] | None) -> str:
    return f"{_share(audit):.0%} ({audit['integer_ops']}/{audit['compute_ops']} ops)" if audit else ""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(row: Artifact) -> str:
    parts = [f"<details><summary>{html.escape(row.label)} — {html.escape(row.status)}</summary>"]
    if row.profile:
        p = row.profile
        clocks = p["system"].get("frequencies_mhz") or []
        clock = f"{min(clocks):.0f}–{max(clocks):.0f} MHz at the start · " if clocks else ""
        meta = (f"{p['engine']} · {p['device']} · threads {p['threads'] or 'default'} · {p['runs']} runs · {clock}"
                + ("; ".join(p["unstable"]) or "stable"))
        parts.append(f"<p class='meta'>{_text(meta)}</p>")
        parts.append(_profile_plots(p))
        energy = p.get("energy") or {}
        parts.append("<p>energy: " + html.escape(
            f"{energy['energy_mj_per_inference']:.3f} mJ/inference from {energy['source']} ({energy['method']})"
            if energy.get("energy_mj_per_inference") is not None else energy.get("note", "not measured")) + "</p>")
    if row.conversion:
        c = row.conversion
        audit = c["audit"]
        floats = ", ".join(f"{op} ×{n}" for op, n in audit["float_ops"].items()) or "none"
        parts.append("<h3>Quantization audit</h3><p>" + _text(
            f"{_share(audit):.0%} of the {audit.get('integer_share_basis', 'compute ops')} in integer; "
            f"{audit['integer_ops']} of {audit['compute_ops']} compute ops integer; float ops: {floats}; I/O "
            f"{', '.join(audit['input_dtypes'])} → {', '.join(audit['output_dtypes'])}") + "</p>")
        outputs = row.validation.get("outputs") or {}
        if outputs:
            parts.append("<h3>Validation per output</h3>" + _table(
                ["output", "judged by", "decisions kept", "cosine", "SQNR dB (all samples)",
                 "SQNR dB (median sample)", "max abs err"],
                [[name, m.get("judged_by", ""), _number(m.get("decision_agreement"), 3), f"{m['cosine']:.5f}",
                  f"{m['sqnr_db']:.1f}", _number(m.get("sqnr_db_median_sample"), 1), f"{m['max_abs_error']:.4g}"]
                 for name, m in outputs.items()]))
        if c.get("failures"):
            parts.append("<p class='bad'>" + html.escape("; ".join(c["failures"])) + "</p>")
    return "".join(parts) + "</details>"


def _header(rows: list[Artifact]) -> str:
    profile = next((r.profile for r in rows if r.profile), None)
    lines = []
    if profile:
        s = profile["system"]
        temps = s["temperatures"]["after_c"]
        lines.append(f"device: {s.get('board') or s['cpu']} · {s['os']} · {s['arch']} · {s['cores']} cores · "
                     f"governor {s.get('governor') or 'unknown'}"
                     + (f" · {max(temps.values()):.1f} °C after" if temps else ""))
        engines = sorted({f"{r.profile['backend']} {r.profile['engine']}" for r in rows if r.profile})
        lines.append("engines: " + ", ".join(engines))
        unstable = sorted({u for r in rows if r.profile for u in r.profile["unstable"]})
        lines.append("state: " + ("; ".join(unstable) if unstable else "stable (no throttling, CV within 10 %)"))
    conversion = next((r.conversion for r in rows if r.conversion), None)
    if conversion:
        lines.append("tools: " + ", ".join(f"{k} {v}" for k, v in conversion["tools"].items()))
    return "".join(f"<p class='meta'>{html.escape(line)}</p>" for line in lines)


def render(rows: list[Artifact], *, title: str = "edgekit report") -> str:
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    plot = comparison_plot(rows)
    body = [f"<h1>{html.escape(title)}</h1><p class='meta'>{created} · {len(rows)} artifact(s)</p>", _header(rows)]
    if plot:
        body.append(_img(plot, "latency vs accuracy drop of every artifact"))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body.append(f"<table class='sortable' id='comparison'><thead><tr>{head}</tr></thead><tbody>"
                + "".join(_row(r) for r in rows) + "</tbody></table>")
    body += [_details(r) for r in rows]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + f"<script>{_SORT}</script></body></html>\n")
