"""Weight sparsity as `edgekit inspect` reports it: per-layer zero fractions, the 2:4 pattern, and what each
engine can make of them — read from ONNX and from the OpenVINO IR converted from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli

pytestmark = [pytest.mark.onnxruntime, pytest.mark.openvino]


def _pruned_onnx(path):
    """Conv 1x1 (8 -> 16) with 112 of its 128 weights zero (87.5 %), then a Gemm 256 -> 10 pruned 2:4."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    conv = rng.normal(size=(16, 8, 1, 1)).astype(np.float32)
    conv.reshape(-1)[rng.permutation(128)[:112]] = 0
    gemm = rng.normal(size=(10, 256)).astype(np.float32)  # transB: [N, K], K the reduction axis
    groups = gemm.reshape(10, 64, 4)
    for row in range(10):
        for group in range(64):
            groups[row, group, rng.permutation(4)[:2]] = 0
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="pointwise"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w"], ["y"], name="classifier", transB=1)]
    graph = helper.make_graph(nodes, "pruned", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                              [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(gemm, "fc_w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _sparsity(path):
    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["sparsity"]


def test_inspect_reports_zero_fractions_and_the_two_of_four_pattern(tmp_path):
    model = _pruned_onnx(tmp_path / "pruned.onnx")
    (ir,) = edgekit.convert(model, "openvino-fp32", output_dir=tmp_path, validate_outputs=False)
    for path in (model, ir.artifact):
        sparsity = _sparsity(path)
        assert sparsity["measured"] and sparsity["weighted_layers"] == 2, path
        by_zeros = sorted(sparsity["sparse_layers"], key=lambda layer: layer["zero_fraction"])
        assert [round(layer["zero_fraction"], 4) for layer in by_zeros] == [0.5, 0.875], path
        assert by_zeros[0]["two_of_four"], path  # the classifier; the 87.5 %-zero conv may hold 2:4 by chance
        assert sparsity["zero_fraction"] == pytest.approx((112 + 1280) / (128 + 2560), abs=1e-4)
        assert sparsity["engines"]["onnxruntime"].startswith("densified at load")
    text = CliRunner().invoke(cli, ["inspect", str(model)]).stdout
    assert "2 of 2 weighted layer(s) at least 50% zero (pointwise 88%, classifier 50%)" in text.replace("\n", " ")
    assert "litert: XNNPACK's sparse kernels run on ARM only" in text


def _pruned_mobilenet(zeros: float):
    """torchvision-style MobileNetV3 (trained on digits) with ``zeros`` of every conv/linear weight set to zero
    by magnitude, as torch.nn.utils.prune's L1 unstructured pruning leaves it."""
    import torch
    import torch_zoo

    model, example = torch_zoo.build("mobilenet_v3")
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.weight.numel() > 1000:
            weight = module.weight.data
            weight[weight.abs() <= weight.abs().flatten().kthvalue(int(weight.numel() * zeros)).values] = 0
    return model, example


@pytest.mark.litert
@pytest.mark.torch
def test_tflite_sparse_stores_a_pruned_models_zeros_and_runs_bit_identical(tmp_path):
    import torch_zoo

    model, example = _pruned_mobilenet(0.85)
    dense, sparse = edgekit.convert(model, "tflite-fp32,tflite-sparse", example_inputs=example, output_dir=tmp_path)
    assert dense.passed and sparse.passed, (dense.report["failures"], sparse.report["failures"])
    assert sparse.artifact.stat().st_size < 0.4 * dense.artifact.stat().st_size
    x = torch_zoo.inputs_for("mobilenet_v3", 4, seed=7)["images"]
    for api in ("interpreter", "compiled"):
        with edgekit.load(dense.artifact, api=api) as a, edgekit.load(sparse.artifact, api=api) as b:
            for image in x:
                assert np.array_equal(a.run(image[None])["output_0"], b.run(image[None])["output_0"]), api
    reports = [json.loads(r.artifact.with_name(r.artifact.name + ".json").read_text()) for r in (dense, sparse)]
    # the report's per-layer figures are the same for both files; only the sparse one stores them encoded
    layers = [[(layer["zero_fraction"], layer["two_of_four"]) for layer in r["sparsity"]["sparse_layers"]]
              for r in reports]
    assert layers[0] == layers[1] and len(layers[0]) >= 10
    stored = [sum(layer["stored_sparse"] for layer in r["sparsity"]["sparse_layers"]) for r in reports]
    assert stored == [0, len(reports[1]["options"]["sparse_weights"])]
    assert "XNNPACK's sparse kernels run on ARM only" in reports[1]["sparsity"]["engines"]["litert"]
    assert _sparsity(sparse.artifact)["zero_fraction"] == reports[0]["sparsity"]["zero_fraction"]


@pytest.mark.litert
@pytest.mark.torch
def test_tflite_sparse_refuses_a_model_without_enough_zeros(tmp_path):
    model, example = _pruned_mobilenet(0.1)
    with pytest.raises(edgekit.ConversionError, match="no conv or fully-connected weight of "
                       "'mobilenetv3_sparse.tflite' is sparse enough .* prune the model first"):
        edgekit.convert(model, "tflite-sparse", example_inputs=example, output_dir=tmp_path, validate_outputs=False)
    assert list(tmp_path.iterdir()) == []
