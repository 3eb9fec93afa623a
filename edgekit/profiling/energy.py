"""Energy per inference, where the device can measure it — never an estimate passed off as a measurement.

Three sources, each read the way the platform documents it:

- **RAPL** (Intel, and AMD since Linux 5.8 through the same driver): ``/sys/class/powercap/intel-rapl:N``
  package domains and their ``dram`` sub-domains; ``energy_uj`` counters, which wrap at
  ``max_energy_range_uj``. Often readable by root only (since the Platypus side channel).
- **Raspberry Pi 5 PMIC**: ``vcgencmd pmic_read_adc`` prints each rail's current (``…_A``) and voltage
  (``…_V``); power is the sum of current x voltage over the rails that have both.
- **NVIDIA Jetson INA3221**: hwmon channels (``inN_input`` mV, ``currN_input`` mA, ``inN_label``); the
  ``VDD_IN`` rail (the board's input) when labelled, else the sum of the channels.

A ``Recorder`` samples in a background thread (counters as energy deltas, rails as power) and integrates.
The profiler measures idle power first and reports what the inferences added above it.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNAVAILABLE = "not measurable here (no RAPL/PMIC/INA)"
#: how often the recorder samples (a power rail's reading is instantaneous; counters are cumulative)
SAMPLE_SECONDS = 0.05


class Rapl:
    """Package and DRAM energy counters under /sys/class/powercap."""

    kind = "energy"

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self._last = [self._counter(d) for d in domains]
        self._total_uj = 0.0
        self.source = "RAPL " + "+".join((d / "name").read_text().strip() for d in domains) + " (/sys/class/powercap)"

    @staticmethod
    def _counter(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    def energy_j(self) -> float:
        """Joules since this reader was made (each counter's wraps at max_energy_range_uj unwound)."""
        for i, domain in enumerate(self.domains):
            now = self._counter(domain)
            delta = now - self._last[i]
            if delta < 0:
                delta += int((domain / "max_energy_range_uj").read_text()) + 1
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6


class PiPmic:
    """The Raspberry Pi 5 power-management IC's rails, through ``vcgencmd pmic_read_adc``."""

    kind = "power"
    source = "Raspberry Pi 5 PMIC rails (vcgencmd pmic_read_adc)"

    def __init__(self, run: Callable[[list[str]], str]) -> None:
        self._run = run

    @staticmethod
    def parse_power_w(text: str) -> float:
        amps = dict(re.findall(r"^\s*(\S+)_A\s+current\(\d+\)=([\d.]+)A", text, re.M))
        volts = dict(re.findall(r"^\s*(\S+)_V\s+volt\(\d+\)=([\d.]+)V", text, re.M))
        return sum(float(a) * float(volts[rail]) for rail, a in amps.items() if rail in volts)

    def power_w(self) -> float:
        return self.parse_power_w(self._run(["vcgencmd", "pmic_read_adc"]))


class Ina3221:
    """A Jetson's INA3221 monitor (hwmon): the VDD_IN rail when labelled, else every channel."""

    kind = "power"

    def __init__(self, hwmon: Path) -> None:
        channels = sorted({m.group(1) for p in hwmon.glob("in*_input") if (m := re.match(r"in(\d+)_input", p.name))})
        labels = {c: _read(hwmon / f"in{c}_label") for c in channels}
        main = [c for c, label in labels.items() if label == "VDD_IN"]
        self.hwmon, self.channels = hwmon, main or [c for c in channels if (hwmon / f"curr{c}_input").exists()]
        self.source = f"INA3221 {'+'.join(labels[c] or f'channel {c}' for c in self.channels)} ({hwmon})"

    def power_w(self) -> float:
        return sum(float(_read(self.hwmon / f"in{c}_input")) * float(_read(self.hwmon / f"curr{c}_input")) / 1e6
                   for c in self.channels)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _run_command(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout


def find_meter(root: Path = Path("/"), run: Callable[[list[str]], str] = _run_command) -> tuple[Any, str]:
    """The first energy source this device has, and a note (why there is none, or what was skipped)."""
    notes = []
    powercap = root / "sys" / "class" / "powercap"
    packages = sorted(p for p in powercap.glob("intel-rapl:*") if p.name.count(":") == 1
                      and _read(p / "name").startswith("package"))
    domains = packages + sorted(d for p in packages for d in p.glob(f"{p.name}:*") if _read(d / "name") == "dram")
    if domains:
        try:
            return Rapl(domains), ""
        except PermissionError:
            notes.append("RAPL is present but its energy counters are readable by root only")
    for hwmon in sorted((root / "sys" / "class" / "hwmon").glob("hwmon*")):
        if _read(hwmon / "name") == "ina3221":
            meter = Ina3221(hwmon)
            if meter.channels:
                return meter, ""
    if "raspberry pi 5" in _read(root / "proc" / "device-tree" / "model").lower():
        try:
            meter = PiPmic(run)
            meter.power_w()
            return meter, ""
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            notes.append(f"vcgencmd pmic_read_adc failed ({type(exc).__name__})")
    return None, "; ".join(notes) or UNAVAILABLE


@dataclass
class Recording:
    joules: float
    seconds: float
    max_w: float

    @property
    def mean_w(self) -> float:
        return self.joules / self.seconds if self.seconds else 0.0


class Recorder:
    """Samples a meter in a background thread between ``start()`` and ``stop()``."""

    def __init__(self, meter: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._meter, self._clock = meter, clock
        self._stop = threading.Event()
        self._joules, self._max_w = 0.0, 0.0

    def _sample(self) -> float:
        return self._meter.energy_j() if self._meter.kind == "energy" else self._meter.power_w()

    def start(self) -> Recorder:
        self._started = self._last_time = self._clock()
        self._last = self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _step(self) -> None:
        now, value = self._clock(), self._sample()
        elapsed = now - self._last_time
        if elapsed > 0:
            if self._meter.kind == "energy":
                joules = value - self._last
                power = joules / elapsed
            else:  # trapezoid between two power readings
                joules, power = (value + self._last) / 2 * elapsed, value
            self._joules += joules
            self._max_w = max(self._max_w, power)
        self._last, self._last_time = value, now

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._step()

    def stop(self) -> Recording:
        self._stop.set()
        self._thread.join()
        self._step()
        return Recording(self._joules, self._last_time - self._started, self._max_w)


def energy_report(meter: Any, idle: Recording, run: Recording, inferences: int) -> dict[str, Any]:
    """The profile report's ``energy`` section: what the inferences added above idle power."""
    added_w = max(run.mean_w - idle.mean_w, 0.0)
    per_inference_mj = added_w * run.seconds / inferences * 1e3 if inferences else None
    return {"energy_mj_per_inference": per_inference_mj,
            "power_w": {"mean": run.mean_w, "max": run.max_w, "idle": idle.mean_w},
            "seconds": {"runs": run.seconds, "idle": idle.seconds},
            "source": meter.source,
            "method": f"mean power during the {inferences} timed runs ({run.seconds:.2f} s) minus the idle power "
                      f"measured for {idle.seconds:.2f} s just before, times the time per inference"}
