"""The profiler: exact statistics on a fake runtime, device state from fixture sysfs trees
(Raspberry Pi 4 and 5), and the full schema from every real engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny
from click.testing import CliRunner
from fakes import FakeClock, FakeRuntime

import edgekit
from edgekit.cli import cli
from edgekit.profiling.profiler import LatencyStats, profile
from edgekit.profiling.system_state import instability_reasons, read_frequencies_mhz, read_throttled, snapshot

TOP_LEVEL_KEYS = {"model", "backend", "device", "threads", "latency_ms", "throughput_ips", "load_ms",
                  "first_inference_ms", "peak_rss_mb", "model_size_bytes", "per_op", "system", "unstable"}
LATENCY_KEYS = {"mean", "std", "cv", "min", "p50", "p90", "p95", "p99", "max"}


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "fake.bin"
    path.write_bytes(b"\0" * 1234)
    return path


def _profile(runtime, clock, **kwargs):
    options = {"warmup_runs": 0, "warmup_seconds": 0, "min_seconds": 0, "max_seconds": 1e9, "_clock": clock}
    options.update(kwargs)
    return profile(runtime, **options)


def test_percentiles_are_exact(model_file):
    clock = FakeClock()
    steady = list(range(1, 101))  # 1..100 ms
    runtime = FakeRuntime(model_file, clock, [500.0, *steady])  # the first inference is timed apart
    report = _profile(runtime, clock, runs=100)
    lat = report.latency_ms
    assert report.runs == 100 and report.first_inference_ms == pytest.approx(500.0)
    assert (lat.min, lat.max, lat.mean) == pytest.approx((1.0, 100.0, 50.5))
    assert (lat.p50, lat.p90, lat.p95, lat.p99) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert lat.std == pytest.approx(np.std(steady)) and lat.cv == pytest.approx(np.std(steady) / 50.5)
    assert report.throughput_ips == pytest.approx(100 / 5.05)
    assert report.model_size_bytes == 1234 and report.per_op == [] and report.per_op_note == "not requested"


def test_steady_state_needs_runs_and_seconds_and_stops_at_the_cap(model_file):
    clock = FakeClock()
    by_seconds = _profile(FakeRuntime(model_file, clock, [10.0] * 1000), clock, runs=5, min_seconds=1.0)
    assert by_seconds.runs == 100  # 5 runs were not enough: 1 s of 10 ms runs
    clock = FakeClock()
    by_runs = _profile(FakeRuntime(model_file, clock, [10.0] * 1000), clock, runs=300, min_seconds=1.0)
    assert by_runs.runs == 300
    clock = FakeClock()
    capped = _profile(FakeRuntime(model_file, clock, [10.0] * 1000), clock, runs=900, max_seconds=0.5)
    assert capped.runs == 50


def test_warmup_lasts_runs_and_seconds(model_file):
    clock = FakeClock()
    runtime = FakeRuntime(model_file, clock, [5.0] * 1000)
    report = _profile(runtime, clock, runs=10, warmup_runs=3, warmup_seconds=0.1)
    assert report.warmup_runs == 20 and runtime.calls == 1 + 20 + 10


def test_high_variation_is_flagged_unstable(model_file):
    clock = FakeClock()
    report = _profile(FakeRuntime(model_file, clock, [1.0] + [1.0, 10.0] * 50), clock, runs=100)
    assert report.latency_ms.cv > 0.1 and "latency varies too much" in report.unstable[0]
    clock = FakeClock()
    steady = _profile(FakeRuntime(model_file, clock, [1.0] * 101), clock, runs=100)
    assert steady.unstable == []


def test_latency_stats_of_a_single_value():
    stats = LatencyStats.of([2.0])
    assert stats.p99 == stats.min == stats.max == 2.0 and stats.cv == 0.0


# -- device state: fixture procfs/sysfs trees ------------------------------------------------


def make_pi_tree(root: Path, model: str, *, temp_mc: int, throttled: str | None, cores: int = 4,
                 freq_khz: int = 1800000) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    for cpu in range(cores):
        folder = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text("ondemand\n")
        (folder / "scaling_cur_freq").write_text(f"{freq_khz}\n")
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{temp_mc}\n")
    if throttled is not None:
        firmware = root / "sys/devices/platform/soc/soc:firmware"
        firmware.mkdir(parents=True)
        (firmware / "get_throttled").write_text(throttled + "\n")
    return root


def test_raspberry_pi_4_state(tmp_path):
    root = make_pi_tree(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", temp_mc=48312, throttled="50005")
    state = snapshot(root)
    assert state.governor == "ondemand" and read_frequencies_mhz(root) == (1800.0,) * 4
    assert state.temperatures_c == {"cpu-thermal": 48.312}
    assert read_throttled(root, use_vcgencmd=False) == 0x50005
    assert set(state.throttle_flags()) == {"under-voltage", "throttled", "under-voltage has occurred",
                                           "throttling has occurred"}


def test_raspberry_pi_5_heating_up_during_a_run_is_unstable(tmp_path, model_file):
    root = make_pi_tree(tmp_path / "pi5", "Raspberry Pi 5 Model B Rev 1.0", temp_mc=62000, throttled="0",
                        freq_khz=2400000)
    zone, firmware = root / "sys/class/thermal/thermal_zone0/temp", root / "sys/devices/platform/soc/soc:firmware"

    def heat(calls: int) -> None:  # halfway through, the SoC passes 80 °C and the firmware soft-throttles
        if calls == 30:
            zone.write_text("81500\n")
            (firmware / "get_throttled").write_text("0x80008\n")

    clock = FakeClock()
    report = _profile(FakeRuntime(model_file, clock, [20.0] * 100, on_run=heat), clock, runs=50,
                      system_root=root)
    system = report.system
    assert system["board"] == "Raspberry Pi 5 Model B Rev 1.0" and system["governor"] == "ondemand"
    assert system["frequencies_mhz"] == [2400.0] * 4
    assert system["temperatures"] == {"before_c": {"cpu-thermal": 62.0}, "after_c": {"cpu-thermal": 81.5}}
    assert system["throttling"]["after"] == ["soft temperature limit", "soft temperature limit has occurred"]
    assert any("81.5 °C" in r and ">= 80 °C" in r for r in report.unstable)
    assert any("throttling flags changed" in r for r in report.unstable)


def test_non_pi_machine_uses_the_passive_trip_point(tmp_path):
    from edgekit.profiling.system_state import DeviceState, throttle_limit_c

    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "trip_point_0_type").write_text("passive\n")
    (zone / "trip_point_0_temp").write_text("95000\n")
    assert throttle_limit_c(tmp_path, board=None) == 95.0
    cool = DeviceState(temperatures_c={"x": 90.0})
    assert instability_reasons(0.01, cool, cool, 95.0) == []


def test_missing_sysfs_means_unknown_not_an_error(tmp_path):
    state = snapshot(tmp_path)
    assert state.governor is None and state.temperatures_c == {} and state.throttled is None


# -- real engines --------------------------------------------------------------------------------

ENGINE_FORMS = [
    pytest.param("tflite_int8", marks=pytest.mark.litert, id="litert"),
    pytest.param("onnx_fp32", marks=pytest.mark.onnxruntime, id="onnxruntime"),
    pytest.param("ir_fp32", marks=pytest.mark.openvino, id="openvino"),
]


@pytest.mark.parametrize("fixture", ENGINE_FORMS)
def test_every_engine_produces_the_full_schema(request, fixture):
    path = request.getfixturevalue(fixture)
    report = profile(path, runs=20, min_seconds=0.05, warmup_seconds=0.01, per_op=True, threads=1)
    data = json.loads(report.to_json())
    assert TOP_LEVEL_KEYS <= set(data) and set(data["latency_ms"]) == LATENCY_KEYS
    assert data["runs"] >= 20 and data["load_ms"] > 0 and data["first_inference_ms"] > 0
    lat = data["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert data["peak_rss_mb"] > 10 and data["model_size_bytes"] > 0 and data["threads"] == 1
    assert {"os", "arch", "cpu", "cores", "versions", "board", "governor", "temperatures", "throttling"} <= set(
        data["system"])
    if fixture == "tflite_int8":  # LiteRT's Python API exposes no per-op timings: said, not invented
        assert data["per_op"] == [] and data["per_op_note"].startswith("not available")
    else:
        ops = data["per_op"]
        assert ops and {"name", "type", "total_ms", "percent", "count"} <= set(ops[0])
        assert sum(o["percent"] for o in ops) == pytest.approx(100.0)
        assert ops == sorted(ops, key=lambda o: -o["total_ms"])


@pytest.mark.openvino
def test_openvino_throughput_mode_uses_async_requests(ir_fp32):
    report = profile(ir_fp32, runs=40, min_seconds=0.05, concurrency=4)
    assert report.concurrency == 4 and report.runs >= 40 and report.throughput_ips > 0


@pytest.mark.onnxruntime
def test_threaded_throughput_mode_elsewhere(onnx_fp32):
    report = profile(onnx_fp32, runs=40, min_seconds=0.05, concurrency=2)
    assert report.runs >= 40 and report.throughput_ips > 0


@pytest.mark.onnxruntime
@pytest.mark.litert
def test_cli_compares_models_saves_files_and_enforces_budgets(tmp_path, onnx_fp32, tflite_fp32):
    runner = CliRunner()
    args = ["profile", str(tflite_fp32), str(onnx_fp32), "--runs", "10", "--min-seconds", "0.05",
            "--warmup-seconds", "0"]
    saved = [tmp_path / f"r.{ext}" for ext in ("json", "csv", "md", "html")]
    result = runner.invoke(cli, [*args, "--json", *sum((["--save", str(p)] for p in saved), [])])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [Path(r["model"]).name for r in reports] == ["tiny_fp32.tflite", "tiny_fp32.onnx"]
    assert "latencies_ms" not in reports[0]  # samples go to files, not the terminal
    on_disk = json.loads(saved[0].read_text())
    assert len(on_disk) == 2 and len(on_disk[0]["latencies_ms"]) == on_disk[0]["runs"]
    assert saved[1].read_text().splitlines()[0].startswith("model,backend,engine")
    assert "| tiny_fp32.onnx | onnxruntime |" in saved[2].read_text()
    assert "data:image/png;base64," in saved[3].read_text()

    breach = runner.invoke(cli, [*args, "--fail-if", "p50_ms>0.0000001"])
    assert breach.exit_code == 1 and "breaking --fail-if p50_ms>0.0000001" in breach.stderr
    # against its own run of a moment ago (a microsecond model: timing noise alone can exceed 10 %)
    fine = runner.invoke(cli, [*args, "--fail-if", "p50_ms>1000", "--baseline", str(saved[0]),
                               "--max-regression", "1000%"])
    assert fine.exit_code == 0, fine.output
    slow_baseline = tmp_path / "fast_old.json"
    data = json.loads(saved[0].read_text())
    for entry in data:
        entry["latency_ms"]["p50"] /= 100  # pretend last week's run was 100x faster
    slow_baseline.write_text(json.dumps(data))
    regressed = runner.invoke(cli, [*args, "--baseline", str(slow_baseline), "--max-regression", "10%"])
    assert regressed.exit_code == 1 and "p50 regressed" in regressed.stderr and "over --max-regression 10%" in (
        regressed.stderr)
    bad = runner.invoke(cli, [*args, "--fail-if", "speed>3"])
    assert bad.exit_code == 1 and "is not METRIC>VALUE" in bad.stderr


@pytest.mark.onnxruntime
def test_thread_sweep(onnx_fp32):
    result = CliRunner().invoke(cli, ["profile", str(onnx_fp32), "--threads", "1,2", "--runs", "5",
                                      "--min-seconds", "0.02", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["threads"] for r in json.loads(result.stdout)] == [1, 2]


@pytest.mark.litert
def test_profile_real_input_from_npy(tmp_path, tflite_int8):
    np.save(tmp_path / "x.npy", tiny.sample_inputs(1))
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), "--input", f"input={tmp_path / 'x.npy'}",
                                      "--runs", "5", "--min-seconds", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"] == "given"


def test_profile_is_exported():
    assert edgekit.profile is profile
