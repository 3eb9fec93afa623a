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

from edgekit.runtimes import quantization
from edgekit.runtimes.base import Runtime
from edgekit.runtimes.errors import ConversionError, spelled

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


@metric("sqnr_db")
def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB of ``candidate`` against ``reference``, over all samples."""
    a = reference.astype(np.float64)
    return quantization.sqnr_db(float(np.sum(a**2)), float(np.sum((a - candidate) ** 2)))


@metric("sqnr_db_median_sample")
def sqnr_db_median_sample(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The median over samples (the leading axis) of each sample's SQNR: what judges a collapse.

    SQNR over all samples at once is ruled by the samples with the largest outputs: three held-out digits on
    which a fine-tuned torchvision EfficientNet-B0 gave logits of 50-475 (the rest under 12) took its int8's
    figure to 0.4 dB while each sample's median was 26.8 dB and 97.5 % of the decisions held; a
    MobileNetV3-Small's tflite-int8 read 6.1 dB over all and 15.8 dB per sample. A collapse breaks most
    samples; a few samples outside the calibrated range break only themselves (the decisions count them)."""
    per_sample = [sqnr_db(r[None], c[None]) for r, c in zip(reference, candidate) if np.any(r)]
    return float(np.median(per_sample)) if per_sample else sqnr_db(reference, candidate)


#: Defaults for "collapsed", chosen from the artifacts of tests/test_real_models.py and test_architectures.py:
#: every int8 artifact that still did its task kept >= 0.94 decision agreement and >= 11 dB; the collapses
#: (an OCR model reading 13 %, detectors finding nothing) fell to <= 0.85 and <= 8 dB.
DECISION_FLOOR = 0.90
SQNR_FLOOR_DB = 10.0
DETECTOR_CONFIDENCE = 0.25  # YOLO's default confidence threshold
MAP_THRESHOLD = 0.5
MAX_SEQUENCE = 1024  # longer position axes are a detector's anchors, not a sequence
MARGIN = 0.05  # a classifier's near-ties (untrained nets, ambiguous inputs) are no decision to keep
#: decisions a share is judged on at the least: on fewer, one changed arg-max moves the share by over 10 points
#: and reads as a collapse (a 1000-class net's 12 validation samples, 2 decided, one flipped: "50 %")
MIN_DECISIONS = 10


@dataclass(frozen=True)
class Judgement:
    """How one output is judged: the decision the task makes from it, and why that one."""

    kind: str  # classifier | sequence | dense | probability-map | detector | tensor
    why: str
    agreement: float | None  # fraction of decisions the candidate shares with the float model
    note: str = ""  # what the user should know about this judgement (too few samples to judge decisions)


def judge(reference: np.ndarray, candidate: np.ndarray) -> Judgement:
    """Pick the decision metric an output's shape and range call for, and compute the agreement."""
    ref, cand = reference.astype(np.float32, copy=False), candidate.astype(np.float32, copy=False)
    if ref.ndim == 2 and ref.shape[1] > 1:
        why = (f"[N, classes]: arg-max per sample the float model decides clearly (top-1 ahead of top-2 by >= "
               f"{MARGIN:.0%} of the output's range)")
        decided, agreement = _decided_agreement(ref, cand)
        if decided < MIN_DECISIONS:
            note = (f"only {decided} of {len(ref)} validation samples are decided clearly by the float model (top-1 "
                    f"ahead of top-2 by >= {MARGIN:.0%} of the output's range): too few to judge decisions (at "
                    f"least {MIN_DECISIONS}), so cosine and SQNR judge; validate on more samples "
                    f"({spelled('--val-size', 'validation_size')})")
            return Judgement("classifier", f"[N, classes]: {note}", None, note)
        return Judgement("classifier", why, agreement)
    if ref.ndim == 3 and min(ref.shape[1:]) >= 5:
        layout = _detector_layout(ref)
        if layout is not None:
            why = ("[N, anchors, 4 + classes] with pixel boxes beside 0-1 scores: confident detections must keep "
                   f"their class and overlap (IoU >= 0.5) at confidence {DETECTOR_CONFIDENCE}")
            if layout == "transposed":
                ref, cand = ref.transpose(0, 2, 1), cand.transpose(0, 2, 1)
                why = why.replace("[N, anchors, 4 + classes]", "[N, 4 + classes, anchors]")
            return Judgement("detector", why, _detection_agreement(ref, cand))
    if ref.ndim == 3 and ref.shape[2] > 1:
        probabilities = np.allclose(ref.sum(-1), 1.0, atol=1e-2)
        if ref.min() >= 0 and ref.max() <= 1 and not probabilities:
            return Judgement("anchor-scores", f"[N, anchors, classes] of 0-1 scores: anchors confident (>= "
                             f"{DETECTOR_CONFIDENCE}) in either model must be confident in both, with the same class",
                             _score_agreement(ref, cand))
        if ref.shape[1] <= MAX_SEQUENCE and _mostly_background(ref):
            return Judgement("sequence-ctc", "[N, positions, classes], mostly one background class (CTC's blank): "
                             "the decoded sequence per sample (arg-max, repeats merged, blanks dropped) must be "
                             "identical, as a reader's whole string is right or wrong", _ctc_agreement(ref, cand))
        if ref.shape[1] <= MAX_SEQUENCE:
            return Judgement("sequence", "[N, positions, classes]: arg-max per position where either model "
                             "predicts something other than the background class (OCR, ASR, token tags)",
                             _argmax_agreement(ref, cand, -1, skip_background=True))
    if ref.ndim == 4:
        axis = 1 if ref.shape[1] <= ref.shape[3] else 3
        if ref.shape[axis] > 1:
            layout = "[N, C, H, W]" if axis == 1 else "[N, H, W, C]"
            return Judgement("dense", f"{layout}: arg-max per pixel where either model predicts something other "
                             "than the background class (segmentation, heat-maps)",
                             _argmax_agreement(ref, cand, axis, skip_background=True))
        if ref.min() >= 0 and ref.max() <= 1:
            return Judgement("probability-map", f"one 0-1 channel: overlap (IoU) of the pixels above {MAP_THRESHOLD}",
                             _mask_iou(ref >= MAP_THRESHOLD, cand >= MAP_THRESHOLD))
    return Judgement("tensor", "no decision to read from this shape: cosine and SQNR only", None)


def _argmax_agreement(ref: np.ndarray, cand: np.ndarray, axis: int, skip_background: bool = False) -> float:
    """Share of equal arg-max decisions. With ``skip_background``, positions where both models pick the
    reference's most frequent class (CTC's blank, the "O" tag, a segmentation's background) are left out:
    they dominate and would hide a model that no longer reads anything."""
    ref_best, cand_best = ref.argmax(axis), cand.argmax(axis)
    if skip_background:
        background = np.bincount(ref_best.ravel()).argmax()
        judged = (ref_best != background) | (cand_best != background)
        if not judged.any():
            return 1.0
        return float(np.mean(ref_best[judged] == cand_best[judged]))
    return float(np.mean(ref_best == cand_best))


def _mostly_background(ref: np.ndarray) -> bool:
    best = ref.argmax(-1)
    return float(np.bincount(best.ravel()).max()) / best.size > 0.5


def _ctc_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    ref_best, cand_best = ref.argmax(-1), cand.argmax(-1)
    blank = np.bincount(ref_best.ravel()).argmax()
    return float(np.mean([_ctc_path(r, blank) == _ctc_path(c, blank) for r, c in zip(ref_best, cand_best)]))


def _ctc_path(best: np.ndarray, blank: int) -> list[int]:
    merged = [int(v) for i, v in enumerate(best) if i == 0 or v != best[i - 1]]
    return [v for v in merged if v != blank]


def _decided_agreement(ref: np.ndarray, cand: np.ndarray) -> tuple[int, float | None]:
    """How many samples the float model decides clearly, and the share of those the candidate decides alike."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) >= MARGIN * (float(ref.max() - ref.min()) or 1.0)
    if not decided.any():
        return 0, None
    return int(decided.sum()), float(np.mean(ref[decided].argmax(1) == cand[decided].argmax(1)))


def _score_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    ref_conf, cand_conf = ref.max(-1) >= DETECTOR_CONFIDENCE, cand.max(-1) >= DETECTOR_CONFIDENCE
    either = ref_conf | cand_conf
    if not either.any():
        return 1.0
    kept = ref_conf & cand_conf & (ref.argmax(-1) == cand.argmax(-1))
    return float(kept[either].mean())


def _mask_iou(ref: np.ndarray, cand: np.ndarray) -> float:
    union = np.logical_or(ref, cand).sum()
    return float(np.logical_and(ref, cand).sum() / union) if union else 1.0


def _detector_layout(ref: np.ndarray) -> str | None:
    """Boxes in pixels (first four values) beside class scores in 0-1 (the rest), along either axis."""
    for layout, rows in (("anchors-first", ref), ("transposed", ref.transpose(0, 2, 1))):
        if rows.shape[2] >= 5 and rows.shape[1] > rows.shape[2]:
            boxes, scores = rows[..., :4], rows[..., 4:]
            if np.abs(boxes).max() > 2.0 and scores.min() >= 0 and scores.max() <= 1:
                return layout
    return None


def _detection_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """Per anchor confident in either model: both confident, same class, boxes overlapping (IoU >= 0.5)."""
    ref_conf, cand_conf = ref[..., 4:].max(-1) >= DETECTOR_CONFIDENCE, cand[..., 4:].max(-1) >= DETECTOR_CONFIDENCE
    either = ref_conf | cand_conf
    if not either.any():
        return 1.0
    same_class = ref[..., 4:].argmax(-1) == cand[..., 4:].argmax(-1)
    kept = ref_conf & cand_conf & same_class & (_box_iou(ref[..., :4], cand[..., :4]) >= 0.5)
    return float(kept[either].mean())


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (cx, cy, w, h) boxes, elementwise."""
    a1, a2 = a[..., :2] - np.abs(a[..., 2:]) / 2, a[..., :2] + np.abs(a[..., 2:]) / 2
    b1, b2 = b[..., :2] - np.abs(b[..., 2:]) / 2, b[..., :2] + np.abs(b[..., 2:]) / 2
    overlap = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None).prod(-1)
    union = np.abs(a[..., 2:]).prod(-1) + np.abs(b[..., 2:]).prod(-1) - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-12), 1.0)


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
    collapsed: tuple[str, ...] = ()  # outputs below the floors, with the figure that judged them
    accept_loss: bool = False  # the user accepted a collapse: recorded, not failed
    floors: dict[str, float] = field(default_factory=lambda: {"decision_agreement": DECISION_FLOOR,
                                                              "sqnr_db": SQNR_FLOOR_DB})
    precision: str = "f32"  # what the artifact's float layers ran in: the engine's default, as on the device
    decisions: dict[str, Any] | None = None  # the application's own decisions (``decide``): by, count, agreement
    notes: tuple[str, ...] = ()  # what limits the judgement (too few decided samples), for the report's warnings

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def over_budget(self) -> bool:
        return self.max_drop is not None and self.drop is not None and self.drop > self.max_drop

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["degenerate"], data["failures"] = list(self.degenerate), list(self.failures)
        data["collapsed"], data["notes"] = list(self.collapsed), list(self.notes)
        data["passed"] = self.passed
        return data


def validate(
    reference: Runtime,
    candidate: Runtime,
    samples: Iterable[Any],
    *,
    max_drop: float | None = None,
    synthetic: bool = False,
    accept_loss: bool = False,
    decide: Callable[[dict[str, np.ndarray]], Any] | None = None,
    on_sample: Callable[[], None] | None = None,
) -> ValidationReport:
    """Run both models on every sample (objects with ``.feeds`` and ``.label``) and compare.

    Every output is judged by the decision its shape calls for (``judge``) and by its samples' median SQNR
    (``sqnr_db_median_sample``); one below the
    floors (``DECISION_FLOOR``, ``SQNR_FLOOR_DB``) has collapsed, which fails the artifact unless
    ``accept_loss``. ``decide`` is the application's own reading of the outputs, for what no output shape
    shows (an embedding a later model classifies, windows a tracker joins): it gets every validation
    sample's outputs stacked in order (``{reference output name: array}``) and returns an array of
    decisions; the share the candidate keeps is judged by the same floor, and without labels the drop is
    the percentage of decisions changed."""
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
    outputs, degenerate, collapsed, notes = {}, [], [], []
    pairs = list(zip(ref_out, cand_out))  # outputs matched by position: names may differ across forms
    for ref_name, cand_name in pairs:
        if not ref_out[ref_name]:
            continue
        ref, cand = np.concatenate(ref_out[ref_name]), np.concatenate(cand_out[cand_name])
        outputs[cand_name] = {name: fn(ref, cand) for name, fn in METRICS.items()}
        judgement = judge(ref, cand)
        outputs[cand_name].update(judged_by=judgement.kind, why=judgement.why,
                                  decision_agreement=judgement.agreement)
        collapsed += _below_floors(cand_name, judgement, outputs[cand_name]["sqnr_db_median_sample"])
        if judgement.note:
            notes.append(f"output '{cand_name}': {judgement.note}")
        varies = count > 1 and np.ptp(ref, axis=0).max() > 0
        if np.any(ref) and not np.any(cand):  # the more telling of the two, so named first
            precision = getattr(candidate, "precision", "f32")
            why = (f"{precision} arithmetic flushes values this small to zero (an accelerator's fp16 below 6e-8)"
                   if precision in ("f16", "bf16") else "an int8 output stuck at its zero point")
            degenerate.append(f"output '{cand_name}' is all zeros where the float model's are not ({why}; the "
                              f"reference's largest value is {float(np.abs(ref).max()):.3g})")
        elif varies and np.ptp(cand, axis=0).max() == 0:
            degenerate.append(f"output '{cand_name}' is constant across samples")
    decisions = None
    if decide is not None and count:
        decisions = _decisions(decide, {ref: np.concatenate(ref_out[ref]) for ref, _ in pairs},
                               {ref: np.concatenate(cand_out[cand]) for ref, cand in pairs})
        if decisions["agreement"] < DECISION_FLOOR:
            collapsed.append(f"{decisions['by']} keeps {decisions['agreement']:.0%} of the float model's decisions "
                             f"(floor {DECISION_FLOOR:.0%})")
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
    elif decisions is not None:
        drop, basis = (1 - decisions["agreement"]) * 100, f"decisions changed, % ({decisions['by']})"
    elif outputs:
        drop, basis = (1 - min(m["cosine"] for m in outputs.values())) * 100, "(1 - cosine) x 100 (no labels)"
    else:
        drop, basis = None, ""
    failures = [f"degenerate: {d}" for d in degenerate]
    if collapsed and not accept_loss:
        failures.append("collapsed: " + "; ".join(collapsed))
    if count == 0:
        failures.append("no validation samples")
    if max_drop is not None and drop is not None and drop > max_drop:
        failures.append(f"drop {drop:.2f} exceeds {spelled('--max-drop')} {max_drop:g} ({basis})")
    return ValidationReport(count, outputs, agreement, accuracy_ref, accuracy_cand, tuple(degenerate), synthetic,
                            max_drop, drop, basis, tuple(failures), tuple(collapsed), accept_loss,
                            precision=getattr(candidate, "precision", "f32"), decisions=decisions, notes=tuple(notes))


def _decisions(decide: Callable[[dict[str, np.ndarray]], Any], reference: dict[str, np.ndarray],
               candidate: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run the application's decision function on both models' outputs and compare what it decides."""
    by = f"decide() {getattr(decide, '__qualname__', type(decide).__name__)}"
    try:
        expected, found = np.asarray(decide(reference)), np.asarray(decide(candidate))
    except Exception as exc:  # noqa: BLE001 - the user's own code: any failure is reported as theirs
        raise ConversionError(f"{by} failed on the validation outputs: {type(exc).__name__}: {exc}") from exc
    if expected.shape != found.shape or expected.size == 0:
        raise ConversionError(f"{by} returned decisions of shape {list(expected.shape)} for the float model and "
                              f"{list(found.shape)} for the converted one; it must return one non-empty array of "
                              "the same shape for both")
    return {"by": by, "count": int(expected.size), "agreement": float(np.mean(expected == found))}


def _below_floors(name: str, judgement: Judgement, sqnr: float) -> list[str]:
    found = []
    if judgement.agreement is not None and judgement.agreement < DECISION_FLOOR:
        found.append(f"output '{name}' keeps {judgement.agreement:.0%} of the float model's {judgement.kind} "
                     f"decisions (floor {DECISION_FLOOR:.0%})")
    if sqnr < SQNR_FLOOR_DB:
        found.append(f"output '{name}' SQNR {sqnr:.1f} dB, the median over samples (floor {SQNR_FLOOR_DB:g} dB)")
    return found
