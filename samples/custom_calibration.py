"""Calibrate with your own data pipeline: any generator of ``{input_name: array}`` (or ``(feeds, label)``).

    python samples/custom_calibration.py [OUTDIR]

Here the generator reads sklearn's bundled digits (no download) with its own preprocessing and yields
labels too, so the report gets task accuracy. Use this when your data lives in a database, a video,
or needs preprocessing edgekit's recipe flags cannot express.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import edgekit

HERE = Path(__file__).resolve().parent


def digits_samples():
    """One sample at a time, as inference will see it: 8x8x1 floats in [0, 1], with its label."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(1).permutation(len(data.images))
    for index in order:
        image = (data.images[index] / 16.0).astype(np.float32)[..., None]
        yield {"image": image}, int(data.target[index])


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("edgekit-out/custom")
    results = edgekit.convert(HERE / "digits" / "digits_cnn.keras", "tflite-int8,onnx-int8", calibration=digits_samples,
                              calib_size=150, validation_size=300, output_dir=out, force=True)
    for result in results:
        v = result.validation
        print(f"{result.target}: {result.artifact}  accuracy {v['accuracy_converted']:.1f}% "
              f"(float {v['accuracy_float']:.1f}%), calibration {result.report['calibration']['kind']}")


if __name__ == "__main__":
    main()
