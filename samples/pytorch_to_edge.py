"""From a PyTorch model to TFLite, ONNX and OpenVINO int8 in one call — the route most models take today.

    python samples/pytorch_to_edge.py [OUTDIR]

Trains a small CNN on scikit-learn's bundled digits (no download, a few seconds on a CPU) — on the 75 % the
image folder below does not hold, so its accuracies are on images the model never saw — then converts the
``nn.Module`` itself: calibration and validation come from the labeled image folder the demo ships
(``samples/digits/images``, class sub-folders = labels), preprocessed as the model was trained (grayscale,
scaled to 0-1, NCHW). Every artifact takes the same feed, ``images`` [1, 1, 8, 8], and is validated against
the PyTorch model itself. It also saves the model as ``digits.pt2``, for ``edgekit convert digits.pt2 ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgekit

HERE = Path(__file__).resolve().parent
SPLIT_SEED = 0  # tests/models/digits.py's SEED


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.classifier = nn.Linear(64, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).mean((2, 3)))


def train(epochs: int = 15) -> nn.Module:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    # the split samples/digits/build_sample.py made: its held-out quarter is the image folder
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data.images))
    train_rows = order[: int(len(order) * 0.75)]
    x = torch.from_numpy((data.images[train_rows] / 16.0).astype(np.float32)[:, None])  # N, 1, 8, 8 in 0-1
    y = torch.from_numpy(data.target[train_rows])
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def main(out_dir: Path) -> None:
    model = train()
    example = torch.zeros(1, 1, 8, 8)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(model, (example,)), out_dir / "digits.pt2")
    results = edgekit.convert(
        model, "tflite-int8,onnx-int8,openvino-int8", example_inputs=example, name="digits",
        calibration=HERE / "digits" / "images", calib_size=200,
        recipe=edgekit.Recipe(scale=1 / 255, color="gray", layout="nchw"), output_dir=out_dir, force=True)
    for result in results:
        validation = result.report["validation"]
        print(f"{result.target}: {result.artifact.name} {result.report['artifact']['size_bytes']:,} bytes, "
              f"accuracy {validation['accuracy_converted']:.1f}% (PyTorch {validation['accuracy_float']:.1f}%), "
              f"route {result.report['options']['route']}")
    print(f"same model from the command line: edgekit convert {out_dir / 'digits.pt2'} --to tflite-int8 "
          f"--calib {HERE / 'digits' / 'images'} --scale 0.00392157 --color gray --layout nchw", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pytorch-out"))
