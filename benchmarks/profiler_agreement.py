"""Does edgekit's profiler agree with each engine's own tool? Same model, same threads, interleaved.

    python benchmarks/profiler_agreement.py [--threads 2] [--rounds 3]

On MobileNetV2 (224, random weights; built once with TensorFlow and cached):
  OpenVINO: our p50 vs ``benchmark_app`` (sync API, 1 stream, same threads, both at OpenVINO's own default
            precision: bf16 on bf16-capable x86),
  LiteRT:   our p50 vs ``litert-benchmark`` (shipped with ai-edge-litert; median),
  ONNX Runtime: our p50 vs a plain raw-API timing loop (ORT ships no benchmark tool in its wheel).
Rounds alternate the tools so drift on a shared machine hits both. Goal (issue 6): within 5 %, judged on the
median per-round ratio's 95 % interval: "inconclusive" when it straddles an edge of the goal (two runs once
gave OpenVINO 0.99 and 0.75).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert import against_goal, cpu_name, speedup_interval  # noqa: E402
from runtime_overhead import mobilenet_models  # noqa: E402

AGREEMENT = (0.95, 1.05)

BIN = Path(sys.executable).parent


def ours(path: Path, backend: str, threads: int) -> float:
    import edgekit

    time.sleep(0.5)  # let the previous tool's threads go idle
    return edgekit.profile(path, backend=backend, threads=threads, runs=100, min_seconds=3.0).latency_ms.p50


def benchmark_app(path: Path, threads: int) -> float:
    out = subprocess.run([str(BIN / "benchmark_app"), "-m", str(path), "-d", "CPU", "-api", "sync", "-nstreams", "1",
                          "-nthreads", str(threads), "-hint", "none", "-t", "3"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Median:\s+([\d.]+)\s*ms", out).group(1))


def litert_benchmark(path: Path, threads: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "r.json"
        subprocess.run([str(BIN / "litert-benchmark"), "--model", str(path), "--num_runs", "100",
                        "--num_threads", str(threads), "--result_json", str(result)],
                       capture_output=True, text=True, check=True)
        return float(json.loads(result.read_text())["latency"]["median_ms"])


def raw_ort(path: Path, threads: int) -> float:
    import onnxruntime as ort

    time.sleep(0.5)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)}
    for _ in range(5):
        session.run(None, feeds)
    times = []
    deadline = time.perf_counter() + 3.0
    while len(times) < 100 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9, help="9 is the fewest whose interval drops the extremes")
    args = parser.parse_args()
    models, _ = mobilenet_models()
    pairs = {
        "openvino": (lambda: ours(models["openvino"], "openvino", args.threads),
                     lambda: benchmark_app(models["openvino"], args.threads), "benchmark_app"),
        "litert": (lambda: ours(models["litert"], "litert", args.threads),
                   lambda: litert_benchmark(models["litert"], args.threads), "litert-benchmark"),
        "onnxruntime": (lambda: ours(models["onnxruntime"], "onnxruntime", args.threads),
                        lambda: raw_ort(models["onnxruntime"], args.threads), "raw session.run loop"),
    }
    print(f"CPU: {cpu_name()}")
    print(f"MobileNetV2 224, {args.threads} threads, {args.rounds} interleaved rounds (medians; ratio per round, "
          "[95 % interval])")
    print(f"{'engine':<12} {'edgekit p50 ms':>15} {'tool p50 ms':>12} {'ratio':>20}  within 5 %?  tool")
    for engine, (mine, theirs, tool) in pairs.items():
        a, b = [], []
        for round_index in range(args.rounds):  # alternate who goes first: no side always gets a warm machine
            if round_index % 2:
                b.append(theirs())
                a.append(mine())
            else:
                a.append(mine())
                b.append(theirs())
        ratio, low, high = speedup_interval(a, b)
        print(f"{engine:<12} {statistics.median(a):>15.3f} {statistics.median(b):>12.3f} "
              f"{ratio:>6.3f} [{low:.3f}-{high:.3f}]  {against_goal(low, high, *AGREEMENT)}  {tool}")


if __name__ == "__main__":
    main()
