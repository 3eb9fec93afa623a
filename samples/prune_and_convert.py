"""Structured pruning, a short distillation, then int8 on all three engines — the compression that pays everywhere.

    pip install -e '.[all]' torch-pruning
    python samples/prune_and_convert.py [OUTDIR]

Zeroed weights (unstructured sparsity) make a model faster only where an engine has sparse kernels (see
``edgekit inspect``'s sparsity line); removing whole channels makes every layer smaller, which every engine
runs faster. This sample takes ``pytorch_to_edge.py``'s digits CNN, removes half of every hidden layer's
channels with torch-pruning (L1-magnitude importance, its dependency graph keeping the layers consistent),
recovers accuracy by distilling from the unpruned model for a few epochs, and converts the pruned model to
tflite-int8, onnx-int8 and openvino-int8 with edgekit, each validated on the bundled image folder within
``MAX_DROP`` points of the pruned PyTorch model. It prints one line per form and one comparing the pruned
and unpruned models.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgekit

HERE = Path(__file__).resolve().parent
MAX_DROP = 2.0  # accuracy points an int8 form may lose against the pruned PyTorch model
CHANNELS_KEPT = 0.5


def _digits_sample():
    spec = importlib.util.spec_from_file_location("pytorch_to_edge", HERE / "pytorch_to_edge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's digits as pytorch_to_edge.py splits them: its held-out quarter is samples/digits/images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.images))
    cut = int(len(order) * 0.75)
    images = torch.from_numpy((data.images / 16.0).astype(np.float32)[:, None])
    labels = torch.from_numpy(data.target)
    return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


def prune(model: nn.Module, kept: float = CHANNELS_KEPT) -> nn.Module:
    """Remove ``1 - kept`` of the channels of every layer but the classifier's outputs."""
    import torch_pruning as tp

    pruned = _digits_sample().DigitsNet()
    pruned.load_state_dict(model.state_dict())
    pruner = tp.pruner.MetaPruner(pruned, torch.zeros(1, 1, 8, 8), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=1 - kept, ignored_layers=[pruned.classifier])
    pruner.step()
    return pruned


def distill(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 15,
            temperature: float = 4.0) -> nn.Module:
    """Train the pruned student on the labels and on the unpruned teacher's softened outputs."""
    torch.manual_seed(0)
    teacher.eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    student.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            with torch.no_grad():
                soft = nn.functional.softmax(teacher(x[batch]) / temperature, 1)
            logits = student(x[batch])
            kl = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, 1), soft,
                                      reduction="batchmean") * temperature ** 2
            loss = 0.5 * kl + 0.5 * nn.functional.cross_entropy(logits, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean() * 100)


def main(out_dir: Path) -> None:
    sample = _digits_sample()
    x_train, y_train, x_test, y_test = _split(sample.SPLIT_SEED)
    teacher = sample.train()
    student = distill(prune(teacher), teacher, x_train, y_train)
    params = [sum(p.numel() for p in m.parameters()) for m in (teacher, student)]
    print(f"pruned: {params[1]:,} of {params[0]:,} parameters ({params[1] / params[0]:.0%}), held-out accuracy "
          f"{accuracy(student, x_test, y_test):.1f}% (unpruned {accuracy(teacher, x_test, y_test):.1f}%)")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = edgekit.convert(
        student, "tflite-int8,onnx-int8,openvino-int8", example_inputs=torch.zeros(1, 1, 8, 8), name="digits_pruned",
        calibration=HERE / "digits" / "images", calib_size=200, max_drop=MAX_DROP,
        recipe=edgekit.Recipe(scale=1 / 255, color="gray", layout="nchw"), output_dir=out_dir, force=True)
    for result in results:
        validation = result.report["validation"]
        print(f"{result.target}: {result.artifact.name} {result.report['artifact']['size_bytes']:,} bytes, "
              f"accuracy {validation['accuracy_converted']:.1f}% (pruned PyTorch {validation['accuracy_float']:.1f}%)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pruned-out"))
