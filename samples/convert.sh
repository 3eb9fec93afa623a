#!/usr/bin/env bash
# edgekit convert, one example per target family and calibration source, on the bundled digits sample.
# Run from the repository root:  bash samples/convert.sh [OUTDIR]
set -euo pipefail
OUT="${1:-edgekit-out/samples}"
MODEL=samples/digits/digits_cnn.keras
IMAGES=samples/digits/images   # class sub-folders: labels for validation

# TFLite full int8 (int8 I/O) and its float baseline, calibrated on an image folder; fail if int8 loses > 1.5 points
edgekit convert "$MODEL" --to tflite-int8,tflite-fp32 --calib "$IMAGES" --max-drop 1.5 -o "$OUT" --force

# ONNX static int8 (QDQ) for a Raspberry Pi (arm64: int8 activations), entropy calibration, float head kept
edgekit convert "$MODEL" --to onnx-int8 --calib "$IMAGES" --for arm64 --calib-method entropy \
    --keep-output-float -o "$OUT/arm64" --force

# OpenVINO IR: fp16 weights, and NNCF int8 with accuracy control (layers go back to float to stay within 1 point)
edgekit convert "$MODEL" --to openvino-fp16,openvino-int8 --calib "$IMAGES" --max-drop 1.0 -o "$OUT" --force

# Calibration from a .npy (leading sample axis); the preprocessing is then yours: here pixels / 255
python - "$OUT" <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
files = sorted(Path("samples/digits/images").rglob("*.png"))
arrays = np.stack([np.asarray(Image.open(f), np.float32)[..., None] / 255 for f in files])
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
np.save(Path(sys.argv[1]) / "calib.npy", arrays)
PY
edgekit convert "$MODEL" --to tflite-int16x8 --calib "$OUT/calib.npy" --calib-size 100 -o "$OUT" --force

# Weights-only quantization needs no calibration data at all
edgekit convert "$MODEL" --to tflite-dynamic,onnx-int8-dynamic,onnx-fp16 -o "$OUT" --force
