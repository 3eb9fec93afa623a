"""Arm Ethos-U NPUs without the hardware: compile a full-int8 .tflite with Vela and read its estimates.

Vela (``ethos-u-vela``, the ``ethos-u`` extra) runs offline and in a subprocess: it
prints a lot and is only needed on the workstation. It lives in this bottom layer
because both the Ethos-U conversion target and ``edgekit profile --estimate`` use it.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.runtimes.errors import ConversionError, MissingDependencyError, first_line

NPU_CONFIGS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
               "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
DEFAULT_NPU = "ethos-u55-128"
_CPU_OP = re.compile(r"Warning \(supported operators\) operator: (\S+), ofm: '([^']*)'\s*\nReason: ([^\n]+)")


@dataclass(frozen=True)
class VelaResult:
    """What Vela says about one model on one NPU configuration."""

    npu_config: str
    system_config: str
    memory_mode: str
    core_clock_mhz: float
    inference_time_ms: float
    inferences_per_second: float
    macs: int
    npu_ops: int
    cpu_ops: int
    cpu_fallbacks: list[dict[str, str]] = field(default_factory=list)  # {type, name, reason}
    sram_used_kib: float = 0.0
    dram_used_kib: float = 0.0
    on_chip_flash_used_kib: float = 0.0
    off_chip_flash_used_kib: float = 0.0
    cycles: int = 0
    vela_version: str = ""
    output: str = ""

    @property
    def full_npu(self) -> bool:
        return self.cpu_ops == 0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["full_npu"] = self.full_npu
        return data


def vela_installed() -> bool:
    try:
        return importlib.util.find_spec("ethosu") is not None
    except (ImportError, ValueError):
        return False


def compile_for_ethos_u(model: Path, out_dir: Path, *, npu_config: str = DEFAULT_NPU, system_config: str | None = None,
                        memory_mode: str | None = None, timeout_s: float = 900) -> VelaResult:
    """Compile ``model`` (a full-int8 .tflite) for an Ethos-U; the compiled file lands in ``out_dir``.

    Raises:
        MissingDependencyError: Vela is not installed.
        ConversionError: Vela refused the model or the configuration.
    """
    if npu_config not in NPU_CONFIGS:
        raise ConversionError(f"unknown NPU configuration '{npu_config}'; choose one of {', '.join(NPU_CONFIGS)}")
    if not vela_installed():
        raise MissingDependencyError("Arm Vela (ethos-u-vela, for Ethos-U NPUs)", "ethos-u")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ethosu.vela", str(model), "--accelerator-config", npu_config,
               "--output-dir", str(out_dir)]
    if system_config:
        command += ["--system-config", system_config]
    if memory_mode:
        command += ["--memory-mode", memory_mode]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"Vela did not finish compiling '{model.name}' within {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        message = next((line for line in reversed((done.stderr or done.stdout).splitlines()) if line.strip()), "")
        raise ConversionError(f"Vela could not compile '{model.name}' for {npu_config}: {message[:300]}")
    summaries = sorted(out_dir.glob(f"{model.stem}_summary_*.csv"))
    compiled = out_dir / f"{model.stem}_vela.tflite"
    if not summaries or not compiled.is_file():
        raise ConversionError(f"Vela wrote no summary or model for '{model.name}' (in {out_dir})")
    with open(summaries[0], newline="") as handle:
        row = next(csv.DictReader(handle))
    return _result(row, done.stdout, npu_config, compiled)


def _count(pattern: str, text: str) -> int:
    match = re.search(pattern + r"\s*=\s*(\d+)", text)
    return int(match.group(1)) if match else 0


def _result(row: dict[str, str], stdout: str, npu_config: str, compiled: Path) -> VelaResult:
    def number(key: str) -> float:
        try:
            return float(row.get(key) or 0.0)
        except ValueError:
            return 0.0

    fallbacks = [{"type": kind, "name": name, "reason": reason.strip()}
                 for kind, name, reason in _CPU_OP.findall(stdout)]
    return VelaResult(
        npu_config=npu_config, system_config=row.get("system_config", ""), memory_mode=row.get("memory_mode", ""),
        core_clock_mhz=number("core_clock") / 1e6, inference_time_ms=number("inference_time") * 1e3,
        inferences_per_second=number("inferences_per_second"), macs=int(number("nn_macs")),
        npu_ops=_count("NPU operators", stdout), cpu_ops=_count("CPU operators", stdout), cpu_fallbacks=fallbacks,
        sram_used_kib=number("sram_memory_used"), dram_used_kib=number("dram_memory_used"),
        on_chip_flash_used_kib=number("on_chip_flash_memory_used"),
        off_chip_flash_used_kib=number("off_chip_flash_memory_used"), cycles=int(number("cycles_total")),
        vela_version=_vela_version(), output=str(compiled),
    )


def _vela_version() -> str:
    try:
        from importlib.metadata import version

        return version("ethos-u-vela")
    except Exception as exc:  # noqa: BLE001 - the version is informative only
        return f"unknown ({first_line(exc)})"
