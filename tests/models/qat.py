"""A quantization-aware-trained model, made the way PyTorch users make one: PT2E QAT.

samples/pytorch_to_edge.py's digits CNN, trained in float, then fine-tuned with fake quantization inserted by
torchao's PT2E flow (``prepare_qat_pt2e`` with the x86 quantizer's QAT config), converted (``convert_pt2e``)
and exported by ``torch.onnx.export(dynamo=True)``: a QDQ ONNX whose scales were learned, not calibrated.
About 15 s on 2 cores; nothing is downloaded (sklearn's bundled digits).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "pytorch_to_edge.py"


def _sample():
    spec = importlib.util.spec_from_file_location("pytorch_to_edge", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_qat(folder: Path, float_epochs: int = 6, qat_epochs: int = 2) -> tuple[Path, Path]:
    """The QAT model as ``folder/qat.onnx`` (QDQ) and ``folder/qat.pt2`` (the converted PT2E program)."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    sample = _sample()
    model = sample.train(epochs=float_epochs)
    data = load_digits()
    order = np.random.default_rng(sample.SPLIT_SEED).permutation(len(data.images))
    rows = order[: int(len(order) * 0.75)]  # the training quarter the bundled image folder does not hold
    x = torch.from_numpy((data.images[rows] / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(data.target[rows])
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph = torch.export.export(model.train(), (x[:4],), dynamic_shapes={"images": {0: batch}}).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config(is_qat=True))
    graph = prepare_qat_pt2e(graph, quantizer)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(graph.parameters(), lr=1e-3)
    for _ in range(qat_epochs):
        for chunk in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(graph(x[chunk]), y[chunk]).backward()
            optimizer.step()
    move_exported_model_to_eval(graph)
    quantized = convert_pt2e(graph)
    example = (torch.zeros(1, 1, 8, 8),)
    exported = torch.export.export(quantized, example)
    torch.export.save(exported, str(folder / "qat.pt2"))
    program = torch.onnx.export(exported, example, dynamo=True, input_names=["images"], output_names=["logits"],
                                verbose=False)
    program.save(str(folder / "qat.onnx"))
    return folder / "qat.onnx", folder / "qat.pt2"
