"""A Raspberry Pi classification app that uses only edgekit's device path.

    pip install 'edgekit[litert,image]'          # on the Pi: no TensorFlow, no converters
    python app.py --model digits_cnn_int8.tflite  # frames from picamera2 or a USB camera (OpenCV)
    python app.py --model digits_cnn_int8.tflite --images some/folder --limit 20

The model's preprocessing recipe and class names come from the JSON report that
``edgekit convert`` wrote beside it, so the app sees images exactly as calibration
and validation did. Without a camera it reads an image folder. Prints one line per
frame: label, confidence and inference latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import edgekit
from edgekit import Recipe, load_image, preprocess_frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def camera_frames() -> Iterator[np.ndarray] | None:
    """RGB frames from picamera2, else the first OpenCV camera; None when neither is there."""
    try:
        from picamera2 import Picamera2  # Raspberry Pi camera stack

        camera = Picamera2()
        camera.configure(camera.create_preview_configuration(main={"format": "RGB888"}))
        camera.start()
        return iter(camera.capture_array, None)
    except (ImportError, RuntimeError, IndexError):
        pass
    try:
        import cv2
    except ImportError:
        return None
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        return None

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    return frames()


def folder_images(folder: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        yield str(path.relative_to(folder)), path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model converted by edgekit (.tflite/.onnx/.xml)")
    parser.add_argument("--images", type=Path, help="read this folder instead of a camera")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many frames (0: never)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    report_path = Path(f"{args.model}.json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    classes = (report.get("calibration") or {}).get("classes")

    with edgekit.load(args.model, threads=args.threads) as model:
        spec = model.inputs[0]
        recipe = Recipe.from_dict(report["recipe"]).for_input(spec) if "recipe" in report else Recipe().for_input(spec)
        frames = None if args.images else camera_frames()
        if frames is not None:
            source = ((f"camera {i}", lambda f=frame: preprocess_frame(f, recipe)) for i, frame in enumerate(frames))
        else:
            folder = args.images or Path(__file__).resolve().parents[1] / "digits" / "images"
            print(f"no camera: reading images from {folder}", file=sys.stderr)
            source = ((name, lambda p=path: load_image(str(p), recipe)) for name, path in folder_images(folder))
        for count, (name, prepare) in enumerate(source, 1):
            x = prepare()
            start = time.perf_counter()
            scores = next(iter(model.run({spec.name: x}).values()))[0]
            latency_ms = (time.perf_counter() - start) * 1e3
            best = int(np.argmax(scores))
            label = classes[best] if classes and best < len(classes) else str(best)
            print(f"{name}: {label} ({float(scores[best]):.2f}) {latency_ms:.2f} ms", flush=True)
            if args.limit and count >= args.limit:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
