"""Calibration and validation data, engine-neutral.

A ``Dataset`` is an ordered, seeded-shuffled list of lazily loaded samples
(``{input_name: array}`` with a batch axis of 1, plus an optional label),
split into a calibration part and a held-out validation part that is never
used to calibrate. Image folders are read one file at a time, so memory stays
bounded by one sample whatever the folder's size. Each converter adapts a
split to its engine in a few lines (representative_dataset,
CalibrationDataReader, nncf.Dataset).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.pipeline.preprocess import Recipe, load_image
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import CalibrationError, EdgekitError, input_shape_option, spelled

log = logging.getLogger("edgekit")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_CALIB_SIZE = 200
RANDOM_SOURCE = "random"
#: calib_size asking for every sample in one split, none held out
EVERY_SAMPLE = 1 << 62
#: Synthetic data is made from the shapes a model declares, and model files are untrusted: a shape
#: declaring petabytes must be a clear error, not a MemoryError. Real inputs are not capped.
SYNTHETIC_LIMIT_BYTES = 2 * 2**30


def synthetic_shape(spec: TensorSpec, shape: Sequence[int | None] | None = None) -> tuple[int, ...]:
    """The shape of synthetic data for an input (dynamic dimensions as 1), refused when it is too big to make."""
    if spec.kind != "tensor":
        raise EdgekitError(f"input '{spec.name}' is an ONNX {spec.kind}: edgekit cannot make random data for it; "
                           "pass real data")
    dims = tuple(1 if d is None else int(d) for d in (shape if shape is not None else spec.shape))
    size = int(np.prod(dims, dtype=object)) * spec.dtype.itemsize
    if size > SYNTHETIC_LIMIT_BYTES:
        raise EdgekitError(
            f"input '{spec.name}' declares shape {list(dims)}: {_bytes_text(size)} of {spec.dtype.name}, more than "
            f"edgekit makes as synthetic data ({_bytes_text(SYNTHETIC_LIMIT_BYTES)}); pass real data or a smaller "
            f"shape ({input_shape_option(spec.name, '...')})")
    return dims


def _bytes_text(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return ""


@dataclass(frozen=True)
class Sample:
    feeds: dict[str, np.ndarray]
    label: int | None = None


@dataclass
class Provenance:
    """Where the data came from and what was done to it; stored in every conversion report."""

    source: str
    kind: str  # folder | npy | npz | iterable | random
    calibration_count: int = 0
    validation_count: int = 0
    seed: int = 0
    recipe: dict[str, Any] | None = None
    classes: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # unreadable files, with the reason
    warnings: list[str] = field(default_factory=list)
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def every_sample(source: Any, inputs: Sequence[TensorSpec], *, recipe: Recipe | None = None,
                 seed: int = 0) -> tuple[list[Sample], Provenance]:
    """All of ``source``'s samples (loaded, in the seeded shuffle's order) with their provenance."""
    dataset = build_dataset(source, inputs, recipe=recipe, calib_size=EVERY_SAMPLE, validation_size=0, seed=seed)
    return list(dataset.calibration), dataset.provenance


class Split:
    """One part of a dataset: iterable many times over, loading each sample only when reached."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], Sample | None]) -> None:
        self._items, self._load = items, load

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for item in self._items:
            sample = self._load(item)
            if sample is not None:
                yield sample

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """Just the ``{input_name: array}`` dicts: what calibration APIs take."""
        return (sample.feeds for sample in self)


@dataclass
class Dataset:
    calibration: Split
    validation: Split
    provenance: Provenance

    @property
    def labeled(self) -> bool:
        return self.provenance.classes is not None


def build_dataset(
    source: Any,
    inputs: Sequence[TensorSpec],
    *,
    recipe: Recipe | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    validation_size: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Make calibration and validation splits from a folder, .npy/.npz, an iterable/callable, or ``"random"``.

    Args:
        source: A path (image folder, .npy, .npz), the string ``"random"``, a callable returning an
            iterable, or an iterable of dicts ``{input_name: array}`` / single arrays / ``(feeds, label)``.
        inputs: The model's input specs (names, shapes, dtypes), with fixed dimensions.
        recipe: Image preprocessing (image folders only); the model's input fills what it leaves open.
        calib_size: How many samples to calibrate with.
        validation_size: How many to hold out; default ``max(50, calib_size // 4)``.
        seed: Seed of the shuffle (and of random data).

    Raises:
        CalibrationError: The data cannot be used for this model; the message says why.
    """
    if calib_size < 1:
        raise CalibrationError(f"{spelled('--calib-size')} must be at least 1, got {calib_size}")
    wanted_val = max(50, calib_size // 4) if validation_size is None else validation_size
    rng = np.random.default_rng(seed)
    if isinstance(source, str) and source == RANDOM_SOURCE:
        return _random(inputs, calib_size, wanted_val, seed)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise CalibrationError(f"calibration data '{path}' does not exist")
        if path.is_dir():
            return _folder(path, inputs, recipe or Recipe(), calib_size, wanted_val, rng, seed)
        if path.suffix.lower() in (".npy", ".npz"):
            return _arrays(path, inputs, calib_size, wanted_val, rng, seed)
        raise CalibrationError(
            f"calibration data '{path}' is neither an image folder nor a .npy/.npz file; "
            "pass a folder of images, a .npy (one input) or a .npz (one array per input name)"
        )
    return _iterable(source, inputs, calib_size, wanted_val, seed)


def _take(count: int, calib_size: int, wanted_val: int, provenance: Provenance) -> tuple[int, int]:
    """Split ``count`` samples: calibration gets its size first, validation what is left (up to its size)."""
    if count == 0:
        raise CalibrationError(f"calibration data '{provenance.source}' holds no samples")
    if calib_size == EVERY_SAMPLE:  # one split holding all of it (optimize's labeled --val data)
        provenance.calibration_count = count
        return count, 0
    calib = min(calib_size, count)
    if count < calib_size + wanted_val:
        # Small data: keep a quarter for validation rather than none, so accuracy can still be checked.
        val = min(wanted_val, max(1, count // 4)) if count > 1 else 0
        calib = min(calib_size, count - val)
        provenance.warnings.append(
            f"asked for {calib_size} calibration + {wanted_val} validation samples, the data has {count}: "
            f"using {calib} + {val}"
        )
        log.warning(provenance.warnings[-1])
    else:
        val = wanted_val
    provenance.calibration_count, provenance.validation_count = calib, val
    return calib, val


def _check_array(name: str, array: np.ndarray, spec: TensorSpec, where: str, *, whole: bool = False) -> np.ndarray:
    """One sample for one input against the model's spec: without its batch axis (added by the caller),
    or ``whole`` when it already has the input's full rank (0-d scalars, recurrent states whose batch
    axis is not the first)."""
    expected = spec.shape if whole else spec.shape[1:]
    if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        shown = "[" + ", ".join("?" if d is None else str(d) for d in expected) + "]"
        raise CalibrationError(
            f"{where}: input '{name}' samples have shape {list(array.shape)}, the model expects {shown} per sample"
        )
    if array.dtype.kind not in "fiub":
        raise CalibrationError(f"{where}: input '{name}' has dtype {array.dtype}, expected numbers")
    if spec.dtype.kind == "f" and array.dtype.kind != "f":
        raise CalibrationError(
            f"{where}: input '{name}' is {array.dtype.name} but the model takes {spec.dtype.name}; "
            "normalise the data to float first (calibration must see what inference will see)"
        )
    return array.astype(spec.dtype, copy=False)


def _arrays(path: Path, inputs: Sequence[TensorSpec], calib_size: int, wanted_val: int,
            rng: np.random.Generator, seed: int) -> Dataset:
    provenance = Provenance(str(path), path.suffix.lower().lstrip("."), seed=seed)
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix.lower() == ".npy" else None)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration data '{path}': {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationError(
                f"'{path}' is one array but the model has {len(inputs)} inputs {[s.name for s in inputs]}; "
                "use a .npz with one array per input name"
            )
        arrays = {inputs[0].name: loaded}
    else:
        with loaded:
            missing = [s.name for s in inputs if s.name not in loaded.files]
            if missing:
                raise CalibrationError(
                    f"'{path}' has no array for input(s) {missing}; it has {loaded.files}. "
                    "Name each array after a model input"
                )
            arrays = {s.name: loaded[s.name] for s in inputs}
    counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(f"'{path}': inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    # An array one rank above its input holds whole samples (the input's full shape); otherwise each
    # sample lacks the batch axis, which is added.
    whole = {s.name: arrays[s.name].ndim == len(s.shape) + 1 for s in inputs}
    for spec in inputs:
        if count:
            _check_array(spec.name, np.asarray(arrays[spec.name][0]), spec, str(path), whole=whole[spec.name])
    calib, val = _take(count, calib_size, wanted_val, provenance)
    order = rng.permutation(count)

    def load(index: int) -> Sample:
        feeds = {}
        for s in inputs:
            value = np.asarray(arrays[s.name][index], dtype=s.dtype)
            feeds[s.name] = value if whole[s.name] else value[None]
        return Sample(feeds)

    return Dataset(Split(order[:calib], load), Split(order[calib : calib + val], load), provenance)


def _folder(path: Path, inputs: Sequence[TensorSpec], recipe: Recipe, calib_size: int, wanted_val: int,
            rng: np.random.Generator, seed: int) -> Dataset:
    if len(inputs) != 1:
        raise CalibrationError(f"an image folder can feed a one-input model; this one has {len(inputs)} inputs")
    spec = inputs[0]
    try:
        recipe = recipe.for_input(spec)
    except EdgekitError as exc:
        raise CalibrationError(f"image folder '{path}' cannot feed input '{spec.name}': {exc}") from exc
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"image folder '{path}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the path"
        )
    # Class sub-folders (path/<class>/<image>) double as labels for validation.
    classes = sorted({f.relative_to(path).parts[0] for f in files if len(f.relative_to(path).parts) > 1})
    labeled = bool(classes) and all(len(f.relative_to(path).parts) > 1 for f in files)
    index_of = {name: i for i, name in enumerate(classes)}
    provenance = Provenance(str(path), "folder", seed=seed, recipe=recipe.to_dict(),
                            classes=classes if labeled else None)
    calib, val = _take(len(files), calib_size, wanted_val, provenance)
    order = [files[i] for i in rng.permutation(len(files))]

    def load(file: Path) -> Sample | None:
        try:
            array = load_image(str(file), recipe)
        except EdgekitError as exc:
            provenance.skipped.append(f"{file}: {exc}")
            log.warning("skipping unreadable image %s", file)
            return None
        label = index_of[file.relative_to(path).parts[0]] if labeled else None
        return Sample({spec.name: _check_array(spec.name, array[0], spec, str(file))[None]}, label)

    return Dataset(Split(order[:calib], load), Split(order[calib : calib + val], load), provenance)


def _iterable(source: Any, inputs: Sequence[TensorSpec], calib_size: int, wanted_val: int, seed: int) -> Dataset:
    if callable(source):
        source = source()
    if not isinstance(source, Iterable):
        raise CalibrationError(
            f"calibration data of type {type(source).__name__} is not usable; pass a path, 'random', "
            "an iterable or a callable returning one"
        )
    provenance = Provenance(f"<{type(source).__name__}>", "iterable", seed=seed)
    samples: list[Sample] = []
    # An iterable cannot be indexed lazily: read only what will be used.
    for position, item in enumerate(source):
        if len(samples) >= calib_size + wanted_val:
            break
        samples.append(_to_sample(item, inputs, f"calibration item {position}"))
    calib, val = _take(len(samples), calib_size, wanted_val, provenance)
    if any(s.label is not None for s in samples):
        provenance.classes = sorted({str(s.label) for s in samples if s.label is not None})
    return Dataset(Split(samples[:calib], lambda s: s), Split(samples[calib : calib + val], lambda s: s),
                   provenance)


def _to_sample(item: Any, inputs: Sequence[TensorSpec], where: str) -> Sample:
    label = None
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (int, np.integer)):
        item, label = item  # (feeds, label)
    if not isinstance(item, dict):
        if len(inputs) != 1:
            raise CalibrationError(f"{where}: a bare array cannot feed {len(inputs)} inputs; yield dicts by name")
        item = {inputs[0].name: item}
    feeds = {}
    for spec in inputs:
        if spec.name not in item:
            raise CalibrationError(f"{where} has no array for input '{spec.name}'; it has {sorted(item)}")
        array = np.asarray(item[spec.name])
        if array.ndim == len(spec.shape):  # the input's full shape: a batch of one, a scalar, a state
            if spec.shape and spec.shape[0] is None and array.shape[0] != 1:
                raise CalibrationError(f"{where}: yield one sample at a time (batch of 1), got {list(array.shape)}")
            feeds[spec.name] = _check_array(spec.name, array, spec, where, whole=True)
        else:
            feeds[spec.name] = _check_array(spec.name, array, spec, where)[None]
    return Sample(feeds, None if label is None else int(label))


def _random(inputs: Sequence[TensorSpec], calib_size: int, wanted_val: int, seed: int) -> Dataset:
    provenance = Provenance(RANDOM_SOURCE, "random", calib_size, wanted_val, seed, synthetic=True)
    provenance.warnings.append("synthetic random calibration: accuracy figures in this report mean nothing")
    log.warning(provenance.warnings[-1])

    def load(index: int) -> Sample:
        rng = np.random.default_rng([seed, index])
        feeds = {}
        for spec in inputs:
            shape = synthetic_shape(spec, (1, *spec.shape[1:]))
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        return Sample(feeds)

    return Dataset(Split(range(calib_size), load), Split(range(calib_size, calib_size + wanted_val), load),
                   provenance)


def fail_if_empty(count: int, provenance: Provenance) -> None:
    """After a pass over a folder: every image unreadable is an error, some is a counted warning."""
    if count == 0:
        shown = "; ".join(provenance.skipped[:3])
        raise CalibrationError(f"no readable calibration samples in '{provenance.source}' ({shown})")
