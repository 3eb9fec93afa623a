"""Rebuild the bundled digits sample: a small Keras CNN and a labeled image folder.

    python samples/digits/build_sample.py

Trains on sklearn's bundled 8x8 handwritten digits (no download) and writes, beside this file:

- ``digits_mobilenet.keras``: a MobileNetV2-style net reading the digits at 32x32 (``edgekit demo``'s model:
  big enough that int8's gain and the timings are real)
- ``digits_cnn.keras``: a tiny CNN at 8x8 (the samples' and tests' quick model)
- ``images/<label>/<n>.png``: 30 held-out images per class, used for calibration and labeled validation
  (edgekit resizes them to each model's input).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "models"))

import digits  # noqa: E402

PER_CLASS = 30


def main() -> None:
    _, _, x_test, y_test = digits.load_split()
    keep = [i for label in range(10) for i in [j for j, y in enumerate(y_test) if y == label][:PER_CLASS]]
    images = HERE / "images"
    shutil.rmtree(images, ignore_errors=True)
    digits.write_image_folder(images, x_test[keep], y_test[keep])
    digits.train_cnn(HERE / "digits_cnn.keras")
    digits.train_mobilenet(HERE / "digits_mobilenet.keras")


if __name__ == "__main__":
    main()
