"""Rebuild tests/models/ultralytics_yolov8/: a YOLOv8 built by Ultralytics itself, exported as its exporter does.

Ultralytics' own ``yolov8.yaml`` and ``DetectionModel`` at a narrow scale (width 1/16, at most 128 channels,
3 classes, a 4-bin DFL), random weights with BatchNorm statistics measured on rendered pages (no weights are
downloaded), Conv+BN fused and the Detect head in export mode — then ``torch.onnx.export`` with the TorchScript
exporter at opset 17, as ``yolo export format=onnx simplify=False`` does. That export keeps C2f's ``chunk`` as
Shape -> Gather -> Div -> Slice arithmetic, the graph onnx2tf could not lower without simplifying it first.
The result (~160 KB) and the head's outputs on four held-out pages are committed, so the tests need neither
ultralytics nor torchvision, which cannot live beside the CPU torch wheel of the test environment:

    python -m venv /tmp/yolo && /tmp/yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics onnx pillow
    /tmp/yolo/bin/python tests/models/build_ultralytics_yolo.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "ultralytics_yolov8"
SIZE, CALIB, HELD_OUT = 160, 64, 4


def pages(first: int, count: int) -> np.ndarray:
    """Rendered document pages, NCHW float32 in 0-1 at SIZE (what a YOLO model takes); the tests use these too."""
    sys.path.insert(0, str(HERE))
    import task_data

    return np.stack([task_data.render_page(SIZE * 2, SIZE * 2, seed=first + i)[::2, ::2].transpose(2, 0, 1)
                     for i in range(count)]).astype(np.float32) / 255.0


def main() -> None:
    os.environ["YOLO_OFFLINE"] = "1"  # Ultralytics checks for updates otherwise
    import torch
    import ultralytics
    import yaml
    from ultralytics.nn.modules import Detect
    from ultralytics.nn.tasks import DetectionModel

    config = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml").read_text())
    config.update(scales={"t": [0.33, 0.0625, 128]}, scale="t", reg_max=4)
    torch.manual_seed(0)
    model = DetectionModel(config, nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the pages
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(pages(0, CALIB)))
    model = model.eval().fuse()
    for module in model.modules():
        if isinstance(module, Detect):
            module.export, module.format, module.dynamic = True, "onnx", False

    class FirstOutput(torch.nn.Module):  # what Ultralytics' exporter traces: the decoded [N, 4 + classes, anchors]
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, images):
            decoded = self.detector(images)  # Detect in export mode returns the tensor alone
            return decoded if isinstance(decoded, torch.Tensor) else decoded[0]

    wrapped = FirstOutput(model).eval()
    OUT.mkdir(exist_ok=True)
    held_out = torch.from_numpy(pages(1000, HELD_OUT))
    torch.onnx.export(wrapped, (held_out[:1],), OUT / "yolov8t.onnx", input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False)
    with torch.no_grad():
        np.save(OUT / "held_out_outputs.npy", wrapped(held_out).numpy())
    print(f"ultralytics {ultralytics.__version__}, torch {torch.__version__}: {OUT / 'yolov8t.onnx'} "
          f"({(OUT / 'yolov8t.onnx').stat().st_size:,} B)")


if __name__ == "__main__":
    main()
