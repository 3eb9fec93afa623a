"""Conversion cost and payoff per target: time, peak memory, size ratio, int8 vs float latency.

Each conversion runs in its own subprocess so its peak RSS is its own. Latency
is measured through ``edgekit.load`` with the artifacts interleaved in rounds in
one process (median of per-round medians), so machine noise hits all alike; a
pause before each model's turn lets the previous engine's spinning threads idle.

    python benchmarks/convert.py                     # digits CNN, all targets (about a minute)
    python benchmarks/convert.py --mobilenet         # + MobileNetV2 224, random weights, 200 calibration samples
    python benchmarks/convert.py --streaming 5000    # + memory while streaming a 5000-image calibration folder
    python benchmarks/convert.py --torch             # + tests/models/torch_zoo.py's four nets from PyTorch (.pt2)
                                                     #   and from their ONNX export to TFLite (onnx2tf)

Goals (MobileNetV2, 2 threads): tflite-int8 >= 2.5x faster than tflite-fp32, size <= 0.28x (issue 3);
onnx-int8 >= 2.5x faster than onnx-fp32 with the default flags (issue 4); openvino-int8 >= 1.5x faster
than openvino-fp32 (issue 5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))

TARGETS = {
    "tflite": ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int16x8"],
    "onnx": ["onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8"],
    "openvino": ["openvino-fp32", "openvino-fp16", "openvino-int8"],
}
FLOAT_BASELINE = {"tflite": "tflite-fp32", "onnx": "onnx-fp32", "openvino": "openvino-fp32"}


def _child_convert(args: argparse.Namespace) -> None:
    """Run one conversion; print its JSON summary (time, peak RSS) on stdout."""
    import edgekit

    start = time.perf_counter()
    # ops without an int8 kernel stay float (listed in the audit) rather than failing the row
    options = {"allow_float_ops": True} if args.target == "tflite-int8" else {}
    (result,) = edgekit.convert(args.source, args.target, calibration=args.calib, calib_size=args.calib_size,
                                validation_size=args.val_size, output_dir=args.out, force=True,
                                repair=not args.no_repair, **options)
    if not result.passed:  # a failed artifact is no row: timing it would publish a form edgekit refused
        print(json.dumps({"target": args.target,
                          "error": f"{result.report['status']}: {'; '.join(result.report['failures'])}"}))
        return
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    validation = result.validation or {}
    print(json.dumps({"target": args.target, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb,
                      "artifact": str(result.artifact), "size_bytes": result.report["artifact"]["size_bytes"],
                      "accuracy": validation.get("accuracy_converted"),
                      "accuracy_float": validation.get("accuracy_float"),
                      "cosine": min((m["cosine"] for m in validation.get("outputs", {}).values()), default=None),
                      "placement": placement(result.report["options"], result.report.get("repair"))}))


def placement(options: dict, repair: dict | None = None) -> str:
    """Where an int8 conversion put int8, what it rewrote for its engine and the remedy the repair chose
    (when the default collapsed), in a few words for a table."""
    parts = [f"repaired: {repair['chosen']}"] if repair and repair.get("chosen") else []
    if "int8_placement" in options:
        parts.append(options["int8_placement"].split(":")[0])
    if options.get("preset"):
        parts.append(f"NNCF preset {options['preset']}")
    if options.get("rewritten_before_quantization"):
        parts.append("rewrote " + ", ".join(line.split(" as ")[0].split(" folded")[0].split(" (")[0]
                                            for line in options["rewritten_before_quantization"]))
    if options.get("kept_float_for_engine"):
        parts.append("float: " + ", ".join(options["kept_float_for_engine"]))
    return "; ".join(parts)


def convert_in_subprocess(source: Path, target: str, calib: str, out: Path, calib_size: int, val_size: int,
                          repair: bool = True) -> dict:
    command = [sys.executable, __file__, "--child", "--source", str(source), "--target", target, "--calib", calib,
               "--calib-size", str(calib_size), "--val-size", str(val_size), "--out", str(out)]
    command += [] if repair else ["--no-repair"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode:
        return {"target": target, "error": child_failure(done)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_failure(done: subprocess.CompletedProcess) -> str:
    """A failed child's last stderr line, or how it ended when it wrote none (killed: often out of memory)."""
    last = (done.stderr or "").strip().splitlines()
    if last:
        return last[-1]
    if done.returncode < 0:
        return f"killed by signal {-done.returncode} (out of memory? SIGKILL is what the kernel's OOM killer sends)"
    return f"exit status {done.returncode}, no message"


def round_medians_ms(paths: dict[str, Path], threads: int, rounds: int,
                     calls: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Each artifact's median latency per round, the artifacts interleaved in every round (so a round's
    figures are paired: machine noise in that round hit them all), and the precision each one ran in."""
    import edgekit

    runtimes = {t: edgekit.load(p, threads=threads) for t, p in paths.items()}
    feeds = {}
    for target, rt in runtimes.items():
        feeds[target] = {s.name: _feed(s) for s in rt.inputs}
        for _ in range(3):
            rt.run(feeds[target])
    samples: dict[str, list[float]] = {t: [] for t in runtimes}
    for _ in range(rounds):
        for target, rt in runtimes.items():
            # Engines' worker threads spin for a while after a call; let the previous model's go idle
            # and re-warm this one, or the models slow each other down (seen: 2-3x on ONNX Runtime).
            time.sleep(0.1)
            rt.run(feeds[target])
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                rt.run(feeds[target])
                times.append((time.perf_counter() - start) * 1e3)
            samples[target].append(statistics.median(times))
    precisions = {target: rt.precision for target, rt in runtimes.items()}
    for rt in runtimes.values():
        rt.close()
    return samples, precisions


def latencies_ms(paths: dict[str, Path], threads: int, rounds: int, calls: int) -> dict[str, float]:
    """Median of the per-round medians (``round_medians_ms``)."""
    rounds_ms, _ = round_medians_ms(paths, threads, rounds, calls)
    return {t: statistics.median(v) for t, v in rounds_ms.items()}


def _interval_rank(n: int) -> int:
    """k such that [r(k), r(n+1-k)] of n sorted samples holds their population median with >= 95 %
    probability (the sign test's interval, no assumption on the distribution); 1 when n is too small."""
    k = 1
    while k < n // 2 and 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= 0.05:
        k += 1
    return k


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the median of per-round figures and its >= 95 % distribution-free interval."""
    ordered = sorted(values)
    k = _interval_rank(len(ordered))
    return statistics.median(ordered), ordered[k - 1], ordered[-k]


def speedup_interval(base_ms: list[float], other_ms: list[float]) -> tuple[float, float, float]:
    """``base / other`` per round (paired: both measured in the same round), as (median, low, high)."""
    return median_interval([b / o for b, o in zip(base_ms, other_ms)])


def against_goal(low: float, high: float, goal_low: float, goal_high: float) -> str:
    """Whether a figure's interval lies inside the goal's range, outside it, or straddles its edge."""
    if goal_low <= low and high <= goal_high:
        return "meets the goal"
    if high < goal_low or low > goal_high:
        return "misses the goal"
    return "inconclusive at this noise"


def describe_speedup(median: float, low: float, high: float) -> str:
    """``x1.45 [1.40-1.52]``, or ``inconclusive`` with the interval when it holds 1.0 (the sign of the
    effect is not known at this noise)."""
    interval = f"[{low:.2f}-{high:.2f}]"
    return f"inconclusive {interval}" if low < 1.0 < high else f"x{median:.2f} {interval}"


def cpu_name() -> str:
    """This machine's CPU model and its int8 instructions, for every figure a benchmark prints."""
    from edgekit.runtimes.cpu import describe_cpu

    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    return f"{names[0] if names else 'unknown CPU'} ({describe_cpu('auto')})"


def _feed(spec) -> np.ndarray:
    shape = tuple(1 if d is None else d for d in spec.shape)
    if spec.dtype.kind in "iu" and spec.scale is None:  # token ids, masks: ones are valid for any vocabulary
        return np.ones(shape, spec.dtype)
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def bench(label: str, source: Path, calib: str, work: Path, *, threads: int, calib_size: int, val_size: int,
          rounds: int, calls: int, families: list[str]) -> dict[str, Path]:
    """Convert ``source`` to every target of ``families``, print the table; return the artifacts made."""
    print(f"\n## {label}  (source {source.name}, {calib_size} calibration samples, {threads} threads)")
    rows = []
    for family in families:
        for target in TARGETS[family]:
            rows.append(convert_in_subprocess(source, target, calib, work, calib_size, val_size))
    ok = {r["target"]: Path(r["artifact"]) for r in rows if "error" not in r}
    latency = latencies_ms(ok, threads, rounds, calls)
    print(f"{'target':<18}{'convert s':>10}{'peak MB':>9}{'size KB':>10}{'size x':>8}{'p50 ms':>9}{'speed-up':>9}"
          f"{'acc %':>8}{'cosine':>8}")
    for row in rows:
        if "error" in row:
            print(f"{row['target']:<18} failed: {row['error']}")
            continue
        family = row["target"].split("-")[0]
        base = next((r for r in rows if r["target"] == FLOAT_BASELINE[family] and "error" not in r), row)
        accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.1f}"
        cosine = "" if row["cosine"] is None else f"{row['cosine']:.4f}"
        print(f"{row['target']:<18}{row['seconds']:>10.1f}{row['peak_rss_mb']:>9.0f}{row['size_bytes'] / 1024:>10.1f}"
              f"{row['size_bytes'] / base['size_bytes']:>8.3f}{latency[row['target']]:>9.3f}"
              f"{latency[base['target']] / latency[row['target']]:>9.2f}{accuracy:>8}{cosine:>8}")
    return ok


def digits_source(work: Path) -> tuple[Path, Path]:
    import digits

    x_train, y_train, x_test, y_test = digits.load_split()
    model = digits.train_cnn(work / "digits.keras")
    folder = digits.write_image_folder(work / "digit-images", x_test, y_test)
    return model, folder


def mobilenet_source(work: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    path = work / "mobilenetv2.keras"
    keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(path)
    return path


def torch_sources(work: Path) -> list[tuple[str, Path, Path]]:
    """Each torch_zoo net saved as a .pt2 (what a PyTorch user hands the CLI) with a calibration .npz."""
    import torch
    import torch_zoo

    made = []
    for name in torch_zoo.NAMES:
        model, example = torch_zoo.build(name)
        pt2, calib = work / f"{name}.pt2", work / f"{name}-calib.npz"
        torch.export.save(torch.export.export(model, (), kwargs=example), pt2)
        np.savez(calib, **torch_zoo.inputs_for(name, 120, seed=1))
        made.append((name, pt2, calib))
    return made


def streaming_memory(count: int, work: Path) -> None:
    """Peak RSS growth while streaming ``count`` 224x224 images through a calibration split."""
    from edgekit.runtimes.base import TensorSpec
    from PIL import Image

    import edgekit

    folder = work / "stream"
    rng = np.random.default_rng(0)
    for i in range(count):
        (folder / str(i % 10)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / str(i % 10) / f"{i}.jpg")
    spec = TensorSpec("input", (None, 224, 224, 3), np.dtype("float32"))
    dataset = edgekit.build_dataset(folder, [spec], calib_size=count - 10, validation_size=10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seen = sum(1 for _ in dataset.calibration.feeds())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    whole_mb = seen * 224 * 224 * 3 * 4 / 2**20
    print(f"\n## streaming calibration: {seen} images of 224x224x3 read lazily; peak RSS {before:.0f} -> {after:.0f} "
          f"MB (+{after - before:.1f} MB; the whole set as float32 would be {whole_mb:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mobilenet", action="store_true")
    parser.add_argument("--streaming", type=int, default=0, metavar="N")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--families", default=",".join(TARGETS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-repair", action="store_true", help=argparse.SUPPRESS)
    for option in ("--source", "--target", "--calib", "--out"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    parser.add_argument("--calib-size", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--val-size", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_convert(args)
        return
    families = args.families.split(",")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model, images = digits_source(work)
        bench("digits CNN", model, str(images), work / "digits-out", threads=args.threads, calib_size=200,
              val_size=200, rounds=20, calls=50, families=families)
        if args.mobilenet:
            bench("MobileNetV2 224 (random weights)", mobilenet_source(work), "random", work / "mnv2-out",
                  threads=args.threads, calib_size=200, val_size=20, rounds=10, calls=10, families=families)
        if args.torch:
            for name, pt2, calib in torch_sources(work):
                made = bench(f"{name} from PyTorch (.pt2)", pt2, str(calib), work / f"{name}-out",
                             threads=args.threads, calib_size=100, val_size=20, rounds=10, calls=20, families=families)
                if "onnx-fp32" in made and "tflite" in families:
                    bench(f"{name} from its ONNX export (onnx2tf)", made["onnx-fp32"], str(calib),
                          work / f"{name}-onnx-out", threads=args.threads, calib_size=100, val_size=20, rounds=10,
                          calls=20, families=["tflite"])
        if args.streaming:
            streaming_memory(args.streaming, work)


if __name__ == "__main__":
    main()
