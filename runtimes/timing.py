"""Two or more models timed in interleaved rounds on one machine, so that a busy machine slows them alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def calls_for(call: Callable[[], Any], seconds: float) -> int:
    """How many calls of ``call`` (already warm) fill about ``seconds``, at least one."""
    started = time.perf_counter()
    call()
    return max(1, int(seconds / max(time.perf_counter() - started, 1e-7)))


def interleaved_rounds(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int, settle_s: float,
                       stop: Callable[[dict[str, list[float]]], bool] = lambda times: False) -> dict[str, list[float]]:
    """ms per call of each of ``calls`` in each round: ``per_round`` calls of each in turn, after a pause and a
    warm call. ``stop`` ends the rounds early once the times so far say enough."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        if stop(times):
            break
        for label, call in calls.items():
            # an engine's worker threads spin for a while after a call: let the other model's go idle and
            # re-warm this one, or each slows the other (ONNX Runtime: 2-3x, seen in benchmarks/convert.py)
            time.sleep(settle_s)
            call()
            started = time.perf_counter()
            for _ in range(per_round):
                call()
            times[label].append((time.perf_counter() - started) / per_round * 1000)
    return times
