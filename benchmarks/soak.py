"""Soak: does a long-running app leak? 50,000 Runtime.run calls per engine, resident memory sampled.

    python benchmarks/soak.py [--calls 50000]

Each engine runs in its own process (so one engine's allocations are not charged to another); RSS is
sampled every 1,000 calls. Growth is measured from the end of warm-up (the first 5,000 calls) to the
end. Goal (issue 8): no growth beyond 5 MB after warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP_CALLS = 5_000
SAMPLE_EVERY = 1_000

_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {models!r})
import edgekit, tiny
from edgekit.profiling.profiler import current_rss_mb
calls, path = int(sys.argv[1]), sys.argv[2]
inputs = [tiny.sample_inputs(1 + i % 4, seed=i) for i in range(8)]
samples = []
with edgekit.load(path) as rt:
    for call in range(1, calls + 1):
        rt.run(inputs[call % 8])
        if call % {every} == 0:
            samples.append([call, current_rss_mb()])
print(json.dumps(samples))
"""


def soak(path: Path, calls: int) -> list[list[float]]:
    code = _CHILD.format(models=str(ROOT / "tests" / "models"), every=SAMPLE_EVERY)
    done = subprocess.run([sys.executable, "-c", code, str(calls), str(path)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import onnx
    import openvino as ov
    import tiny

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "tiny_int8io.onnx"
        onnx.save(tiny.make_onnx(int8_io=True), onnx_path)
        float_onnx = Path(folder) / "tiny.onnx"
        onnx.save(tiny.make_onnx(), float_onnx)
        ov.save_model(ov.Core().read_model(float_onnx), Path(folder) / "tiny.xml", compress_to_fp16=False)
        models = {"litert (int8)": tiny.HERE / "tiny_int8.tflite", "onnxruntime (int8 I/O)": onnx_path,
                  "openvino": Path(folder) / "tiny.xml"}
        print(f"{args.calls:,} calls per engine (batches 1-4), RSS sampled every {SAMPLE_EVERY:,} calls")
        print(f"{'engine':<24} {'RSS after warm-up MB':>21} {'RSS at end MB':>14} {'growth MB':>10} {'max MB':>8}")
        for name, path in models.items():
            samples = soak(path, args.calls)
            after_warmup = next(rss for call, rss in samples if call >= WARMUP_CALLS)
            end, peak = samples[-1][1], max(rss for _, rss in samples)
            print(f"{name:<24} {after_warmup:>21.1f} {end:>14.1f} {end - after_warmup:>10.2f} {peak:>8.1f}")


if __name__ == "__main__":
    main()
