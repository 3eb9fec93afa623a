"""The ``edgekit optimize`` page: the chosen point, the Pareto plot (latency vs drop, marker area ~ file size,
infeasible points grey, baselines marked), the sortable trial table with each point's reproducing command,
and the sensitivity table of the layers the search could keep in float. Self-contained like the report page.
"""

from __future__ import annotations

import html
import statistics
from collections import defaultdict
from typing import Any

from edgekit.report.html import _SORT, _STYLE, _img, _png, _pyplot, plain_text


def render(result: Any, points: list[Any], rankings: dict[str, list[dict[str, Any]]], *,
           float_accuracy: float | None, device: str) -> str:
    best = result.best
    if best is not None:
        headline = (f"<p><b>Chosen:</b> {html.escape(_describe(best.candidate))} — {best.latency_ms:.4f} ms "
                    f"(±{best.noise_ms or 0:.4f}), held-out drop {best.heldout_drop:.2f} (95 % upper bound "
                    f"{best.heldout_drop_ucb:.2f}; budget {result.budget:g} {html.escape(result.basis)}, judged "
                    f"on the {'bound' if result.require_bound else 'measured drop'}), "
                    f"{best.size_bytes:,} bytes</p><p><code>{html.escape(best.command)}</code></p>")
    else:
        headline = f"<p class='bad'><b>No point chosen:</b> {html.escape(result.why_none or '')}</p>"
    accuracy = f"; float accuracy {float_accuracy:.1f}%" if float_accuracy is not None else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
             f"<title>edgekit optimize: {html.escape(result.study)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>edgekit optimize — {html.escape(result.study)}</h1>",
             f"<p class='meta'>device {html.escape(device)} · {len(result.trials)} trials "
             f"({result.trials_run_now} run now) · budget {result.budget:g} {html.escape(result.basis)}{accuracy}</p>",
             headline]
    plot = _pareto_plot(points, best)
    if plot:
        parts.append(_img(plot, "latency vs accuracy drop of every trial"))
    parts.append(_verdicts(result.shown))
    parts.append(_trial_table(result.trials))
    parts.append(_sensitivity(points, rankings))
    parts.append(f"<script>{_SORT}</script></body></html>")
    return "\n".join(parts)


def _verdicts(shown: list[Any]) -> str:
    """The front, the baselines and the chosen point by latency, each faster point with why it was not chosen."""
    if not shown:
        return ""
    rows = "".join(
        f"<tr><td>{p.trial}</td><td>{html.escape(_describe(p.candidate))}</td><td>{p.latency_ms:.4f}</td>"
        f"<td>{p.drop:.2f}</td><td>{'' if p.heldout_drop is None else f'{p.heldout_drop:.2f}'}</td>"
        f"<td>{'' if p.heldout_drop_ucb is None else f'{p.heldout_drop_ucb:.2f}'}</td>"
        f"<td>{html.escape(p.verdict)}</td></tr>" for p in shown)
    return ("<h2>Why this point</h2><table><thead><tr><th>trial</th><th>point</th><th>p50 ms</th>"
            "<th>search drop</th><th>held-out drop</th><th>95% bound</th><th>verdict</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _describe(candidate: dict[str, Any]) -> str:
    from edgekit.optimizing.space import Candidate

    return Candidate.from_dict(candidate).describe()


@plain_text
def _pareto_plot(points: list[Any], best: Any) -> str | None:
    if not points:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.4))
    largest = max(p.size_bytes for p in points) or 1
    for feasible, colour in ((False, "#bbbbbb"), (True, "#1f77b4")):
        chosen = [p for p in points if p.feasible is feasible]
        if chosen:
            axes.scatter([p.latency_ms for p in chosen], [p.drop for p in chosen],
                         s=[20 + 300 * p.size_bytes / largest for p in chosen], c=colour, alpha=0.6,
                         label="within budget" if feasible else "over budget", edgecolors="none")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.latency_ms)
    if front:
        axes.plot([p.latency_ms for p in front], [p.drop for p in front], "-", color="#1f77b4", lw=1,
                  label="Pareto front")
    for p in points:
        if p.baseline:
            axes.scatter([p.latency_ms], [p.drop], marker="x", c="#d62728", s=60)
            axes.annotate(p.baseline.replace(" default", ""), (p.latency_ms, p.drop), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
    if best is not None:
        axes.scatter([best.latency_ms], [best.drop], marker="*", c="#2ca02c", s=260, label="chosen", zorder=5)
    axes.set_xscale("log")
    axes.set_xlabel("p50 latency, ms (log)")
    axes.set_ylabel("accuracy drop")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


_COLUMNS = (("trial", "trial"), ("state", "state"), ("target", "target"), ("baseline", "baseline"),
            ("p50 ms", "latency_ms"), ("settled ms", "settled_latency_ms"), ("drop", "drop"),
            ("drop ucb", "drop_ucb"), ("held-out drop", "heldout_drop"), ("held-out ucb", "heldout_drop_ucb"),
            ("size B", "size_bytes"),
            ("front", "on_front"), ("convert s", "convert_s"), ("profile s", "profile_s"), ("options", "options"),
            ("command / error", "command"))


def _trial_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in _COLUMNS)
    body = []
    for row in rows:
        cells = []
        for _, key in _COLUMNS:
            if key == "options":
                value = _describe(row["candidate"]) if row.get("candidate") else ""
            elif key == "command":
                value = row.get("error") or row.get("command") or ""
            else:
                value = row.get(key)
            shown = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
            cells.append(f"<td data-value='{html.escape(str(value if value is not None else ''))}'>"
                         f"{html.escape(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h2>Trials</h2><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _sensitivity(points: list[Any], rankings: dict[str, list[dict[str, Any]]]) -> str:
    """Each ranked layer's added noise and what keeping the first k in float cost: the median latency of the
    trials keeping k layers float minus that of those keeping k - 1 (the same target, any other knobs)."""
    if not rankings:
        return "<h2>Layers kept in float</h2><p>No trial kept layers in float by sensitivity rank.</p>"
    parts = ["<h2>Layers kept in float (sensitivity ranking)</h2>"]
    for target, ranking in rankings.items():
        latencies: dict[int, list[float]] = defaultdict(list)
        for p in points:
            if p.target == target:
                latencies[p.candidate.get("kept_float", 0)].append(p.latency_ms)
        medians = {k: statistics.median(v) for k, v in latencies.items()}
        rows = []
        for k, layer in enumerate(ranking[: max(medians, default=0)], start=1):
            cost = f"{medians[k] - medians[k - 1]:+.4f}" if k in medians and k - 1 in medians else ""
            rows.append(f"<tr><td>{k}</td><td>{html.escape(layer['node'])}</td><td>{html.escape(layer['op_type'])}"
                        f"</td><td>{layer['added_noise_db']:.2f}</td><td>{cost}</td></tr>")
        parts.append(f"<h3>{html.escape(target)}</h3><table class='sortable'><thead><tr><th>rank</th><th>layer</th>"
                     "<th>op</th><th>added noise dB</th><th>latency cost ms</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
    return "\n".join(parts)
