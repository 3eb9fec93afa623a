"""Repair a collapsed int8 artifact (or one beyond the user's --max-drop): try its target's remedies, cheapest
first, keep the first that holds and still runs at least half as fast as the float form on the CPU it is for.

A target names its remedies (``Target.remedies``: output layers in float, other calibration, the most
sensitive layers in float, int16 activations); each is a full attempt, converted, audited and validated like
the default one. Every attempt is recorded with what collapsed, its size and the per-layer sensitivity table
when a remedy used one, and with its latency on this machine where that informs a choice: the default attempt
(what a remedy costs is measured against it) and each remedy that held accuracy. A remedy that collapsed is not
timed: it cannot be kept, and timing it cost seconds per attempt (about 15 s of the PP-OCR detector's repair).

A remedy that holds accuracy but runs under half float's speed where it was measured (16x8 on x86: LiteRT's
reference kernels, 45x slower than its own float on MobileNetV2) is refused: an int8 artifact that much slower
than its float sibling is a bug, not a repair (a milder slowdown is the speed check's warning, as for the
default attempt). The user then gets the failure and the reason, and can ask for that form by its
own name (``tflite-int16x8``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from edgekit.runtimes.errors import EdgekitError

log = logging.getLogger("edgekit")


def try_remedies(target: Any, first: Any, attempt: Callable[[int, str, dict[str, Any]], Any],
                 samples: Callable[[], Iterable[dict[str, Any]]], progress: Any,
                 slower_than_float: Callable[[Any], str | None] = lambda candidate: None,
                 ) -> tuple[Any, dict[str, Any]]:
    """``first`` is the failing default attempt; ``attempt(index, label, options)`` makes another;
    ``slower_than_float(candidate)`` says why a candidate that holds runs slower than float here, or None.
    Returns the attempt to publish and the report's ``repair`` record."""
    remedies = target.remedy_function()
    attempts, refused, chosen, ranking, too_slow = [first], [], first, None, {}
    for label, extra, found in remedies(first.staged, samples):
        ranking = found or ranking
        with progress(f"{target.name} collapsed; trying: {label}", None):
            pass
        try:
            candidate = attempt(len(attempts) + len(refused), label, extra)
        except EdgekitError as exc:  # a remedy the engine refuses is recorded; the next one is tried
            log.warning("%s: remedy '%s' failed: %s", target.name, label, exc)
            refused.append({"remedy": label, "options": _plain(extra), "error": str(exc)})
            continue
        attempts.append(candidate)
        if candidate.needs_repair or candidate.not_integer:  # a remedy never buys accuracy with float
            continue
        slower = slower_than_float(candidate)
        if slower:
            log.warning("%s: remedy '%s' holds accuracy but %s; not kept", target.name, label, slower)
            too_slow[label] = slower
            continue
        chosen = candidate
        break
    record = {
        "chosen": chosen.label if chosen is not first else None,
        "attempts": [{"remedy": a.label, "options": _plain(a.extra), "collapsed": list(a.validation.collapsed),
                      "drop": a.validation.drop, "integer_share": round(a.audit.integer_share, 4),
                      "not_integer": a.not_integer, "slower_than_float": too_slow.get(a.label),
                      "size_bytes": a.model.size_bytes,
                      "latency_ms": _latency_ms(a.model.path) if a is first or not a.needs_repair else None,
                      "convert_s": round(a.convert_s, 2)} for a in attempts] + refused,
        "sensitivity": _sensitivity_table(ranking, chosen.extra) if ranking else None,
    }
    return chosen, record


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _sensitivity_table(ranking: list[dict[str, Any]], chosen: dict[str, Any]) -> list[dict[str, Any]]:
    kept = set(chosen.get("exclude_nodes", ())) | set(chosen.get("ignored_names", ()))  # ONNX/TFLite | NNCF
    return [dict(row, kept_in_float=row["node"] in kept) for row in ranking[:32]]


def _latency_ms(path: Any) -> float | None:
    """A quick p50 of the artifact on this machine (what a remedy costs), or None when it cannot run here."""
    from edgekit.profiling.profiler import profile

    try:
        report = profile(path, runs=20, min_seconds=0.2, max_seconds=2.0, warmup_seconds=0.1, energy=False)
    except EdgekitError:
        return None
    return round(report.latency_ms.p50, 4)
