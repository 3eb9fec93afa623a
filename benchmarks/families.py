"""The families x int8 targets table of issue 29: what edgekit's defaults make of the models people bring.

Each net of tests/models/torch_zoo.py (torchvision-style ResNet, MobileNetV2 and MobileNetV3, an
Ultralytics-style detector, a BERT-style encoder with int64 ids and an attention mask; BatchNorm statistics
measured on data, the MobileNets trained on the digits) is exported the two ways its users export it — an ONNX
file (``torch.onnx.export``) and a ``.pt2`` (``torch.export``) — and each file goes through ``edgekit convert``
to tflite-int8, onnx-int8 and openvino-int8 with no options but the calibration file. Per cell: the status (and
the repair's remedy where one was kept), the share of weights that run in integer, edgekit's own top-1 agreement
on its validation split, the cosine with the PyTorch model on held-out inputs computed here (not by edgekit),
and edgekit's ``speed_vs_float_here`` (int8 vs the same engine's fp32, interleaved, one sample).

    python benchmarks/families.py                       # all five, both exports (about 15 min on 2 cores)
    python benchmarks/families.py --models yolo --exports onnx
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "models"))

from convert import cpu_name  # noqa: E402

TARGETS = ("onnx-int8", "openvino-int8", "tflite-int8")
CALIB, HELD_OUT = 80, 40


def _export(name: str, folder: Path) -> None:
    import torch
    import torch_zoo

    model, example = torch_zoo.build(name)
    torch.onnx.export(model, (), folder / f"{name}.onnx", kwargs=example, dynamo=True, external_data=False)
    torch.export.save(torch.export.export(model, (), kwargs=example), folder / f"{name}.pt2")
    np.savez(folder / f"{name}-calib.npz", **torch_zoo.inputs_for(name, CALIB, seed=1))
    held_out = torch_zoo.inputs_for(name, HELD_OUT, seed=99)
    np.savez(folder / f"{name}-held-out.npz", expected=torch_zoo.predict(model, held_out), **held_out)


def _cosine_on_held_out(artifact: Path, held_out: dict[str, np.ndarray]) -> float:
    import edgekit
    from edgekit.pipeline.validation import cosine

    expected = held_out.pop("expected")
    with edgekit.load(artifact) as runtime:
        got = [runtime.run({k: v[i : i + 1] for k, v in held_out.items()})[runtime.outputs[0].name]
               for i in range(len(expected))]
    return min(cosine(e[None], g) for e, g in zip(expected, got))


def _cell(result) -> dict:
    report, validation = result.report, result.report.get("validation") or {}
    repair = report.get("repair") or {}
    speed = report.get("speed_vs_float_here") or {}
    return {"status": report["status"] + (f" (repair: {repair['chosen']})" if repair.get("chosen") else ""),
            "failures": "; ".join(report["failures"]),
            "integer": report["audit"]["integer_share"], "agree": validation.get("top1_agreement"),
            "speed": speed.get("speedup") if speed.get("measured") else None}


def main() -> None:
    import torch_zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(torch_zoo.FAMILIES))
    parser.add_argument("--exports", default="onnx,pt2")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import edgekit

    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; edgekit {edgekit.__version__}\n")
    print("| family | from | target | status | integer | top-1 agree | min cosine vs PyTorch | speed vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            folder = Path(work) / name
            folder.mkdir()
            # torch's exporters run in a child: they leave threads and state a later engine run should not meet
            code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import families; families._export({name!r}, " \
                   f"__import__('pathlib').Path({str(folder)!r}))"
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            for export in args.exports.split(","):
                results = edgekit.convert(folder / f"{name}.{export}", args.targets.split(","),
                                          calibration=folder / f"{name}-calib.npz", calib_size=CALIB - 20,
                                          validation_size=20, output_dir=folder / f"out-{export}", keep_going=True)
                made = {r.target: r for r in results}
                for target in args.targets.split(","):
                    if made[target].artifact is None:
                        print(f"| {name} | {export} | {target} | not converted: {made[target].report['failures'][0]} "
                              "| | | | |", flush=True)
                        continue
                    cell = _cell(made[target])
                    held_out = dict(np.load(folder / f"{name}-held-out.npz"))
                    cos = _cosine_on_held_out(made[target].artifact, held_out)
                    agree = "" if cell["agree"] is None else f"{cell['agree']:.0f}%"
                    speed = "" if cell["speed"] is None else f"{cell['speed']:.2f}x"
                    status = cell["status"] + (f": {cell['failures']}" if cell["failures"] else "")
                    print(f"| {name} | {export} | {target} | {status} | {cell['integer']:.0%} | {agree} | "
                          f"{cos:.4f} | {speed} |", flush=True)


if __name__ == "__main__":
    main()
