"""LiteRT's XNNPACK options through edgekit: the weight cache's cold start and memory, forced fp16 arithmetic's speed.

Two networks built as torchvision builds them (tests/models/torch_zoo.py: a ResNet and a MobileNetV3, BatchNorm
statistics measured on data) and a wide convolution stack whose weights (38 MB) dominate, as a large model's
do, are converted to tflite-fp32. Then, on this CPU:

- cold start: a fresh process per sample loads the model and runs it once, with the Interpreter (the
  default), the CompiledModel without options, and the CompiledModel with ``weight_cache=`` (its first load
  writes the cache, every later load maps it); load + first run in ms and the process's peak RSS growth
  over the load, median and spread of ``--processes`` processes each;
- steady state: ``precision="f32"`` against ``precision="f16"`` (XNNPACK's FORCE_FP16), interleaved in rounds,
  and the cosine between their outputs. On x86, XNNPACK emulates fp16 (no arithmetic of its own): slower is
  the expected result; the speed-up is an Armv8.2+ effect (Pi 5's Cortex-A76) this machine cannot show.

    python benchmarks/xnnpack_options.py [--processes 7] [--rounds 7]

Goal (issue 31): the weight cache's later loads faster than its first and than the CompiledModel without
it, outputs bit-identical; forced fp16 within fp16's precision of f32 (cosine >= 0.999).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "models"))

from convert import cpu_name  # noqa: E402

MODELS = ("resnet", "mobilenet_v3", "wide")
LOADS = {"interpreter": {}, "compiled": {"api": "compiled"}, "compiled + weight_cache": {"weight_cache": None}}


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(path: str, options: str) -> None:
    """One cold start: engine imported first, so the figure is the load and first run, not Python's imports."""
    import ai_edge_litert.compiled_model  # noqa: F401

    import edgekit

    feed = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    before = _peak_rss_mb()
    start = time.perf_counter()
    with edgekit.load(path, threads=1, **json.loads(options)) as runtime:
        output = next(iter(runtime.run(feed).values()))
        elapsed = (time.perf_counter() - start) * 1e3
    print(json.dumps({"ms": elapsed, "rss_mb": _peak_rss_mb() - before, "sum": float(np.asarray(output).sum())}))


def cold_starts(path: Path, options: dict, processes: int) -> list[dict]:
    samples = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, __file__, "--child", str(path), json.dumps(options)],
                              capture_output=True, text=True, check=True)
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return samples


def steady_state(path: Path, rounds: int, calls: int = 20) -> tuple[dict[str, list[float]], float]:
    import edgekit

    feed = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    runtimes = {p: edgekit.load(path, threads=1, precision=p) for p in ("f32", "f16")}
    outputs = {p: np.asarray(next(iter(rt.run(feed).values())), np.float64).ravel() for p, rt in runtimes.items()}
    medians: dict[str, list[float]] = {p: [] for p in runtimes}
    for _ in range(rounds):
        for precision, runtime in runtimes.items():
            runtime.run(feed)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                runtime.run(feed)
                times.append((time.perf_counter() - start) * 1e3)
            medians[precision].append(statistics.median(times))
    for runtime in runtimes.values():
        runtime.close()
    a, b = outputs["f32"], outputs["f16"]
    return medians, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _build(name: str):
    import torch
    import torch_zoo

    if name != "wide":
        return torch_zoo.build(name)
    torch.manual_seed(0)

    class Wide(torch.nn.Module):  # 4 x conv3x3 512->512 on 8x8: packing its weights is most of a cold start
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 512, 8, stride=8)
            self.body = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(512, 512, 3, padding=1),
                                                                  torch.nn.ReLU()) for _ in range(4)])

        def forward(self, images):
            return self.body(self.stem(images)).mean((2, 3))

    model = Wide().eval()
    for conv in model.body:  # keep activations from vanishing or exploding through the stack
        torch.nn.init.kaiming_normal_(conv[0].weight, nonlinearity="relu")
    return model, {"images": torch.rand(1, 3, 64, 64)}


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(*args.child)
    import edgekit

    print(f"CPU: {cpu_name()}; 1 thread; {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in MODELS:
            model, example = _build(name)
            [made] = edgekit.convert(model, "tflite-fp32", example_inputs=example, output_dir=Path(scratch) / name,
                                     validate_outputs=False, check_speed=False)
            path = Path(made.artifact)
            print(f"\n## {name} ({path.stat().st_size / 1e6:.2f} MB tflite-fp32)\n"
                  "| load | load + first run ms | peak RSS growth MB |\n| --- | --- | --- |")
            sums = set()
            for label, options in LOADS.items():
                if "weight_cache" in options:
                    cache = Path(scratch) / f"{name}.xnnpack_cache"
                    options = {"weight_cache": str(cache)}
                    first = cold_starts(path, options, 1)  # writes the cache
                    print(f"| {label}, first (writes {cache.stat().st_size / 1e6:.2f} MB) | {first[0]['ms']:.1f} | "
                          f"{first[0]['rss_mb']:.1f} |")
                    label += ", later"
                samples = cold_starts(path, options, args.processes)
                sums |= {s["sum"] for s in samples}
                ms, rss = [s["ms"] for s in samples], [s["rss_mb"] for s in samples]
                print(f"| {label} | {_spread(ms)} | {_spread(rss)} |")
            medians, cosine = steady_state(path, args.rounds)
            f32, f16 = statistics.median(medians["f32"]), statistics.median(medians["f16"])
            print(f"\nsteady state: f32 {_spread(medians['f32'], 3)} ms, forced f16 {_spread(medians['f16'], 3)} ms "
                  f"({f32 / f16:.2f}x f32), cosine {cosine:.6f}; cold-start outputs identical across loads: "
                  f"{len(sums) == 1}")


if __name__ == "__main__":
    main()
