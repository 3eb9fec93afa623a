"""A BERT built by transformers itself (``BertForSequenceClassification`` from a small config: int64 ids and an
attention mask, no weights downloaded), exported the two ways its users export it — ``torch.onnx.export`` (the
TorchScript exporter transformers' own ONNX tooling drives) and ``torch.export`` — and converted with default
options to every int8 target.

Each artifact must be integer (integer share by weights), agree with the transformers model on held-out
inputs, and say what edgekit chose for it: NNCF's transformer scheme, the ONNX rewrites made before onnx2tf.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit.pipeline.validation import cosine

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.litert, pytest.mark.onnxruntime,
              pytest.mark.openvino]

VOCAB, LENGTH, CLASSES = 1000, 32, 4
TARGETS = ("onnx-int8", "openvino-int8", "tflite-int8")


def _inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (count, LENGTH)).astype(np.int64)
    mask = np.ones((count, LENGTH), np.int64)
    for row in range(count):  # padded sentences of every length
        mask[row, rng.integers(8, LENGTH + 1):] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, num_labels=CLASSES)
    classifier = transformers.BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):  # the logits, as a deployed classifier returns them
        def __init__(self):
            super().__init__()
            self.bert = classifier

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    model = Logits().eval()
    folder = tmp_path_factory.mktemp("bert")
    example = tuple(torch.from_numpy(v) for v in _inputs(1, 1).values())
    torch.onnx.export(model, example, folder / "bert.onnx", input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    torch.export.save(torch.export.export(model, example), folder / "bert.pt2")
    np.savez(folder / "calib.npz", **_inputs(80, 2))
    held_out = _inputs(12, 99)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(v) for v in held_out.values())).numpy()
    return folder, held_out, expected


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_a_transformers_bert_converts_to_every_int8_target_with_defaults(bert, kind, tmp_path):
    folder, held_out, expected = bert
    results = edgekit.convert(folder / f"bert.{kind}", list(TARGETS), calibration=folder / "calib.npz",
                              calib_size=60, validation_size=20, output_dir=tmp_path, keep_going=True)
    by_target = {r.target: r for r in results}
    for target, result in by_target.items():
        assert result.passed, (target, result.report["failures"])
        assert result.report["audit"]["integer_share"] >= 0.9, (target, result.report["audit"])
        with edgekit.load(result.artifact) as runtime:
            got = np.concatenate([next(iter(runtime.run({k: v[i : i + 1] for k, v in held_out.items()}).values()))
                                  for i in range(len(expected))])  # a .pt2 names its output output_0
        # measured here: ONNX Runtime and OpenVINO 0.9995+, LiteRT 0.977-0.980
        assert cosine(expected, got) >= 0.96, (target, cosine(expected, got))
    nncf = by_target["openvino-int8"].report["options"]
    assert nncf["model_type"] == "transformer" and "attention op(s)" in nncf["notes"][0]
    assert nncf["preset"] == "performance" and any("default for a transformer is 'mixed'" in n for n in nncf["notes"])
    tflite = by_target["tflite-int8"].report
    assert tflite["options"]["int8_placement"] == "engine"  # FULLY_CONNECTED stays inside XNNPACK
    if kind == "onnx":  # unsimplified and unrewritten: ONNX_CONCAT (an error), then BATCH_MATMUL (0.13x float)
        rewritten = " ".join(tflite["options"]["rewritten_before_onnx2tf"])
        # onnxsim folds the export's Shape arithmetic and one-input Concats first; the rewrite does the rest
        assert tflite["options"]["onnx2tf_simplified"] == "simplified by onnxsim (onnx2tf's default)"
        assert "MatMul(s) by a constant 2-D weight as Gemm" in rewritten
        assert "ONNX_CONCAT" not in tflite["audit"]["float_ops"], tflite["audit"]["float_ops"]
