"""The state of the device a profile ran on: board, CPU governor and clocks, temperatures, throttling.

Read from procfs/sysfs (and ``vcgencmd`` on a Raspberry Pi when present). Every
reader takes the filesystem root so tests run it against fixture trees of a
Raspberry Pi 4/5; a missing file means "unknown", never an error.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Raspberry Pi firmware soft-throttles at 80 °C (and caps hard at 85 °C).
PI_SOFT_THROTTLE_C = 80.0
# bits of `vcgencmd get_throttled` (and its sysfs twin)
THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit",
                 16: "under-voltage has occurred", 17: "frequency capping has occurred",
                 18: "throttling has occurred", 19: "soft temperature limit has occurred"}


@dataclass(frozen=True)
class DeviceState:
    """A snapshot of the clocks, temperatures and throttling flags."""

    governor: str | None = None
    frequencies_mhz: tuple[float, ...] = ()
    temperatures_c: dict[str, float] = field(default_factory=dict)
    throttled: int | None = None  # raw vcgencmd/sysfs bit field

    @property
    def max_temperature_c(self) -> float | None:
        return max(self.temperatures_c.values()) if self.temperatures_c else None

    def throttle_flags(self) -> list[str]:
        if not self.throttled:
            return []
        return [name for bit, name in THROTTLE_BITS.items() if self.throttled & (1 << bit)]

    def to_dict(self) -> dict[str, Any]:
        return {"governor": self.governor, "frequencies_mhz": list(self.frequencies_mhz),
                "temperatures_c": dict(self.temperatures_c), "throttled": self.throttled,
                "throttle_flags": self.throttle_flags()}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip().rstrip("\x00")
    except OSError:
        return None


def read_governor(root: Path = Path("/")) -> str | None:
    return _read(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def read_frequencies_mhz(root: Path = Path("/")) -> tuple[float, ...]:
    values = []
    for path in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"),
                       key=lambda p: int(p.parent.parent.name[3:])):
        text = _read(path)
        if text and text.isdigit():
            values.append(int(text) / 1000.0)
    return tuple(values)


def read_temperatures_c(root: Path = Path("/")) -> dict[str, float]:
    temperatures = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        text = _read(zone / "temp")
        if text and text.lstrip("-").isdigit():
            name = _read(zone / "type") or zone.name
            temperatures[name if name not in temperatures else zone.name] = int(text) / 1000.0
    return temperatures


def throttle_limit_c(root: Path = Path("/"), board: str | None = None) -> float:
    """The temperature at which this device starts throttling: the Pi firmware's soft limit, else the
    lowest passive trip point of the thermal zones, else the Pi value as a sensible default."""
    if board and "raspberry pi" in board.lower():
        return PI_SOFT_THROTTLE_C
    trips = []
    for trip_type in (root / "sys/class/thermal").glob("thermal_zone*/trip_point_*_type"):
        if _read(trip_type) == "passive":
            text = _read(trip_type.with_name(trip_type.name.replace("_type", "_temp")))
            if text and text.isdigit():
                trips.append(int(text) / 1000.0)
    return min(trips) if trips else PI_SOFT_THROTTLE_C


def read_throttled(root: Path = Path("/"), *, use_vcgencmd: bool = True) -> int | None:
    """The Pi's throttling bit field: ``vcgencmd get_throttled`` when present, else the firmware's sysfs file."""
    if use_vcgencmd and root == Path("/") and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout
            if "=" in out:
                return int(out.split("=", 1)[1].strip(), 16)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    text = _read(root / "sys/devices/platform/soc/soc:firmware/get_throttled")
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def snapshot(root: Path = Path("/")) -> DeviceState:
    return DeviceState(read_governor(root), read_frequencies_mhz(root), read_temperatures_c(root),
                       read_throttled(root))


def instability_reasons(cv: float, before: DeviceState, after: DeviceState, limit_c: float,
                        *, max_cv: float = 0.10) -> list[str]:
    """Why a run's numbers should not be trusted, empty when they can."""
    reasons = []
    if cv > max_cv:
        reasons.append(f"latency varies too much (CV {cv:.0%} > {max_cv:.0%})")
    hottest = after.max_temperature_c
    if hottest is not None and hottest >= limit_c:
        reasons.append(f"temperature reached {hottest:.1f} °C, in the throttling zone (>= {limit_c:.0f} °C)")
    if (before.throttled or 0) != (after.throttled or 0):
        changed = set(after.throttle_flags()) - set(before.throttle_flags())
        reasons.append(f"throttling flags changed during the run: {', '.join(sorted(changed)) or 'cleared'}")
    return reasons
