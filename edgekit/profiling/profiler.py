"""One benchmark method for every engine: ``edgekit.profile``.

Phases are timed separately: load (and compile), first inference, warm-up and
steady state. The steady state runs at least ``runs`` times AND at least
``min_seconds`` (TFLite benchmark_model's defaults: 50 runs, 1 s), capped at
``max_seconds``. Every report carries the device's state before and after and
says when the run should not be trusted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.profiling.system_state import DeviceState, instability_reasons, snapshot, throttle_limit_c
from edgekit.runtimes.base import Runtime
from edgekit.runtimes.quantization import dequantize

PERCENTILES = (50, 90, 95, 99)
PER_OP_RUNS = 20


@dataclass(frozen=True)
class LatencyStats:
    mean: float
    std: float
    cv: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms: list[float] | np.ndarray) -> LatencyStats:
        """Population statistics; percentiles interpolate linearly between ranks (numpy's default)."""
        values = np.asarray(latencies_ms, dtype=np.float64)
        mean = float(values.mean())
        std = float(values.std())
        p50, p90, p95, p99 = (float(np.percentile(values, q)) for q in PERCENTILES)
        return cls(mean, std, std / mean if mean else 0.0, float(values.min()), p50, p90, p95, p99, float(values.max()))

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


NO_ENERGY = {"energy_mj_per_inference": None, "power_w": None, "seconds": None, "source": None}


@dataclass(frozen=True)
class ProfileReport:
    """The result of profiling one model on one configuration. ``to_dict`` keys are a contract."""

    model: str
    backend: str
    engine: str
    device: str
    threads: int | None
    precision: str  # what float layers ran in (OpenVINO: its own choice unless asked)
    latency_ms: LatencyStats
    throughput_ips: float
    runs: int
    steady_seconds: float
    load_ms: float
    first_inference_ms: float
    warmup_runs: int
    peak_rss_mb: float
    memory: dict[str, float]
    model_size_bytes: int
    per_op: list[dict[str, Any]]
    per_op_note: str
    system: dict[str, Any]
    unstable: list[str]
    inputs: str
    concurrency: int = 1
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    estimated: bool = False
    # the vendor simulator that ran it (its latency is not the device's: never a speed-up, a goal or a gate)
    simulated: str | None = None
    npu: dict[str, Any] | None = None  # an estimate's NPU figures (op coverage, memory)
    # energy.energy_report(), or its keys at None with a note saying why nothing was measured
    energy: dict[str, Any] = field(default_factory=lambda: dict(NO_ENERGY))

    def to_dict(self, *, include_samples: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "latencies_ms"}
        data["latency_ms"] = self.latency_ms.to_dict()
        if include_samples:
            data["latencies_ms"] = list(self.latencies_ms)
        return data

    def to_json(self, **kwargs: Any) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, default=str, **kwargs)


class _PeakRss:
    """Peak resident memory over a block, without a sampling thread: a thread waking every few
    milliseconds competes with the engine's workers and inflates latency (seen: +25 % on a 2-core
    machine). Linux resets the high-water mark via /proc/self/clear_refs; elsewhere the process
    lifetime peak is the best available."""

    def __init__(self) -> None:
        self.peak_mb = current_rss_mb()

    def __enter__(self) -> _PeakRss:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = max(_high_water_mb(), current_rss_mb())


def _high_water_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_feeds(runtime: Runtime, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None, *,
                 as_float: bool = False) -> tuple[dict[str, np.ndarray], bool]:
    """Seeded inputs in each input's real range: floats in [0, 1); quantized inputs get integers over
    their whole range (fed raw), or with ``as_float`` the float values those integers stand for.
    Returns the feeds and whether they must be fed raw."""
    from edgekit.pipeline.calibration import synthetic_shape

    rng = np.random.default_rng(seed)
    feeds, raw = {}, False
    for spec in runtime.inputs:
        shape = synthetic_shape(spec, (shapes or {}).get(spec.name))
        if spec.dtype.kind in "iu":
            info = np.iinfo(spec.dtype)
            low, high = (info.min, info.max) if spec.quantized else (0, 10)
            values = rng.integers(low, high, shape, endpoint=True, dtype=spec.dtype)
            if spec.quantized and as_float:
                feeds[spec.name] = dequantize(values, spec.scale, spec.zero_point)
            else:
                feeds[spec.name] = values
                raw = raw or spec.quantized
        elif spec.dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
    return feeds, raw


def _timed_loop(run: Callable[[], Any], *, min_runs: int, min_seconds: float, max_seconds: float,
                clock: Callable[[], float]) -> list[float]:
    latencies: list[float] = []
    start = clock()
    while True:
        before = clock()
        run()
        after = clock()
        latencies.append((after - before) * 1e3)
        elapsed = after - start
        if (len(latencies) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return latencies


def profile(
    model: str | os.PathLike[str] | Runtime,
    *,
    warmup_runs: int = 1,
    warmup_seconds: float = 0.5,
    runs: int = 50,
    min_seconds: float = 1.0,
    max_seconds: float = 150.0,
    threads: int | None = None,
    device: str = "cpu",
    backend: str | None = None,
    precision: str | None = None,
    inputs: dict[str, np.ndarray] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    per_op: bool = False,
    concurrency: int = 1,
    seed: int = 0,
    system_root: Path = Path("/"),
    energy: bool = True,
    idle_seconds: float = 1.0,
    _clock: Callable[[], float] = time.perf_counter,
    _run_command: Callable[[list[str]], str] | None = None,
) -> ProfileReport:
    """Benchmark a model (a path, loaded here, or an already loaded Runtime).

    Args:
        warmup_runs: Warm-up lasts at least this many runs (and ``warmup_seconds``).
        warmup_seconds: Warm-up lasts at least this many seconds (and ``warmup_runs``).
        runs: The steady state lasts at least this many runs and ``min_seconds``, and at most ``max_seconds``.
        min_seconds: The shortest steady state, in seconds.
        max_seconds: The longest steady state, in seconds.
        threads: As in ``edgekit.load`` (ignored for a Runtime).
        device: As in ``edgekit.load`` (ignored for a Runtime).
        backend: As in ``edgekit.load`` (ignored for a Runtime).
        precision: As in ``edgekit.load`` (ignored for a Runtime).
        inputs: Real feeds ``{name: array}`` (float data is quantized as usual); default seeded random
            data in each input's range.
        input_shapes: Shapes for dynamic inputs of the random data (default: 1 for each dynamic dim).
        per_op: Also time each op where the engine exposes it (ONNX Runtime, OpenVINO).
        concurrency: Run this many requests at once (OpenVINO async requests, threads elsewhere)
            and report throughput.
        energy: Where the device measures power (RAPL, a Raspberry Pi 5's PMIC, a Jetson's INA3221), record
            it during the timed runs after ``idle_seconds`` of idle power, and report the energy each inference
            added (the report's ``energy``); elsewhere ``energy`` says why there is none.
        idle_seconds: How long idle power is measured before the timed runs, with ``energy``.
    """
    from edgekit._api import load
    from edgekit.profiling.energy import Recorder, energy_report, find_meter

    meter, energy_note = find_meter(system_root, *([_run_command] if _run_command else [])) if energy \
        else (None, "not requested")
    idle = None
    if meter is not None:
        recorder = Recorder(meter).start()
        time.sleep(idle_seconds)
        idle = recorder.stop()
    state_before = snapshot(system_root)
    rss_before = current_rss_mb()
    with _PeakRss() as load_sampler:
        start = _clock()
        runtime = model if isinstance(model, Runtime) else load(model, backend=backend, device=device,
                                                               threads=threads, precision=precision)
        load_ms = (_clock() - start) * 1e3 if not isinstance(model, Runtime) else 0.0
    owned = not isinstance(model, Runtime)
    try:
        if inputs is None:
            feeds, raw = random_feeds(runtime, seed, input_shapes)
            described = f"random (seed {seed})"
        else:
            feeds, raw, described = inputs, False, "given"
        with _PeakRss() as run_sampler:
            start = _clock()
            runtime.run(feeds, raw=raw)
            first_ms = (_clock() - start) * 1e3
            warm = _timed_loop(lambda: runtime.run(feeds, raw=raw), min_runs=warmup_runs,
                               min_seconds=warmup_seconds, max_seconds=max(warmup_seconds, 1e-9) * 20 + 5,
                               clock=_clock) if warmup_runs > 0 or warmup_seconds > 0 else []
            recorder = Recorder(meter).start() if meter is not None else None
            if concurrency > 1:
                latencies, wall_s = _concurrent(runtime, feeds, raw, concurrency, threads, device, backend,
                                                runs=runs, min_seconds=min_seconds, max_seconds=max_seconds)
            else:
                latencies = _timed_loop(lambda: runtime.run(feeds, raw=raw), min_runs=runs,
                                        min_seconds=min_seconds, max_seconds=max_seconds, clock=_clock)
                wall_s = sum(latencies) / 1e3
            measured = energy_report(meter, idle, recorder.stop(), len(latencies)) if recorder else \
                {**NO_ENERGY, "note": energy_note}
        ops, ops_note = _per_op(runtime, feeds, raw) if per_op else ([], "not requested")
        state_after = snapshot(system_root)
        stats = LatencyStats.of(latencies)
        system = _system(runtime, state_before, state_after, system_root)
        limit = throttle_limit_c(system_root, system.get("board"))
        size = runtime.model_file.size_bytes if runtime.model_file else Path(runtime.path).stat().st_size
        return ProfileReport(
            model=str(runtime.path), backend=runtime.backend, engine=runtime.engine, device=runtime.device,
            threads=threads, precision=runtime.precision, latency_ms=stats,
            throughput_ips=len(latencies) / wall_s if wall_s else 0.0,
            runs=len(latencies), steady_seconds=wall_s, load_ms=load_ms, first_inference_ms=first_ms,
            warmup_runs=len(warm), peak_rss_mb=max(load_sampler.peak_mb, run_sampler.peak_mb),
            memory={"rss_before_mb": rss_before, "peak_load_mb": load_sampler.peak_mb,
                    "peak_run_mb": run_sampler.peak_mb, "model_delta_mb": load_sampler.peak_mb - rss_before},
            model_size_bytes=size, per_op=ops, per_op_note=ops_note, system=system,
            unstable=instability_reasons(stats.cv, state_before, state_after, limit), inputs=described,
            concurrency=concurrency, latencies_ms=[round(v, 6) for v in latencies], energy=measured,
            simulated=runtime.simulated,
        )
    finally:
        if owned:
            runtime.close()


def _system(runtime: Runtime, before: DeviceState, after: DeviceState, root: Path) -> dict[str, Any]:
    from edgekit.devices import describe_system, read_board

    system = describe_system()
    return {"os": system.os, "arch": system.arch, "cpu": system.cpu, "cores": system.cores,
            "python": system.python, "board": read_board(root / "proc"),
            "versions": {"edgekit": __version__, "engine": runtime.engine},
            "governor": before.governor, "frequencies_mhz": list(before.frequencies_mhz),
            "temperatures": {"before_c": before.temperatures_c, "after_c": after.temperatures_c},
            "throttling": {"before": before.throttle_flags(), "after": after.throttle_flags(),
                           "before_raw": before.throttled, "after_raw": after.throttled}}


def _per_op(runtime: Runtime, feeds: dict[str, np.ndarray], raw: bool) -> tuple[list[dict[str, Any]], str]:
    timings = runtime.profile_ops(feeds, runs=PER_OP_RUNS, raw=raw)
    if timings is None:
        return [], f"not available: {runtime.engine} exposes no per-op timings"
    total = sum(t["total_ms"] for t in timings) or 1.0
    rows = [dict(t, percent=100.0 * t["total_ms"] / total) for t in timings]
    return sorted(rows, key=lambda r: -r["total_ms"]), f"mean over {PER_OP_RUNS} runs, per inference"


def _concurrent(runtime: Runtime, feeds: dict[str, np.ndarray], raw: bool, workers: int,
                threads: int | None, device: str, backend: str | None, *, runs: int, min_seconds: float,
                max_seconds: float) -> tuple[list[float], float]:
    """Throughput mode: the engine's own async requests when it has them, else one runtime per thread."""
    if hasattr(runtime, "run_concurrently"):
        return runtime.run_concurrently(feeds, requests=workers, min_runs=runs, min_seconds=min_seconds,
                                        max_seconds=max_seconds, raw=raw)
    from edgekit._api import load

    extra = [load(runtime.path, backend=runtime.backend, device=device, threads=threads) for _ in range(workers - 1)]
    results: list[list[float]] = [[] for _ in range(workers)]

    def work(index: int, rt: Runtime) -> None:
        results[index] = _timed_loop(lambda: rt.run(feeds, raw=raw), min_runs=max(1, runs // workers),
                                     min_seconds=min_seconds, max_seconds=max_seconds, clock=time.perf_counter)

    pool = [threading.Thread(target=work, args=(i, rt)) for i, rt in enumerate([runtime, *extra])]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall_s = time.perf_counter() - start
    for rt in extra:
        rt.close()
    return [v for part in results for v in part], wall_s


def estimate(model: str | os.PathLike[str], npu_config: str, *, system_config: str | None = None,
             memory_mode: str | None = None) -> ProfileReport:
    """An Arm Ethos-U estimate in the profiler's schema (``estimated: true``), from Vela: no NPU needed.

    ``model`` is a full-int8 .tflite; ``latency_ms`` holds Vela's estimated time per inference.
    """
    import tempfile

    from edgekit.devices import describe_system
    from edgekit.runtimes.audit import audit_model
    from edgekit.runtimes.errors import UnsupportedModelError
    from edgekit.runtimes.formats import open_model_file
    from edgekit.runtimes.vela import compile_for_ethos_u

    checked = open_model_file(model)
    if checked.format != "tflite" or not audit_model(checked).integer_compute:
        raise UnsupportedModelError(f"--estimate needs a full-int8 .tflite; '{model}' is not one (convert with "
                                    "--to tflite-int8 first)")
    with tempfile.TemporaryDirectory() as folder:
        result = compile_for_ethos_u(Path(model), Path(folder), npu_config=npu_config, system_config=system_config,
                                     memory_mode=memory_mode)
    ms = result.inference_time_ms
    host = describe_system()
    npu = result.to_dict()
    npu.pop("output")
    return ProfileReport(
        model=str(model), backend="vela-estimate", engine=f"vela {result.vela_version}", device=npu_config,
        threads=None, precision="int8 (NPU)", latency_ms=LatencyStats(ms, 0.0, 0.0, ms, ms, ms, ms, ms, ms),
        throughput_ips=result.inferences_per_second, runs=0, steady_seconds=0.0, load_ms=0.0, first_inference_ms=ms,
        warmup_runs=0, peak_rss_mb=0.0,
        memory={"sram_used_kib": result.sram_used_kib, "dram_used_kib": result.dram_used_kib,
                "flash_used_kib": result.on_chip_flash_used_kib + result.off_chip_flash_used_kib},
        model_size_bytes=Path(model).stat().st_size, per_op=[],
        per_op_note="not available: Vela estimates the whole network", inputs="n/a (estimate)",
        system={"os": host.os, "arch": npu_config, "cpu": f"Arm {npu_config} at {result.core_clock_mhz:.0f} MHz",
                "cores": 1, "python": host.python, "board": result.system_config,
                "versions": {"edgekit": __version__, "engine": f"vela {result.vela_version}"}, "governor": None,
                "frequencies_mhz": [result.core_clock_mhz], "temperatures": {"before_c": {}, "after_c": {}},
                "throttling": {"before": [], "after": [], "before_raw": None, "after_raw": None}},
        unstable=[], estimated=True, npu=npu,
    )
