"""Accuracy of a converted model against its float original, on held-out samples.

Small registered metric functions (cosine, max/mean absolute error) run per
output over all samples; classifier-shaped outputs add top-1 agreement and,
with labels, task accuracy of both models. Degenerate outputs (constant
across samples, or all exactly zero - an int8 output stuck at its zero point)
are flagged: they are the signature of a collapsed quantization.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.runtimes.base import Runtime

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}


def metric(name: str):
    def register(fn: Callable[[np.ndarray, np.ndarray], float]):
        METRICS[name] = fn
        return fn

    return register


@metric("cosine")
def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    a, b = reference.ravel().astype(np.float64), candidate.ravel().astype(np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / denominator)


@metric("max_abs_error")
def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.max(np.abs(reference.astype(np.float64) - candidate)))


@metric("mean_abs_error")
def mean_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.mean(np.abs(reference.astype(np.float64) - candidate)))


def is_classifier_shaped(array: np.ndarray) -> bool:
    """[batch, classes] with several classes: the output top-1 and accuracy make sense for."""
    return array.ndim == 2 and array.shape[1] > 1


@dataclass(frozen=True)
class ValidationReport:
    samples: int
    outputs: dict[str, dict[str, float]]  # output name -> metric -> value
    top1_agreement: float | None = None
    accuracy_float: float | None = None  # percent, with labels
    accuracy_converted: float | None = None
    degenerate: tuple[str, ...] = ()
    synthetic: bool = False
    max_drop: float | None = None
    drop: float | None = None  # accuracy points with labels, else (1 - min cosine) * 100
    drop_basis: str = ""
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["degenerate"], data["failures"] = list(self.degenerate), list(self.failures)
        data["passed"] = self.passed
        return data


def validate(
    reference: Runtime,
    candidate: Runtime,
    samples: Iterable[Any],
    *,
    max_drop: float | None = None,
    synthetic: bool = False,
    on_sample: Callable[[], None] | None = None,
) -> ValidationReport:
    """Run both models on every sample (objects with ``.feeds`` and ``.label``) and compare."""
    ref_out: dict[str, list[np.ndarray]] = {s.name: [] for s in reference.outputs}
    cand_out: dict[str, list[np.ndarray]] = {s.name: [] for s in candidate.outputs}
    labels: list[int | None] = []
    for sample in samples:
        for store, runtime in ((ref_out, reference), (cand_out, candidate)):
            for name, value in runtime.run(sample.feeds).items():
                store[name].append(value.astype(np.float32, copy=False))
        labels.append(sample.label)
        if on_sample:
            on_sample()
    count = len(labels)
    outputs, degenerate = {}, []
    pairs = list(zip(ref_out, cand_out))  # outputs matched by position: names may differ across forms
    for ref_name, cand_name in pairs:
        if not ref_out[ref_name]:
            continue
        ref, cand = np.concatenate(ref_out[ref_name]), np.concatenate(cand_out[cand_name])
        outputs[cand_name] = {name: fn(ref, cand) for name, fn in METRICS.items()}
        varies = count > 1 and np.ptp(ref, axis=0).max() > 0
        if varies and np.ptp(cand, axis=0).max() == 0:
            degenerate.append(f"output '{cand_name}' is constant across samples")
        elif np.any(ref) and not np.any(cand):
            degenerate.append(f"output '{cand_name}' is all zeros (stuck at the zero point)")
    agreement = accuracy_ref = accuracy_cand = None
    if pairs and ref_out[pairs[0][0]]:
        ref, cand = np.concatenate(ref_out[pairs[0][0]]), np.concatenate(cand_out[pairs[0][1]])
        if is_classifier_shaped(ref):
            agreement = float(np.mean(ref.argmax(1) == cand.argmax(1)) * 100)
            if count and all(label is not None for label in labels):
                truth = np.asarray(labels)
                accuracy_ref = float(np.mean(ref.argmax(1) == truth) * 100)
                accuracy_cand = float(np.mean(cand.argmax(1) == truth) * 100)
    if accuracy_ref is not None:
        drop, basis = accuracy_ref - accuracy_cand, "accuracy points (labels)"
    elif outputs:
        drop, basis = (1 - min(m["cosine"] for m in outputs.values())) * 100, "(1 - cosine) x 100 (no labels)"
    else:
        drop, basis = None, ""
    failures = [f"degenerate: {d}" for d in degenerate]
    if count == 0:
        failures.append("no validation samples")
    if max_drop is not None and drop is not None and drop > max_drop:
        failures.append(f"drop {drop:.2f} exceeds --max-drop {max_drop:g} ({basis})")
    return ValidationReport(count, outputs, agreement, accuracy_ref, accuracy_cand, tuple(degenerate), synthetic,
                            max_drop, drop, basis, tuple(failures))
