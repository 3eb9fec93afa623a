"""A YOLOv8 that Ultralytics built and exported (tests/models/ultralytics_yolov8/, rebuilt by
tests/models/build_ultralytics_yolo.py) through every int8 target with edgekit's defaults.

Its TorchScript-exporter ONNX keeps C2f's ``chunk`` as Shape -> Gather -> Div -> Slice arithmetic: onnx2tf
lowered that to a .tflite whose slices LiteRT could not size ("XNNPack delegate failed to reshape") until
edgekit simplified the graph with onnxsim first, onnx2tf's own default. Each artifact is compared with the outputs
Ultralytics' PyTorch model gave on held-out pages, [1, 4 + 3 classes, 525 anchors] with pixel boxes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.pipeline.validation import cosine

HERE = Path(__file__).parent / "models"
sys.path.insert(0, str(HERE))
from build_ultralytics_yolo import HELD_OUT, OUT, pages  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.litert, pytest.mark.onnxruntime, pytest.mark.openvino]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yolov8")
    np.save(folder / "calib.npy", pages(0, 60))
    results = edgekit.convert(OUT / "yolov8t.onnx", ["tflite-int8", "onnx-int8", "openvino-int8"],
                              calibration=folder / "calib.npy", calib_size=44, validation_size=16,
                              output_dir=folder / "out", keep_going=True)
    return {r.target: r for r in results}


@pytest.mark.parametrize("target", ["tflite-int8", "onnx-int8", "openvino-int8"])
def test_ultralytics_yolov8_onnx_converts_to_every_int8_target_and_detects_as_ultralytics_does(converted, target):
    result = converted[target]
    assert result.passed, result.report["failures"]
    assert result.report["audit"]["integer_share"] >= 0.95, result.report["audit"]
    expected = np.load(OUT / "held_out_outputs.npy")
    held_out = pages(1000, HELD_OUT)
    with edgekit.load(result.artifact) as runtime:
        assert [s.name for s in runtime.inputs] == ["images"] and list(runtime.inputs[0].shape) == [1, 3, 160, 160]
        got = np.concatenate([runtime.run({"images": held_out[i : i + 1]})["output0"] for i in range(HELD_OUT)])
    assert got.shape == expected.shape == (HELD_OUT, 7, 525)
    # measured 0.9986-0.9997 (the head's boxes, in pixels, dominate)
    assert min(cosine(e, g) for e, g in zip(expected, got)) >= 0.99
    assert result.report["validation"]["outputs"]["output0"]["judged_by"] == "detector"


def test_onnx2tf_simplified_the_graph_and_the_report_says_so(converted):
    options = converted["tflite-int8"].report["options"]
    assert options["route"].startswith("ONNX -> TFLite (onnx2tf flatbuffer_direct")
    assert options["onnx2tf_simplified"] == "simplified by onnxsim (onnx2tf's default)"
