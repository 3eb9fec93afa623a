"""How well ``edgekit optimize`` searches, on a space small enough to brute-force.

    python benchmarks/optimize.py [--model digits|mobilenet_v3|resnet] [--formats onnx,openvino] [--fraction 0.3]
                                  [--seeds 3] [--out DIR]

1. Brute force: every point of the space (no layers kept float, so a few hundred points at most) is
   converted, validated and profiled once — the reference front.
2. TPE with ``fraction`` of that many trials, for several sampler seeds, as further studies in the same output
   folder: their trials hit the brute-force run's cache, so every study sees the *same* measurements and the
   comparison is of the search alone. Reported: the fraction of the brute-force front's hypervolume each
   reaches (latency, drop, size; the feasible points only; reference point 1.1 x the worst of each).
3. Wall time per trial split into convert / validate / profile (from the brute-force run's trial table), and
   the cache hit rates of a rerun as a fresh study (every conversion and measurement should be a hit).

``digits`` is samples/pytorch_to_edge.py's CNN trained on sklearn's digits, calibrated and judged on the
bundled images it never trained on; ``mobilenet_v3`` and ``resnet`` are tests/models/torch_zoo.py's nets
(64 x 64: MobileNetV3 trained on the digits, ResNet with BatchNorm statistics measured on rendered pages),
calibrated and judged on more of the images each takes. The
drop is judged by cosine with the float model (``--cosine 0.99``): with labels every form of an easy model
ties at a drop of 0, which leaves a one-point front and nothing for a search to find; the cosine separates
fp32, fp16 and each int8 setting. A fourth row draws as many points at random from the brute-force run, to
show what a search without a model of the space gets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "samples" / "digits" / "images"


def digits_onnx(folder: Path) -> Path:
    import torch

    import edgekit

    spec = importlib.util.spec_from_file_location("pytorch_to_edge", ROOT / "samples" / "pytorch_to_edge.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    (result,) = edgekit.convert(sample.train(), "onnx-fp32", example_inputs=torch.zeros(1, 1, 8, 8), name="digits",
                                output_dir=folder, validate_outputs=False, force=True)
    return result.artifact


def zoo_onnx(name: str, folder: Path) -> tuple[Path, Path]:
    """A torch_zoo net as ONNX, and an .npy of the images it takes (digits or pages) to calibrate and judge it with."""
    import numpy as np

    import edgekit

    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import torch_zoo

    folder.mkdir(parents=True, exist_ok=True)
    model, example = torch_zoo.build(name)
    (result,) = edgekit.convert(model, "onnx-fp32", example_inputs=example, name=name, output_dir=folder,
                                validate_outputs=False, force=True)
    np.save(folder / "images.npy", torch_zoo.inputs_for(name, 400, seed=1)["images"])
    return result.artifact, folder / "images.npy"


def hypervolume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by ``points`` (minimisation) up to ``reference``, by slicing the first axis."""
    points = sorted(p for p in points if all(x < r for x, r in zip(p, reference)))
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - points[0][0]
    volume = 0.0
    for i, point in enumerate(points):
        upper = points[i + 1][0] if i + 1 < len(points) else reference[0]
        if upper > point[0]:
            volume += (upper - point[0]) * hypervolume([p[1:] for p in points[: i + 1]], reference[1:])
    return volume


def feasible_objectives(rows: list[dict], budget: float) -> list[tuple[float, float, float]]:
    return [(r["latency_ms"], r["drop"], r["size_bytes"]) for r in rows
            if r["state"] == "complete" and r["drop_ucb"] is not None and r["drop_ucb"] <= budget]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits", choices=["digits", "mobilenet_v3", "resnet"])
    parser.add_argument("--formats", default="onnx,openvino")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import edgekit
    from edgekit.optimizing.evaluate import Settings
    from edgekit.optimizing.study import _space

    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-optimize-bench-"))
    formats = tuple(args.formats.split(","))
    if args.model == "digits":
        model, data = digits_onnx(out / "model"), IMAGES
        recipe = edgekit.Recipe(scale=1 / 255, color="gray", layout="nchw")
    else:
        (model, data), recipe = zoo_onnx(args.model, out / "model"), None
    common = dict(calibration=data, output_dir=out, formats=formats, cosine=0.99, calib_size=100, validation_size=200,
                  recipe=recipe, max_kept_float=0, settle_rounds=1)
    space = _space(Settings(model=str(model), calibration=str(data), formats=formats, max_kept_float=0))
    budget = 1.0  # (1 - 0.99) x 100
    size = len(space.enumerate())
    cpu = platform.processor() or platform.machine()
    print(f"space: {size} points ({', '.join(formats)}; no layers kept float); CPU {cpu}", file=sys.stderr)

    started = time.perf_counter()
    brute = edgekit.optimize(model, trials=size, study="brute-force", **common)
    brute_s = time.perf_counter() - started
    rows = json.loads((out / "trials.json").read_text())
    reference_points = feasible_objectives(rows, budget)
    worst = [max(p[i] for p in reference_points) * 1.1 or 1.0 for i in range(3)]
    worst[1] = max(worst[1], 1.0)  # drops of 0 everywhere would make the drop axis empty
    reference_volume = hypervolume(reference_points, tuple(worst))

    fractions = []
    budget_trials = max(1, round(size * args.fraction))
    for seed in range(args.seeds):
        edgekit.optimize(model, trials=budget_trials, study=f"tpe-{seed}", search_seed=seed, **common)
        tpe_rows = json.loads((out / "trials.json").read_text())
        fractions.append(hypervolume(feasible_objectives(tpe_rows, budget), tuple(worst)) / reference_volume)

    # the same number of points drawn at random from the brute-force run: what a search without a model gets
    rng = random.Random(0)
    completed = [r for r in rows if r["state"] == "complete"]
    random_fractions = [hypervolume(feasible_objectives(rng.sample(completed, min(budget_trials, len(completed))),
                                                        budget), tuple(worst)) / reference_volume for _ in range(20)]

    rerun = edgekit.optimize(model, trials=size, study="rerun", **common)
    hit_rates = {kind: round(c["hits"] / max(1, c["hits"] + c["misses"]), 3) for kind, c in rerun.cache.items()}

    timed = [r for r in rows if r["state"] == "complete"]
    split = {part: statistics.mean(r[f"{part}_s"] or 0.0 for r in timed) for part in ("convert", "validate", "profile")}
    conversions = [r["convert_s"] for r in timed if r["converted_now"]]
    front = len(brute.front)
    print(f"| brute force | {size} trials in {brute_s:.0f} s | front {front} points, best "
          f"{brute.best.target if brute.best else None} |")
    print(f"| TPE, {budget_trials} trials ({args.fraction:.0%}) | hypervolume fraction per seed | "
          f"{', '.join(f'{f:.3f}' for f in fractions)} (mean {statistics.mean(fractions):.3f}) |")
    print(f"| random, {budget_trials} of the brute-force points | hypervolume fraction, 20 draws | "
          f"mean {statistics.mean(random_fractions):.3f}, min {min(random_fractions):.3f} |")
    print(f"| wall time per trial (s) | convert {split['convert']:.2f} / validate {split['validate']:.2f} / "
          f"profile {split['profile']:.2f} ({len(conversions)} distinct conversions, "
          f"{statistics.mean(conversions or [0]):.2f} s each) |")
    print(f"| rerun as a fresh study: cache hit rate | {json.dumps(hit_rates)} |")
    print(f"outputs in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
