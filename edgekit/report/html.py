"""One self-contained HTML page: no network, no external JS or CSS, plots embedded as PNG.

Header (device, engine versions, state) -> a latency vs accuracy-drop plot of every artifact (marker size =
file size, the Pareto front drawn) -> a sortable comparison table -> one folded section per row with its
latency histogram, latency per run with the temperature, per-op time by type and by node, the quantization
audit and the validation metrics per output. The table fits a laptop's width; on a phone each row becomes a
card of "column: value" lines, and the plots shrink. Timing stability is stated once, above the plot.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import io
import re
from collections.abc import Callable
from typing import Any

from edgekit.pareto import non_dominated
from edgekit.report.artifacts import Artifact
from edgekit.runtimes.base import time_by_op_type
from edgekit.runtimes.errors import MissingDependencyError

COLUMNS = ("artifact", "target", "engine", "p50 ms", "p90 ms", "size KB", "accuracy %", "drop", "integer",
           "energy mJ", "status")

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.4em;margin:.2em 0}.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;overflow-wrap:anywhere}
th{background:#f0f0f0;cursor:pointer;font-weight:600}
img{max-width:100%;height:auto}details{border:1px solid #ddd;border-radius:6px;margin:.5em 0;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}.bad{color:#b00020}.noisy{color:#8a5a00}
details table{display:block;overflow-x:auto}
@media (max-width:700px){
 table.sortable thead{display:none}table.sortable tr{display:block;border:1px solid #ccc;margin:.4em 0}
 table.sortable td{display:flex;justify-content:space-between;gap:1em;border:0;white-space:normal}
 table.sortable td::before{content:attr(data-label);font-weight:600;text-align:left}
}
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
    timed = [r for r in rows if r.profile and not r.profile.get("simulated")]  # a simulator's time is no latency
    points = [(r.latency("p50"), r.drop if r.drop is not None else 0.0, r) for r in timed]
    if not points:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.2 + 0.18 * len(points)))
    largest = max((r.size_bytes or 1) for _, _, r in points)
    markers = "osD^v<>Ph*X"
    for index, (x, y, row) in enumerate(points):
        # one colour and marker per artifact, named in the legend: labels written beside close points collided
        color, marker = f"C{index % 10}", markers[index // 10 % len(markers)]
        axes.scatter([x], [y], s=40 + 600 * (row.size_bytes or 0) / largest, alpha=0.7, marker=marker,
                     facecolors="none" if row.drop is None else color, edgecolors=color, label=row.label)
    front = [points[i] for i in non_dominated([(x, y) for x, y, _ in points])]
    axes.plot([x for x, _, _ in front], [y for _, y, _ in front], "k--", linewidth=0.8, label="Pareto front")
    drops = [y for _, y, _ in points]
    low, high = min(0.0, *drops), max(drops)
    if high - low < 1.0:  # equal drops (all 0.00) otherwise give an axis of -0.04..0.04 points
        axes.set_ylim(low - 0.1, low + 1.0)
    axes.set(xlabel="p50 latency (ms)", ylabel="accuracy drop (points; hollow: not validated)",
             title="every artifact: latency vs accuracy drop (marker size = file size)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False,
                markerscale=0.5)
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
        kinds = time_by_op_type(ops).most_common(top)
        axes[2].barh([k for k, _ in kinds][::-1], [v for _, v in kinds][::-1])
        axes[2].set(title="time by op type", xlabel="ms per inference")
        nodes = ops[:top]
        axes[3].barh([o["name"][:28] for o in nodes][::-1], [o["total_ms"] for o in nodes][::-1])
        axes[3].set(title=f"time by node (top {len(nodes)})", xlabel="ms per inference")
    return _img(_png(figure), f"latency plots for {profile['model']}")


def _text(value: Any) -> str:
    """Every value from a report (a file someone else may have written) is text in the page, never markup."""
    return html.escape(str(value))


def _cell(column: str, value: Any, text: str | None = None, *, title: str = "", css: str = "") -> str:
    """One cell of the comparison table; it names its column, which a phone shows as a row's card lines."""
    sort_key = "" if value is None else value
    extra = (f" title='{html.escape(title)}'" if title else "") + (f" class='{css}'" if css else "")
    return (f"<td data-label='{html.escape(column)}' data-value='{html.escape(str(sort_key))}'{extra}>"
            f"{html.escape(text if text is not None else str(value))}</td>")


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(row: Artifact) -> str:
    audit = (row.conversion or {}).get("audit")
    integer = _integer_share(audit)
    engine = (row.profile or {}).get("engine", "")
    size_kb = None if row.size_bytes is None else row.size_bytes / 1024
    noisy = "; ".join((row.profile or {}).get("unstable") or [])
    p50 = _number(row.latency("p50"), 3) + (" †" if noisy else "")
    cells = [(row.label, None, {}), (row.target, None, {}), (engine, None, {}),
             (row.latency("p50"), p50, {"title": noisy, "css": "noisy" if noisy else ""}),
             (row.latency("p90"), _number(row.latency("p90"), 3), {}), (size_kb, _number(size_kb, 1), {}),
             (row.accuracy, _number(row.accuracy, 1), {}), (row.drop, _number(row.drop, 2), {}),
             (_share(audit), integer, {"title": _integer_ops(audit)}),
             (row.energy_mj, _number(row.energy_mj, 3), {}), (_status(row), None, {})]
    return "<tr>" + "".join(_cell(column, value, text, **extra)
                            for column, (value, text, extra) in zip(COLUMNS, cells)) + "</tr>"


def _status(row: Artifact) -> str:
    """The conversion's status; a profile adds only that it was an estimate (stability is stated once, above)."""
    parts = [row.conversion["status"]] if row.conversion else []
    if row.profile and row.profile.get("estimated"):
        parts.append("estimate")
    if row.profile and row.profile.get("simulated"):
        parts.append("simulated: not the device's latency")
    return " · ".join(parts) or "profiled"


def _share(audit: dict[str, Any] | None) -> float | None:
    """The integer share a report states; reports written before it existed give the op share."""
    if not audit:
        return None
    share = audit.get("integer_share")
    return share if share is not None else audit["integer_ops"] / max(audit["compute_ops"], 1)


def _integer_share(audit: dict[str, Any] | None) -> str:
    return f"{_share(audit):.0%}" if audit else ""


def _integer_ops(audit: dict[str, Any] | None) -> str:
    return f"{audit['integer_ops']} of {audit['compute_ops']} compute ops integer" if audit else ""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(row: Artifact) -> str:
    parts = [f"<details><summary>{html.escape(row.label)} — {html.escape(_status(row))}</summary>"]
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
        lines.append(_stability([r.profile for r in rows if r.profile]))
    conversion = next((r.conversion for r in rows if r.conversion), None)
    if conversion:
        lines.append("tools: " + ", ".join(f"{k} {v}" for k, v in conversion["tools"].items()))
    return "".join(f"<p class='meta'>{html.escape(line)}</p>" for line in lines)


def _stability(profiles: list[dict[str, Any]]) -> str:
    """One line for every profile's stability: how many were unstable, each kind of reason once (CVs as a
    range), and what to do about it."""
    unstable = [p for p in profiles if p["unstable"]]
    if not unstable:
        return "timing: stable in every profile (no throttling, CV within 10 %)"
    kinds: dict[str, list[str]] = {}
    for reason in (r for p in unstable for r in p["unstable"]):
        kinds.setdefault(reason.split(" (")[0].split(":")[0], []).append(reason)
    described = []
    for kind, reasons in kinds.items():
        cvs = sorted(int(m.group(1)) for m in (re.search(r"CV (\d+)%", r) for r in reasons) if m)
        span = f" (CV {cvs[0]}–{cvs[-1]} %)" if cvs and cvs[0] != cvs[-1] else f" (CV {cvs[0]} %)" if cvs else ""
        described.append(f"{kind}{span} in {len(reasons)}")
    return (f"timing: {len(unstable)} of {len(profiles)} profiles unstable (marked † beside p50): "
            + "; ".join(described) + ". Those latencies are noisy: set the CPU governor to performance, close other "
            "programs, let the board cool, and profile again with more runs (--min-seconds).")


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
