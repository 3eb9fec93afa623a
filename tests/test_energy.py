"""Energy per inference: each reader against a recorded sysfs tree or command output (this machine has no
RAPL, PMIC or INA3221), the recorder's integration, and the profiler's idle-subtracted figure."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli
from edgekit.profiling.energy import UNAVAILABLE, Ina3221, PiPmic, Rapl, Recorder, Recording, energy_report, find_meter

# `vcgencmd pmic_read_adc` on a Raspberry Pi 5 (firmware 2024-09), idle: rails in the order it prints them
PMIC_IDLE = """\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05660390A
       1V8_SYS_A current(2)=0.17177500A
      DDR_VDD2_A current(3)=0.02049450A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18740010A
       0V8_SYS_A current(6)=0.33083120A
      VDD_CORE_A current(7)=0.71360000A
     3V7_WL_SW_V volt(8)=3.74463600V
       3V3_SYS_V volt(9)=3.31459200V
       1V8_SYS_V volt(10)=1.79983200V
      DDR_VDD2_V volt(11)=1.11146400V
      DDR_VDDQ_V volt(12)=0.60073200V
       1V1_SYS_V volt(13)=1.10705900V
       0V8_SYS_V volt(14)=0.80006250V
      VDD_CORE_V volt(15)=0.72078970V
        EXT5V_V volt(24)=5.15223000V
         BATT_V volt(25)=0.00000000V
"""
PMIC_IDLE_W = (0.00390372 * 3.744636 + 0.0566039 * 3.314592 + 0.171775 * 1.799832 + 0.0204945 * 1.111464
               + 0 * 0.600732 + 0.1874001 * 1.107059 + 0.3308312 * 0.8000625 + 0.7136 * 0.7207897)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def rapl_tree(root: Path, package_uj: int, dram_uj: int, wrap_uj: int = 262143328850) -> Path:
    """/sys/class/powercap as the intel_rapl driver lays it out (on Intel, and on AMD since Linux 5.8):
    package and psys domains at the top, core/uncore/dram sub-domains inside their package."""
    powercap = root / "sys" / "class" / "powercap"
    for folder, name, value in (("intel-rapl:0", "package-0", package_uj), ("intel-rapl:0/intel-rapl:0:0", "core", 7),
                                ("intel-rapl:0/intel-rapl:0:1", "dram", dram_uj), ("intel-rapl:1", "psys", 99)):
        _write(powercap / folder / "name", f"{name}\n")
        _write(powercap / folder / "energy_uj", f"{value}\n")
        _write(powercap / folder / "max_energy_range_uj", f"{wrap_uj}\n")
    _write(powercap / "intel-rapl" / "enabled", "1\n")  # the control type's own folder: not a domain
    return powercap


def test_rapl_reads_package_and_dram_and_unwinds_a_counter_wrap(tmp_path):
    powercap = rapl_tree(tmp_path, package_uj=1_000_000, dram_uj=262143328850 - 500_000, wrap_uj=262143328850)
    meter, note = find_meter(tmp_path)
    assert isinstance(meter, Rapl) and note == ""
    assert meter.source == "RAPL package-0+dram (/sys/class/powercap)"
    assert meter.energy_j() == 0
    _write(powercap / "intel-rapl:0" / "energy_uj", "3500000\n")  # +2.5 J
    _write(powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj", "499999\n")  # wrapped: +1.0 J
    assert meter.energy_j() == pytest.approx(3.5)


def test_pi5_pmic_sums_current_times_voltage_over_the_rails(tmp_path):
    assert PiPmic.parse_power_w(PMIC_IDLE) == pytest.approx(PMIC_IDLE_W)
    _write(tmp_path / "proc" / "device-tree" / "model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    calls = []
    meter, _ = find_meter(tmp_path, run=lambda command: calls.append(command) or PMIC_IDLE)
    assert isinstance(meter, PiPmic) and calls == [["vcgencmd", "pmic_read_adc"]]
    assert meter.power_w() == pytest.approx(PMIC_IDLE_W)


def test_a_pi5_whose_vcgencmd_fails_says_so(tmp_path):
    _write(tmp_path / "proc" / "device-tree" / "model", "Raspberry Pi 5 Model B Rev 1.0\x00")

    def missing(command):
        raise FileNotFoundError(command[0])

    assert find_meter(tmp_path, run=missing) == (None, "vcgencmd pmic_read_adc failed (FileNotFoundError)")


def test_jetson_ina3221_reads_the_board_input_rail(tmp_path):
    hwmon = tmp_path / "sys" / "class" / "hwmon" / "hwmon3"
    _write(tmp_path / "sys" / "class" / "hwmon" / "hwmon0" / "name", "thermal\n")
    for channel, label, mv, ma in ((1, "VDD_IN", 5080, 1234), (2, "VDD_CPU_GPU_CV", 5072, 420),
                                   (3, "VDD_SOC", 5072, 610)):
        _write(hwmon / f"in{channel}_label", f"{label}\n")
        _write(hwmon / f"in{channel}_input", f"{mv}\n")
        _write(hwmon / f"curr{channel}_input", f"{ma}\n")
    _write(hwmon / "name", "ina3221\n")
    meter, _ = find_meter(tmp_path)
    assert isinstance(meter, Ina3221) and meter.source == f"INA3221 VDD_IN ({hwmon})"
    assert meter.power_w() == pytest.approx(5.080 * 1.234)


def test_nothing_to_read_says_so(tmp_path):
    assert find_meter(tmp_path) == (None, UNAVAILABLE)


class _Rail:
    kind, source = "power", "a steady 2 W rail"

    def power_w(self) -> float:
        return 2.0


def test_the_recorder_integrates_power_over_time():
    recorder = Recorder(_Rail()).start()
    time.sleep(0.3)
    recording = recorder.stop()
    assert recording.seconds == pytest.approx(0.3, abs=0.1)
    assert recording.mean_w == pytest.approx(2.0) and recording.max_w == pytest.approx(2.0)


def test_energy_per_inference_is_what_the_runs_added_above_idle():
    report = energy_report(_Rail(), Recording(joules=3.0, seconds=1.0, max_w=3.2),
                           Recording(joules=10.0, seconds=2.0, max_w=6.5), inferences=1000)
    assert report["energy_mj_per_inference"] == pytest.approx((5.0 - 3.0) * 2.0 / 1000 * 1e3)
    assert report["power_w"] == {"mean": 5.0, "max": 6.5, "idle": 3.0}
    assert report["source"] == "a steady 2 W rail" and "minus the idle power" in report["method"]


@pytest.mark.litert  # the profiled model is a .tflite
def test_the_profiler_measures_idle_then_the_runs(tmp_path, tflite_fp32, monkeypatch):
    """A Pi 5 whose PMIC reads 1 W more once the idle measurement has ended (load, warm-up and runs)."""
    _write(tmp_path / "proc" / "device-tree" / "model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    core_amps = 0.7136 + 1 / 0.7207897  # one more watt on VDD_CORE
    busy = PMIC_IDLE.replace("VDD_CORE_A current(7)=0.71360000A", f"VDD_CORE_A current(7)={core_amps:.8f}A")
    idle_ended = threading.Event()  # set by the first recording's end, not by a clock a loaded machine outruns
    stop = Recorder.stop

    def stop_then_busy(recorder):
        recording = stop(recorder)
        idle_ended.set()
        return recording

    monkeypatch.setattr(Recorder, "stop", stop_then_busy)

    def vcgencmd(command):
        return busy if idle_ended.is_set() else PMIC_IDLE

    report = edgekit.profile(tflite_fp32, runs=20, min_seconds=0.6, warmup_seconds=0.1, system_root=tmp_path,
                             idle_seconds=0.4, _run_command=vcgencmd)
    energy = report.energy
    assert energy["power_w"]["idle"] == pytest.approx(PMIC_IDLE_W, rel=0.01)
    assert energy["power_w"]["mean"] == pytest.approx(PMIC_IDLE_W + 1, rel=0.01)
    # the energy is over the wall-clock window of the runs, which holds their latencies and the loop between them
    window = energy["seconds"]["runs"]
    assert report.steady_seconds * 0.99 <= window <= report.steady_seconds + 1.0
    assert energy["energy_mj_per_inference"] == pytest.approx(1.0 * window / report.runs * 1e3, rel=0.01)
    assert energy["seconds"]["idle"] == pytest.approx(0.4, abs=0.2)
    assert energy["source"] == PiPmic.source


@pytest.mark.litert  # the profiled model is a .tflite
def test_the_cli_says_when_energy_cannot_be_measured(tflite_fp32):
    meter, note = find_meter()
    result = CliRunner().invoke(cli, ["profile", str(tflite_fp32), "--runs", "5", "--min-seconds", "0.05"])
    assert result.exit_code == 0, result.output
    if meter is None:  # this machine: no RAPL, no PMIC, no INA3221
        assert f"energy: {note}" in result.output
    else:
        assert "mJ/inference" in result.output
