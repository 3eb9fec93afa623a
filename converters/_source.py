"""Source models: recognise them, describe their inputs, fix their shapes.

Each source family has its module: Keras (.keras/.h5) and TensorFlow SavedModel folders ``_tensorflow``,
PyTorch modules and .pt2 files ``_torch`` (each importing its framework inside functions); ONNX and TFLite
files are described through the runtime layer. A ``Source`` is what the target modules and the float forms
(``_onnx_export``, ``_tflite_export``) are made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.converters import _torch
from edgekit.converters._tensorflow import KERAS, SAVEDMODEL, describe_keras, describe_savedmodel
from edgekit.converters._torch import PYTORCH
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError, input_shape_option, spelled
from edgekit.runtimes.formats import ONNX, OPENVINO, ModelFile, open_model_file

#: ``Source.cache`` key: a quantized ONNX source is made float on request (``dequantize_source``)
DEQUANTIZE = "dequantize_qdq"


@dataclass
class Source:
    """A model to convert, with input specs whose non-batch dimensions are fixed."""

    path: Path
    kind: str  # keras | savedmodel | onnx | tflite | pytorch
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    signature: str | None = None  # SavedModel signature key
    # how an ONNX/TFLite source arrives already quantized (``audit.source_quantization``); None: float
    quantization: str | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def torch_model(self) -> dict[str, Any]:
        """A PyTorch source's module, wrapper and example inputs (``_torch.describe``)."""
        return self.cache["torch"]

    @property
    def size_bytes(self) -> int:
        if self.kind == PYTORCH:
            return self.torch_model["size_bytes"]
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        if self.kind == ONNX:  # with the external data files beside it (a large model's weights live there)
            from edgekit.runtimes.formats import check_onnx

            beside = {self.path.parent / name for name in check_onnx(self.path).external_locations}
            return self.path.stat().st_size + sum(p.stat().st_size for p in beside)
        if self.kind == OPENVINO:  # the .xml and its weights
            weights = self.path.with_suffix(".bin")
            return self.path.stat().st_size + (weights.stat().st_size if weights.is_file() else 0)
        return self.path.stat().st_size


def dequantize_source(source: Source) -> Source:
    """The quantized ONNX ``source`` as a float source: its exports drop the Q/DQ pairs and fold the weights'
    DequantizeLinear into float weights (``_onnx_rewrite.dequantize_qdq``), so any target can take it.

    Raises:
        ConversionError: The source is not a quantized ONNX model.
    """
    if source.quantization is None:
        raise ConversionError(f"dequantize: '{source.path.name}' is not quantized; convert it without the option")
    if source.kind != ONNX:
        raise ConversionError(f"dequantize applies to ONNX sources; '{source.path.name}' is {source.quantization}: "
                              "convert the float model instead")
    source.cache[DEQUANTIZE] = True
    return replace(source, quantization=None)


def open_source(path: Any, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
                example_inputs: Any = None, output_names: tuple[str, ...] | None = None,
                name: str | None = None, trust_pickle: bool = False) -> Source:
    """Identify a source model and describe its inputs, applying ``input_shapes`` overrides.

    ``path`` may also be a torch ``nn.Module`` (with ``example_inputs``); ``output_names``, ``name`` (the
    artifacts' stem) and ``trust_pickle`` (load a .pt2 whose pickles hold more than tensors) apply to
    PyTorch sources.

    Raises:
        UnsupportedModelError: Not a model edgekit can convert.
        ConversionError: An input keeps a dynamic non-batch dimension, or an override names no input.
    """
    if _torch.is_module(path) or str(path).lower().endswith(".pt2"):
        return _describe_torch(path, input_shapes or {}, example_inputs, output_names, name, trust_pickle)
    if example_inputs is not None or output_names:
        raise ConversionError("example_inputs and output_names apply to PyTorch sources only")
    path = Path(path)
    if not path.exists():
        raise UnsupportedModelError(f"source model '{path}' does not exist; check the path")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UnsupportedModelError(
                f"'{path}' is a folder without saved_model.pb; pass a SavedModel folder, .keras, .h5, .onnx or .tflite"
            )
        source = Source(path, SAVEDMODEL, **describe_savedmodel(path, cache := {}), cache=cache)
    elif path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        source = Source(path, KERAS, **describe_keras(path, cache := {}), cache=cache)
    else:
        model = open_model_file(path)
        source = _describe_runtime_model(model)
        if model.format == OPENVINO and source.quantization is None:
            raise UnsupportedModelError(
                f"'{path}' is a float OpenVINO IR: an IR is a conversion source only when already quantized "
                "(FakeQuantize layers, e.g. NNCF's), for openvino-int8; convert from the model it was made from")
    return _fix_shapes(source, input_shapes or {})


def _describe_torch(model: Any, overrides: dict[str, tuple[int, ...]], example_inputs: Any,
                    output_names: tuple[str, ...] | None, name: str | None, trust_pickle: bool) -> Source:
    if not _torch.is_module(model) and not Path(model).is_file():
        raise UnsupportedModelError(f"source model '{model}' does not exist; check the path")
    described = _torch.describe(model, example_inputs, tuple(output_names or ()), name, trust_pickle)
    source = Source(described["path"] or Path(described["stem"]), PYTORCH, described["inputs"], described["outputs"],
                    quantization=described["quantization"], cache={"torch": described})
    source = _fix_shapes(source, overrides)
    described["examples"] = _torch.reshape_examples(described["examples"], source.inputs)
    return source


def _fix_shapes(source: Source, overrides: dict[str, tuple[int, ...]]) -> Source:
    names = [s.name for s in source.inputs]
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ConversionError(f"{spelled('--input-shape', 'input_shapes')} names unknown input(s) {unknown}; the "
                              f"model's inputs are {names}")
    fixed = []
    for spec in source.inputs:
        shape = tuple(overrides.get(spec.name, spec.shape))
        if spec.name in overrides and len(shape) != len(spec.shape):
            raise ConversionError(
                f"{spelled('--input-shape', 'input_shapes')} for '{spec.name}' has rank {len(shape)}, the model's "
                f"input has rank {len(spec.shape)}"
            )
        for axis, size in enumerate(shape):
            if size is None and axis > 0:
                shown = ",".join("?" if d is None else str(d) for d in shape)
                raise ConversionError(
                    f"input '{spec.name}' has a dynamic dimension {axis} (shape [{shown}]); fix it with "
                    f"{input_shape_option(spec.name, ','.join('1' if d is None else str(d) for d in shape))}"
                )
        fixed.append(replace(spec, shape=shape))
    return replace(source, inputs=tuple(fixed))


def _describe_runtime_model(model: ModelFile) -> Source:
    """An ONNX, TFLite or OpenVINO source, from the file as ``open_model_file`` checked it (parsed once)."""
    from edgekit.runtimes import open_runtime
    from edgekit.runtimes.audit import source_quantization

    with open_runtime(model) as runtime:
        inputs, outputs = runtime.inputs, tuple(s.name for s in runtime.outputs)
    return Source(model.path, model.format, inputs, outputs, quantization=source_quantization(model))
