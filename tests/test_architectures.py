"""Architectures built the way their users build them (tests/models/zoo.py: residual blocks, MobileNetV3
and EfficientNet from keras.applications, a YOLO-style detector head, a transformer encoder with int64 ids
and an attention mask), BatchNorm statistics measured on data, through `edgekit convert` to every target
family; every artifact compared with the Keras model's own outputs on every engine that reads it.

Floors as in test_real_models: float forms match (cosine >= 0.9999); int8 forms stay above 0.95, except
the collapses listed with the cosine measured here (strict xfail: the int8 issue's to repair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zoo
from edgekit.runtimes.cpu import X86_WITHOUT_VNNI, describe_cpu

import edgekit
from edgekit.pipeline.validation import cosine

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow, pytest.mark.litert, pytest.mark.onnxruntime,
              pytest.mark.openvino]

FLOAT_AND_INT8 = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8")
TARGETS = {
    "resnet": FLOAT_AND_INT8,
    "mobilenet_v3": FLOAT_AND_INT8,
    # the Normalization layer's constants once came out of tf2onnx as graph inputs; float forms keep it quick
    "efficientnet": ("tflite-fp32", "onnx-fp32", "openvino-fp32"),
    "yolo": FLOAT_AND_INT8,
    "encoder": FLOAT_AND_INT8 + ("onnx-fp16", "openvino-fp16"),
}
FLOORS = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.95}
# (model, target) -> the worst cosine measured here, over the engines that read the artifact
COLLAPSES = {
    ("mobilenet_v3", "openvino-int8"): 0.86,  # NNCF's default int8 around hard-swish / squeeze-excite
    ("encoder", "tflite-int8"): 0.22,  # LiteRT 0.91; OpenVINO reading the same .tflite 0.22
    ("encoder", "onnx-int8"): 0.48,  # ONNX Runtime 0.91; OpenVINO running the same QDQ file 0.48
}
HELD_OUT = 16
# OpenVINO's int8 kernels on x86 without VNNI saturate a 16-bit intermediate when weights use the full int8
# range (its documented "saturation issue"): a .tflite's weights do (measured here: OpenVINO reading the int8
# .tflite of resnet 0.93, mobilenet_v3 0.46, LiteRT 0.999 / 0.995). edgekit's own openvino-int8 quantizes for
# such a CPU with NNCF's overflow fix and onnx-int8 with reduce_range; only a foreign int8 .tflite is
# left for OpenVINO to read on CPUs with VNNI (or ARM).
OPENVINO_READS_INT8_TFLITE = describe_cpu("auto") != X86_WITHOUT_VNNI


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (keras path, {target: ConversionResult}); built and converted once, when first asked for."""
    done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def build(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in done:
            folder = tmp_path_factory.mktemp(name)
            path = zoo.build(name, folder)
            np.savez(folder / "calib.npz", **zoo.inputs_for(name, 48, seed=1))
            results = edgekit.convert(path, list(TARGETS[name]), calibration=folder / "calib.npz", calib_size=32,
                                      validation_size=16, output_dir=folder / "out", repair=False)
            done[name] = path, {r.target: r for r in results}
        return done[name]

    return build


@pytest.mark.parametrize(("name", "target"), [(n, t) for n, targets in TARGETS.items() for t in targets])
def test_every_artifact_matches_the_keras_model_on_every_engine(built, name, target, request):
    path, results = built(name)
    if (name, target) in COLLAPSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"default int8 (repair off) collapses to cosine "
                                              f"{COLLAPSES[name, target]}; edgekit marks it failed"))
    data = zoo.inputs_for(name, HELD_OUT, seed=99)
    expected = zoo.predict(path, data)
    artifact = results[target].artifact
    engines = {".tflite": ("litert", "openvino"), ".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}
    if target.endswith("int8") and not OPENVINO_READS_INT8_TFLITE:
        engines[".tflite"] = ("litert",)
    cosines = {}
    for engine in engines[artifact.suffix]:
        options = {"config": {"INFERENCE_PRECISION_HINT": "f32"}} if engine == "openvino" else {}
        with edgekit.load(artifact, backend=engine, **options) as runtime:
            assert [s.name for s in runtime.inputs] == list(data), (engine, runtime.inputs)
            got = np.concatenate([runtime.run({k: v[i : i + 1] for k, v in data.items()})[runtime.outputs[0].name]
                                  for i in range(HELD_OUT)])
        cosines[engine] = cosine(expected, got)
    floor = FLOORS[target.split("-", 1)[1]]
    assert min(cosines.values()) >= floor, f"{name} {target}: cosine {cosines} below {floor}"


def test_keras_preprocessing_runs_after_the_layout_transpose_in_onnx(built):
    """EfficientNet's Rescaling and per-channel Normalization move behind tf2onnx's NHWC -> NCHW Transpose (ONNX
    Runtime broadcasts them over NHWC slowly); the artifact comparison above holds it to the Keras model."""
    moved = built("efficientnet")[1]["onnx-fp32"].report["options"]["moved_behind_layout_transpose"]
    assert any("rescaling" in n for n in moved) and any("normalization" in n for n in moved), moved


def test_a_keras_transformer_gets_nncfs_transformer_scheme(built):
    """Keras' MultiHeadAttention computes attention with Einsum, not MatMul: the encoder must still be found a
    transformer (NNCF's default scheme read it at cosine 0.98 and slower than bf16), a CNN must not."""
    encoder = built("encoder")[1]["openvino-int8"].report["options"]
    assert encoder["model_type"] == "transformer", encoder["notes"]
    assert any("attention op(s)" in note for note in encoder["notes"])
    assert built("resnet")[1]["openvino-int8"].report["options"]["model_type"] is None


def test_tflite_int8_keeps_float_only_what_xnnpack_cannot_run_in_int8(built, tmp_path):
    """MobileNetV3's hard-swish has no int8 kernel in LiteRT's XNNPACK delegate: quantized, its 19 ops ran
    outside the delegate (measured: int8 0.28-0.36x float). edgekit keeps exactly those float and says so;
    a net XNNPACK runs whole stays fully integer; ``int8_placement="everywhere"`` is the converter's behaviour."""
    from edgekit.converters._tflite import ops_outside_xnnpack

    path, results = built("mobilenet_v3")
    placed = results["tflite-int8"]
    options = placed.report["options"]
    assert options["int8_placement"] == "engine" and set(options["kept_float_for_engine"]) == {"HARD_SWISH"}
    assert ops_outside_xnnpack(placed.artifact) == {}
    assert set(placed.report["audit"]["float_ops"]) == {"HARD_SWISH"}
    assert any("HARD_SWISH kept in float" in w for w in placed.report["warnings"])
    (everywhere,) = edgekit.convert(path, "tflite-int8", calibration=path.parent / "calib.npz", calib_size=32,
                                    validation_size=16, output_dir=tmp_path, repair=False, int8_placement="everywhere")
    assert ops_outside_xnnpack(everywhere.artifact).get("HARD_SWISH", 0) > 10
    assert everywhere.report["audit"]["integer_compute"]
    # TensorFlow's own calibration is kept (ai-edge-quantizer's would cost accuracy here: 0.78 vs 0.94 cosine)
    got, want = (r.report["validation"]["outputs"]["predictions"]["cosine"] for r in (placed, everywhere))
    assert got >= want - 0.005, (got, want)
    resnet = built("resnet")[1]["tflite-int8"]
    assert "kept_float_for_engine" not in resnet.report["options"] and resnet.report["audit"]["integer_compute"]
