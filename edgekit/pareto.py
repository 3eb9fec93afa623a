"""The Pareto front: what the report's plot draws and what ``optimize`` chooses from."""

from __future__ import annotations

from collections.abc import Sequence


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point beats on every objective at once (lower is better on each;
    equal is not beaten), in the order of their first objective."""
    front = [i for i, p in enumerate(points)
             if not any(all(x <= y for x, y in zip(q, p)) and tuple(q) != tuple(p) for q in points)]
    return sorted(front, key=lambda i: tuple(points[i]))
