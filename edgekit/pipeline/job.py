"""A prepared conversion job: the source opened once, its data split and its preprocessing, shared by
``convert``, the repair loop, ``sensitivity_ranking`` and ``optimize``.

``prepare`` does what every entry point used to repeat: open the source (fixing input shapes, loading a
PyTorch program), read the calibration data and hold part of it out for validation, and describe the source
for the reports. The job is frozen; converting it to several targets, or converting it again with other
options (what ``optimize`` does once per trial), reads the source and the data once.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit._files import check_stem
from edgekit.converters._source import DEQUANTIZE, KERAS, PYTORCH, SAVEDMODEL, Source, dequantize_source, open_source
from edgekit.pipeline.calibration import DEFAULT_CALIB_SIZE, Dataset, build_dataset
from edgekit.pipeline.preprocess import Recipe
from edgekit.runtimes import open_runtime
from edgekit.runtimes.formats import hash_feeds, hash_into

#: progress(description, total) -> context manager yielding an advance() callable
Progress = Callable[[str, "int | None"], AbstractContextManager[Callable[[], None]]]
log = logging.getLogger("edgekit")
_TOOL_DISTRIBUTIONS = ("tensorflow", "tf2onnx", "torch", "onnxscript", "litert-torch", "ai-edge-quantizer", "onnx",
                       "onnxruntime", "openvino", "nncf", "ai-edge-litert", "numpy")


@dataclass(frozen=True)
class ConversionJob:
    """A model and its data, ready to convert: made by ``prepare``, taken by ``convert``,
    ``sensitivity_ranking`` and ``optimize`` in place of the source and data keywords.

    The fields after ``source_info`` are the arguments it was prepared from (JSON-safe except ``model`` when
    it is an ``nn.Module``): ``optimize`` stores them so its worker processes prepare the same job.
    """

    source: Source
    stem: str  # the artifacts' file stem
    recipe: Recipe
    dataset: Dataset | None  # None: prepared without calibration data (float targets need none)
    source_info: dict[str, Any] = field(repr=False)  # the report's "source" section: kind, path, sha256, shapes
    model: Any = None
    calibration: Any = None
    input_shapes: dict[str, tuple[int, ...]] | None = None
    calib_size: int = DEFAULT_CALIB_SIZE
    validation_size: int | None = None
    seed: int = 0
    name: str | None = None
    trust_pickle: bool = False
    dequantize: bool = False

    def fresh_source(self) -> Source:
        """The source for one conversion run: converters cache the files they make from it (a float ONNX
        export, a float .tflite) in ``Source.cache``, inside that run's staging folder, which is gone when the
        run ends; each run therefore starts from the cache as prepared (the loaded PyTorch program, flags)."""
        return replace(self.source, cache=dict(self.source.cache))

    def float_reference(self, work: Path, progress: Progress | None = None,
                        src: Source | None = None) -> FloatReference:
        """The float original as a runtime: the source itself, its float TFLite export (Keras/SavedModel, made
        in ``work`` and kept in ``src``'s cache, where the run's TFLite targets find it), or the PyTorch model
        run by torch. Close it when done."""
        src = src or self.fresh_source()
        if src.kind == PYTORCH:
            from edgekit.converters._torch import TorchReference

            return FloatReference(TorchReference(src.torch_model))
        if src.kind in (KERAS, SAVEDMODEL):
            from edgekit.converters._tflite_export import float_tflite

            with (progress or no_progress)("exporting the float reference", None):
                path, _ = float_tflite(src, work)
        else:
            path = src.path
        return FloatReference(open_runtime(path), path)


def prepare(
    model: Any,
    *,
    calibration: Any = None,
    example_inputs: Any = None,
    output_names: list[str] | tuple[str, ...] | None = None,
    name: str | None = None,
    trust_pickle: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    recipe: Recipe | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    validation_size: int | None = None,
    seed: int = 0,
    dequantize: bool = False,
) -> ConversionJob:
    """Open a model and read its data once, for any number of conversions.

    Args:
        model: A Keras .keras/.h5 file, a SavedModel folder, an .onnx, a float .tflite, a PyTorch ``.pt2``
            ExportedProgram file or a torch ``nn.Module``.
        calibration: Image folder, .npy/.npz, an iterable/callable of ``{input_name: array}``, or ``"random"``
            (synthetic; reports then say the accuracy figures mean nothing). None: float targets only.
        example_inputs: A PyTorch module's inputs (a tensor, a tuple in ``forward``'s order or a dict by
            parameter name); they fix the artifacts' static shapes. A .pt2 file brings its own.
        output_names: Names for a PyTorch model's outputs (default: a returned dict's keys, else output_0...).
        name: The artifacts' stem (default: the source file's stem, or a module's class name in lower case).
        trust_pickle: Load a .pt2 file whose pickled members hold more than tensors (loading runs their code;
            without this such a file is refused).
        input_shapes: ``{input_name: shape}`` fixing dynamic dimensions.
        recipe: Image preprocessing for image-folder data; stored in every report.
        calib_size: Calibration samples; ``validation_size`` more are held out for validation.
        validation_size: Held-out samples (default: what the data has beyond ``calib_size``, up to a cap).
        seed: The data shuffle's seed.
        dequantize: Make a quantized (QAT/QDQ) ONNX source float first, so any target takes it (by default
            only the int8 targets that keep its scales do).

    Raises:
        UnsupportedModelError: The model is not one edgekit can convert.
        ConversionError: A shape override names no input, or an input keeps a dynamic non-batch dimension.
        CalibrationError: The data cannot be read or does not fit the model's inputs.
    """
    if name is not None:
        check_stem(name)
    src = open_source(model, input_shapes, example_inputs=example_inputs, output_names=output_names, name=name,
                      trust_pickle=trust_pickle)
    stem = name or (src.path.name if src.path.is_dir() else src.path.stem)
    if dequantize:
        src = dequantize_source(src)
    recipe = recipe or Recipe()
    dataset = None
    if calibration is not None:
        dataset = build_dataset(calibration, src.inputs, recipe=recipe, calib_size=calib_size,
                                validation_size=validation_size, seed=seed)
    return ConversionJob(src, stem, recipe, dataset, _source_info(src), model=model, calibration=calibration,
                         input_shapes=input_shapes, calib_size=calib_size, validation_size=validation_size, seed=seed,
                         name=name, trust_pickle=trust_pickle, dequantize=dequantize)


#: ``prepare``'s keywords besides the model, read from its signature: ``convert``, ``sensitivity_ranking`` and
#: ``optimize`` take them too, in place of a job (as they did before jobs existed)
PREPARE_KEYWORDS = tuple(inspect.signature(prepare).parameters)[1:]


def as_job(model: Any, keywords: dict[str, Any], caller: str) -> ConversionJob:
    """``model`` itself when it is a prepared job, else the job ``prepare`` makes of it with ``keywords``.

    Raises:
        TypeError: A job with preparation keywords beside it (they would be silently ignored).
    """
    if isinstance(model, ConversionJob):
        if keywords:
            raise TypeError(f"{caller}() got a prepared job and {sorted(keywords)}: pass them to prepare()")
        return model
    return prepare(model, **keywords)


def split_keywords(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` split into ``prepare``'s keywords and the rest (converter options)."""
    preparation = {k: v for k, v in options.items() if k in PREPARE_KEYWORDS}
    return preparation, {k: v for k, v in options.items() if k not in PREPARE_KEYWORDS}


class FloatReference:
    """The float original, run once per held-out sample: every target and every repair attempt is validated
    on the same samples, and the reference's outputs do not change between them."""

    def __init__(self, runtime: Any, path: Path | None = None) -> None:
        self._runtime, self.outputs, self._seen, self.path = runtime, runtime.outputs, {}, path

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.blake2b(digest_size=16)
        hash_feeds(digest, feeds)
        key = digest.digest()
        if key not in self._seen:
            self._seen[key] = self._runtime.run(feeds)
        return self._seen[key]

    def close(self) -> None:
        self._runtime.close()


@contextmanager
def no_progress(description: str, total: int | None) -> Iterator[Callable[[], None]]:
    """A ``Progress`` that shows nothing (the CLI passes one with bars)."""
    log.info("%s", description)
    yield lambda: None


def tool_versions() -> dict[str, str]:
    """edgekit's and the installed converters' and engines' versions, as every report records them."""
    versions = {"edgekit": __version__}
    for name in _TOOL_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _source_info(src: Source) -> dict[str, Any]:
    info = {"kind": src.kind, "size_bytes": src.size_bytes, "inputs": [s.to_dict() for s in src.inputs],
            "outputs": list(src.output_names)}
    if src.kind == PYTORCH:
        model = src.torch_model
        where = str(model["path"]) if model["path"] else f"nn.Module {type(model['module']).__name__} (in memory)"
        info.update(path=where, sha256=model["sha256"], reference="the PyTorch model itself, run by torch",
                    sha256_of="state_dict tensors")
    else:
        digest = hashlib.sha256()
        files = sorted(p for p in src.path.rglob("*") if p.is_file()) if src.path.is_dir() else [src.path]
        for file in files:
            if src.path.is_dir():
                digest.update(str(file.relative_to(src.path)).encode())
            hash_into(digest, file)
        info.update(path=str(src.path), sha256=digest.hexdigest())
    if src.quantization:
        info["quantization"] = src.quantization
    if src.cache.get(DEQUANTIZE):
        info["dequantized"] = "on request: Q/DQ pairs removed, weights folded to float"
    if src.quantization or src.cache.get(DEQUANTIZE):  # the report's "float" figures are the quantized source's
        info["reference"] = f"the quantized source itself, run by {'torch' if src.kind == PYTORCH else 'its engine'}"
    return info
