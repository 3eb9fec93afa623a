"""Weight-only targets (onnx-w4/w8, openvino-w4/w8, tflite-w4) on a trained transformers BERT classifier.

Weights in 4 or 8 bits, activations in float: what pays on transformer-style models whose weights dominate.
Each artifact is validated like every target (held-out accuracy against the PyTorch model) and must be
what its name says: its linear layers' weights stored in that many bits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import text_classifier

import edgekit

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino,
              pytest.mark.litert]

TARGETS = "onnx-w4,onnx-w8,openvino-w4,openvino-w8,tflite-w4,onnx-fp32,openvino-fp32,tflite-fp32"
LINEAR_LAYERS = 2 * 6 + 2  # per layer: query, key, value, attention output, FFN in and out; pooler; classifier
MAX_DROP_POINTS = 3.0


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    import torch

    model = text_classifier.train()
    ids, labels = text_classifier.samples(400, seed=7)
    data = [({"input_ids": row[None]}, int(label)) for row, label in zip(ids, labels)]
    results = edgekit.convert(model, TARGETS, example_inputs=torch.zeros(1, text_classifier.LENGTH, dtype=torch.long),
                              name="bert", calibration=data, calib_size=16, validation_size=384,
                              output_dir=tmp_path_factory.mktemp("weight-only"))
    return {r.target: r for r in results}


@pytest.mark.parametrize("target", ["onnx-w4", "onnx-w8", "openvino-w4", "openvino-w8", "tflite-w4"])
def test_weight_only_keeps_accuracy_and_shrinks_the_file(converted, target):
    result = converted[target]
    assert result.passed, result.report["failures"]
    validation = result.report["validation"]
    assert validation["accuracy_float"] >= 80, "the trained classifier itself is poor: the test would prove nothing"
    assert validation["drop"] <= MAX_DROP_POINTS
    bits = 4 if target.endswith("w4") else 8
    float_size = converted[f"{target.split('-')[0]}-fp32"].report["artifact"]["size_bytes"]
    # the embeddings (64 x 128 words, 16 positions) stay float; the linear layers hold ~80 % of the weights
    assert result.report["artifact"]["size_bytes"] <= float_size * (0.45 if bits == 4 else 0.55)


def test_onnx_weight_only_quantizes_every_linear_layer(converted):
    import onnx

    for target in ("onnx-w4", "onnx-w8"):
        options = converted[target].report["options"]
        model = onnx.load(str(converted[target].artifact))
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        # the pooler and the classifier are 2-D Linear layers: exported as Gemm, which MatMulNBits skips
        assert options["gemm_rewritten_as_matmul"] >= 2 and len(nbits) == LINEAR_LAYERS
        assert {onnx.helper.get_attribute_value(a) for n in nbits for a in n.attribute if a.name == "bits"} == \
            {int(target[-1])}
        assert str(options["accuracy_level"]) in options["accuracy_level_ms"]  # chosen from both timings


def test_openvino_weight_only_stores_low_bit_weights(converted):
    for target, types in (("openvino-w4", ('element_type="i4"', 'element_type="u4"')),
                          ("openvino-w8", ('element_type="u8"', 'element_type="i8"'))):
        ir = Path(converted[target].artifact).read_text()
        assert sum(ir.count(t) for t in types) >= LINEAR_LAYERS - 2, target  # NNCF keeps two in int8 for int4
