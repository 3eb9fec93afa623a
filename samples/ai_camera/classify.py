"""Run an edgekit-converted classifier on the Raspberry Pi AI Camera's sensor and print its answer per frame.

    # on the workstation
    edgekit convert model.pt2 --to imx500 --calib images/ -o out/
    # on the Pi (Raspberry Pi OS, the AI Camera on the camera port)
    sudo apt install imx500-all imx500-tools python3-picamera2
    imx500-package -i out/model_imx500_packerOut.zip -o pkg/
    python3 classify.py pkg/network.rpk --labels labels.txt --frames 20

The network runs on the IMX500 itself: the Pi only reads its output tensors from each frame's metadata (the
first upload of a network to the sensor takes a minute or more; picamera2 shows its progress). Uses picamera2's
own IMX500 helper, not edgekit: a Pi app needs neither edgekit nor an engine for this model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", type=Path, help="network.rpk made by imx500-package")
    parser.add_argument("--labels", type=Path, help="class names, one per line, in the model's output order")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames [default: run on]")
    parser.add_argument("--top", type=int, default=3, help="how many classes to print per frame")
    args = parser.parse_args()
    if not args.network.is_file():
        print(f"Error: '{args.network}' does not exist; make it with imx500-package -i <stem>_imx500_packerOut.zip "
              "-o DIR", file=sys.stderr)
        return 2
    try:
        from picamera2 import Picamera2
        from picamera2.devices import IMX500
    except ImportError:
        print("Error: picamera2 with its IMX500 support is not installed: sudo apt install python3-picamera2 "
              "imx500-all", file=sys.stderr)
        return 2
    labels = args.labels.read_text().splitlines() if args.labels else None
    sensor = IMX500(str(args.network))  # uploads the network to the sensor
    camera = Picamera2(sensor.camera_num)
    sensor.show_network_fw_progress_bar()
    camera.start(camera.create_preview_configuration(buffer_count=12), show_preview=False)
    seen = 0
    try:
        while not args.frames or seen < args.frames:
            started = time.perf_counter()
            outputs = sensor.get_outputs(camera.capture_metadata(), add_batch=True)
            if outputs is None:  # the network is still uploading, or this frame carried no result
                continue
            scores = np.asarray(outputs[0]).reshape(-1)
            best = np.argsort(scores)[::-1][: args.top]
            answer = ", ".join(f"{labels[i] if labels and i < len(labels) else i}: {scores[i]:.3f}" for i in best)
            print(f"frame {seen}: {answer} ({(time.perf_counter() - started) * 1e3:.0f} ms to the result)")
            seen += 1
    finally:
        camera.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
