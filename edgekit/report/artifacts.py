"""Conversion and profile reports joined per artifact: one row per profile run (or per unprofiled artifact)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """What one row of the report shows: a model file with its conversion report and/or one profile of it."""

    name: str
    conversion: dict[str, Any] | None
    profile: dict[str, Any] | None

    @property
    def target(self) -> str:
        return self.conversion["target"] if self.conversion else Path(self.name).suffix.lstrip(".")

    @property
    def size_bytes(self) -> int | None:
        if self.conversion:
            return self.conversion["artifact"]["size_bytes"]
        return self.profile["model_size_bytes"] if self.profile else None

    def latency(self, key: str) -> float | None:
        return self.profile["latency_ms"][key] if self.profile else None

    @property
    def validation(self) -> dict[str, Any]:
        return (self.conversion or {}).get("validation") or {}

    @property
    def drop(self) -> float | None:
        return self.validation.get("drop")

    @property
    def accuracy(self) -> float | None:
        return self.validation.get("accuracy_converted")

    @property
    def energy_mj(self) -> float | None:
        return ((self.profile or {}).get("energy") or {}).get("energy_mj_per_inference")

    @property
    def status(self) -> str:
        parts = []
        if self.conversion:
            parts.append(self.conversion["status"])
        if self.profile:
            parts.append("estimate" if self.profile.get("estimated") else "simulated" if self.profile.get("simulated")
                         else "UNSTABLE" if self.profile["unstable"] else "stable")
        return " · ".join(parts)

    @property
    def label(self) -> str:
        threads = (self.profile or {}).get("threads")
        return self.name + (f" ({threads} threads)" if threads else "")


def collect(reports: list[dict[str, Any]]) -> list[Artifact]:
    """Join by file name (a profile run on a Raspberry Pi names the same file under another folder)."""
    conversions = {Path(r["artifact"]["path"]).name: r for r in reports if "artifact" in r and "target" in r}
    profiles = [r for r in reports if "latency_ms" in r]
    rows = [Artifact(Path(p["model"]).name, conversions.get(Path(p["model"]).name), p) for p in profiles]
    profiled = {row.name for row in rows}
    rows += [Artifact(name, c, None) for name, c in conversions.items() if name not in profiled]
    return rows
