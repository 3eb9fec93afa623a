"""PyTorch sources: an ``nn.Module`` with example inputs, or a ``.pt2`` ExportedProgram file.

torch is imported inside these functions only. Every route sees the model through one wrapper that
takes the inputs by the names of ``forward``'s parameters and returns a dict keyed by the output names,
so the ONNX graph (dynamo exporter), the .tflite signature (litert-torch) and the OpenVINO IR (read from
that ONNX) all carry the same input and output names: one set of feeds for every form.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters._pt2 import load_program
from edgekit.converters._quiet import verbose
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import ConversionError, MissingDependencyError, first_line
from edgekit.runtimes.litert_interpreter import implementation_version

PYTORCH = "pytorch"


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch (needed for PyTorch sources)", "torch") from exc
    if not verbose():  # its exporter's own handler prints "torchvision is not installed. Skipping …" per op
        logging.getLogger("torch").setLevel(logging.ERROR)
    return torch


def is_module(obj: Any) -> bool:
    """Whether ``obj`` is a torch ``nn.Module``, without importing torch when the caller has not."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


class _Named:
    """Builds the wrapper lazily (it subclasses torch.nn.Module, so torch must be imported first)."""

    @staticmethod
    def wrap(torch: Any, module: Any, output_names: tuple[str, ...], positional: tuple[str, ...] = (),
             channels_last: tuple[str, ...] = ()) -> Any:
        class Named(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = module

            def forward(self, **feeds: Any) -> dict[str, Any]:
                feeds = {k: v.permute(0, 3, 1, 2) if k in channels_last else v for k, v in feeds.items()}
                return dict(zip(output_names, _flatten(call(self.model, feeds, positional))))

        named = Named()
        named.training = False  # not .eval(): it recurses, and a .pt2 program's module refuses eval()
        return named


def call(module: Any, feeds: dict[str, Any], positional: tuple[str, ...]) -> Any:
    """Call ``module`` the way it was traced: a .pt2 program exported with positional arguments refuses them
    by keyword."""
    return module(*(feeds[n] for n in positional), **{k: v for k, v in feeds.items() if k not in positional})


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flatten(v)]
    return [value]


def _output_names(value: Any, given: tuple[str, ...] | None) -> tuple[str, ...]:
    flat = _flatten(value)
    if given:
        if len(given) != len(flat):
            raise ConversionError(f"output_names gives {len(given)} name(s), the model returns {len(flat)} tensor(s)")
        return tuple(given)
    if isinstance(value, dict) and len(value) == len(flat):
        return tuple(str(k) for k in value)
    return tuple(f"output_{i}" for i in range(len(flat)))


def _numpy_dtype(tensor: Any) -> np.dtype:
    return tensor.detach()[(0,) * tensor.dim()].cpu().numpy().dtype if tensor.numel() else np.dtype("float32")


def _examples_by_name(module: Any, example_inputs: Any) -> dict[str, Any]:
    torch = import_torch()
    parameters = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = [p.name for p in parameters]
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        unknown = [k for k in example_inputs if k not in names]
        if unknown:
            raise ConversionError(f"example_inputs names {unknown}, but forward() takes {names}")
        examples = dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) > len(names):
            raise ConversionError(f"{len(example_inputs)} example inputs for forward({', '.join(names)})")
        examples = dict(zip(names, example_inputs))
    else:
        raise ConversionError("example_inputs must be a tensor, a tuple of tensors or a dict of name -> tensor, "
                              f"got {type(example_inputs).__name__}")
    bad = [k for k, v in examples.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"example input(s) {bad} are not tensors; every input must be a torch.Tensor")
    return examples


def describe(module_or_path: Any, example_inputs: Any = None, output_names: tuple[str, ...] | None = None,
             name: str | None = None, trust_pickle: bool = False) -> dict[str, Any]:
    """What the pipeline needs of a PyTorch source: input specs, output names, the wrapper, the examples.

    Raises:
        ConversionError: No or wrong example inputs, or the model fails on them.
        UnsupportedModelError: A .pt2 file torch cannot read.
    """
    torch = import_torch()
    if isinstance(module_or_path, (str, Path)):
        path = Path(module_or_path)
        program = load_program(torch, path, trust_pickle=trust_pickle)
        module = program.module()
        positional = tuple(program.graph_signature.user_inputs[: len(program.example_inputs[0])]) \
            if program.example_inputs else ()
        if example_inputs is None:
            if not program.example_inputs:
                raise ConversionError(f"'{path}' stores no example inputs; re-export it with torch.export.export "
                                      "(torch >= 2.5 saves them) or convert the nn.Module with example_inputs=")
            args, kwargs = program.example_inputs
            example_inputs = {**dict(zip(program.graph_signature.user_inputs, args)), **kwargs}
        stem = name or path.stem
    else:
        if example_inputs is None:
            raise ConversionError("a PyTorch module needs example_inputs= (a tensor, tuple or dict of the shapes "
                                  "to convert with): edge targets have static shapes")
        module, path, stem = module_or_path, None, name or type(module_or_path).__name__.lower()
        positional = ()
    if path is None:
        module.eval()  # a .pt2 program was exported in the mode it runs in (and refuses eval())
    examples = _examples_by_name(module, example_inputs)
    try:
        with torch.no_grad():
            produced = call(module, examples, positional)
    except Exception as exc:  # noqa: BLE001 - the user's forward() may raise anything: translate it
        raise ConversionError(f"the model fails on its example inputs: {type(exc).__name__}: "
                              f"{first_line(exc)[:200]}") from exc
    outputs = _output_names(produced, output_names)
    inputs = tuple(TensorSpec(k, tuple(int(d) for d in v.shape), _numpy_dtype(v)) for k, v in examples.items())
    return {"module": module, "wrapper": _Named.wrap(torch, module, outputs, positional), "examples": examples,
            "positional": positional,
            "inputs": inputs, "outputs": outputs, "stem": stem, "path": path,
            "size_bytes": _state_bytes(module), "sha256": _state_digest(module), "quantization": _pt2e(module)}


def _pt2e(module: Any) -> str | None:
    """How a PT2E-quantized graph (``convert_pt2e``'s output, QAT or PTQ) carries its scales; its ONNX export
    is a QDQ graph with those scales. None for a float model (or one that is not an FX graph)."""
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return None
    ops = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    quantize = sum(op.startswith("quantized_decomposed.quantize_per") for op in ops)
    dequantize = sum(op.startswith("quantized_decomposed.dequantize_per") for op in ops)
    if not dequantize:
        return None
    return f"PT2E-quantized PyTorch ({quantize} quantize, {dequantize} dequantize op(s))"


def _state_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _state_digest(module: Any) -> str:
    """A fingerprint of the weights (for a module that has no file to hash)."""
    torch, digest = import_torch(), hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reshape_examples(examples: dict[str, Any], inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """Examples at the shapes ``--input-shape`` fixed (zeros for integer inputs, uniform 0-1 for float ones)."""
    torch = import_torch()
    reshaped = {}
    for spec in inputs:
        tensor = examples[spec.name]
        if tuple(tensor.shape) == tuple(spec.shape):
            reshaped[spec.name] = tensor
        elif tensor.is_floating_point():
            reshaped[spec.name] = torch.rand(spec.shape, dtype=tensor.dtype, generator=torch.Generator().manual_seed(0))
        else:
            reshaped[spec.name] = torch.zeros(spec.shape, dtype=tensor.dtype)
    return reshaped


def export_onnx(torch_model: dict[str, Any], output: Path, opset: int | None = None) -> dict[str, Any]:
    """Write the model as float ONNX (one file, the source's names): the dynamo exporter, else TorchScript."""
    torch = import_torch()
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; say so before it fails deep inside
    except ImportError as exc:
        raise MissingDependencyError("onnxscript (torch's ONNX exporter needs it)", "torch") from exc
    wrapper, examples = torch_model["wrapper"], torch_model["examples"]
    names, outputs = list(examples), list(torch_model["outputs"])
    info: dict[str, Any] = {"route": "torch -> ONNX (dynamo exporter)", "exporter": f"torch.onnx {torch.__version__}"}
    try:
        torch.onnx.export(wrapper, (), str(output), kwargs=examples, input_names=names, output_names=outputs,
                          dynamo=True, external_data=False, opset_version=opset)
    except Exception as dynamo_exc:  # noqa: BLE001 - export errors come in many types; fall back, then translate
        first = first_line(dynamo_exc)[:200]
        positional = _Positional.wrap(torch, torch_model["module"], names, torch_model["positional"])
        try:
            torch.onnx.export(positional, tuple(examples.values()), str(output), input_names=names,
                              output_names=outputs, dynamo=False, opset_version=opset or 17)
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"torch.onnx.export cannot export the model: dynamo exporter: {first}; "
                                  f"TorchScript exporter: {first_line(exc)[:200]}") from exc
        info.update(route="torch -> ONNX (TorchScript exporter)",
                    note=f"the dynamo exporter failed ({first}); the legacy TorchScript exporter was used")
    return info


class _Positional:
    """The TorchScript exporter passes inputs positionally."""

    @staticmethod
    def wrap(torch: Any, module: Any, names: list[str], traced_positional: tuple[str, ...]) -> Any:
        class Positional(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = module

            def forward(self, *args: Any) -> tuple[Any, ...]:
                return tuple(_flatten(call(self.model, dict(zip(names, args)), traced_positional)))

        positional = Positional()
        positional.training = False
        return positional


def export_tflite(torch_model: dict[str, Any], output: Path, channels_last: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the model as float32 .tflite with litert-torch (signature names = the source's names). Inputs keep
    their layout, except those in ``channels_last``: NHWC in the file, permuted to NCHW inside the graph, where
    litert-torch's layout pass folds the transposes into the convolutions."""
    torch = import_torch()
    try:
        import litert_torch
    except ImportError as exc:
        raise MissingDependencyError("litert-torch (PyTorch -> TFLite)", "torch") from exc
    wrapper, examples = torch_model["wrapper"], torch_model["examples"]
    if channels_last:
        wrapper = _Named.wrap(torch, torch_model["module"], torch_model["outputs"], torch_model["positional"],
                              channels_last)
        examples = {k: v.permute(0, 2, 3, 1).contiguous() if k in channels_last else v for k, v in examples.items()}
    try:
        edge = litert_torch.convert(wrapper, sample_args=(), sample_kwargs=examples)
        edge.export(str(output))
    except Exception as exc:  # noqa: BLE001 - torch.export and lowering errors of many types: translate all
        raise ConversionError(
            f"litert-torch cannot convert the model to TFLite: {type(exc).__name__}: {first_line(exc)[:250]}; "
            "a model that does not trace needs changes, an op without a lowering another route "
            "(export ONNX and convert that)"
        ) from exc
    narrowed = [k for k, v in torch_model["examples"].items() if v.dtype in (torch.int64, torch.float64)]
    info: dict[str, Any] = {"route": "torch -> TFLite (litert-torch)",
                            "exporter": f"litert-torch {implementation_version('litert-torch')}"}
    if narrowed:
        info["note"] = f"TFLite has no 64-bit I/O here: input(s) {narrowed} take int32/float32"
    return info


class TorchReference:
    """The PyTorch model itself, run like a Runtime: validation compares every artifact with it."""

    def __init__(self, torch_model: dict[str, Any]) -> None:
        self._wrapper = torch_model["wrapper"]
        self._examples = torch_model["examples"]
        self.inputs = torch_model["inputs"]
        self.outputs = tuple(TensorSpec(n, (), np.dtype("float32")) for n in torch_model["outputs"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = import_torch()
        # a copy: feeds may be read-only (np.load, frombuffer), which torch.from_numpy warns about
        tensors = {k: torch.from_numpy(np.array(v, order="C")).to(self._examples[k].dtype) for k, v in feeds.items()}
        with torch.no_grad():
            produced = self._wrapper(**tensors)
        return {k: v.detach().cpu().numpy() for k, v in produced.items()}

    def close(self) -> None:
        pass
