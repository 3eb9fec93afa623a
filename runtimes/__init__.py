"""Engine backends behind one Runtime interface.

The registry is static: listing, describing or choosing a backend never
imports an engine. A backend's module is imported only when a model is loaded
with it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.runtimes.errors import DeviceError, EdgekitError, MissingDependencyError, UnsupportedModelError
from edgekit.runtimes.formats import IMX500, ONNX, OPENVINO, RKNN, TFLITE, ModelFile, open_model_file

if TYPE_CHECKING:  # base imports numpy; the package itself stays import-cheap
    from edgekit.runtimes.base import Runtime

__all__ = ["BACKENDS", "DEVICES", "Backend", "open_runtime", "resolve_backend"]

DEVICES = ("cpu", "gpu", "npu", "auto")
#: execution precisions ``precision=`` can ask for; "auto" (or None) is the engine's own default
PRECISIONS = ("auto", "f32", "bf16", "f16")
#: ``graph_optimization=`` levels (ONNX Runtime's own; "all" is its default)
GRAPH_OPTIMIZATIONS = ("disabled", "basic", "extended", "all")


@dataclass(frozen=True)
class Backend:
    """One engine: where its Runtime class lives, which packages provide it, and the pip extra."""

    name: str
    target: str  # "module:attr", imported lazily
    import_names: tuple[str, ...]  # any one of these makes the backend usable, in order of preference
    extra: str
    formats: tuple[str, ...]  # file formats it can read, preferred first

    def installed_module(self) -> str | None:
        """The first providing package that is installed, found without importing it."""
        for name in self.import_names:
            try:
                if importlib.util.find_spec(name) is not None:
                    return name
            except (ImportError, ValueError):
                continue
        return None

    def runtime_class(self) -> type[Runtime]:
        if self.installed_module() is None:
            raise MissingDependencyError(f"the {self.name} engine ({' or '.join(self.import_names)})", self.extra)
        module_name, attr = self.target.split(":")
        return getattr(importlib.import_module(module_name), attr)


BACKENDS: dict[str, Backend] = {
    "litert": Backend("litert", "edgekit.runtimes._litert:LiteRTRuntime",
                      ("ai_edge_litert", "tflite_runtime", "tensorflow"), "litert", (TFLITE,)),
    "onnxruntime": Backend("onnxruntime", "edgekit.runtimes._ort:OrtRuntime", ("onnxruntime",), "onnx", (ONNX,)),
    "openvino": Backend("openvino", "edgekit.runtimes._openvino:OpenVINORuntime", ("openvino",), "openvino",
                        (OPENVINO, ONNX, TFLITE)),
    # rknn-toolkit-lite2 exists for the boards only: the backend itself says what is missing where (a Rockchip
    # board without it, or a machine no .rknn can run on), so it is always importable
    "rknn": Backend("rknn", "edgekit.runtimes._rknn:RknnRuntime", ("rknnlite", "edgekit"), "rknn", (RKNN,)),
}
_ALIASES = {"tflite": "litert", "ort": "onnxruntime", "ov": "openvino"}
_DEFAULT_BACKEND = {TFLITE: "litert", ONNX: "onnxruntime", OPENVINO: "openvino", RKNN: "rknn"}


def resolve_backend(model: ModelFile, backend: str | None) -> Backend:
    """Pick the backend for a model file: the one asked for, else the format's native engine."""
    if model.format == IMX500:  # runs on the camera's sensor, driven by the Pi's camera stack, not by an engine
        raise DeviceError(
            f"'{model.path}' is an IMX500 package: it runs on the Raspberry Pi AI Camera's sensor, not through an "
            "engine here; on the Pi, `imx500-package -i FILE -o DIR` makes DIR/network.rpk for picamera2 "
            "(edgekit checked the quantized model while converting: see its report's validation)")
    if backend is None:
        return BACKENDS[_DEFAULT_BACKEND[model.format]]
    name = _ALIASES.get(backend.lower(), backend.lower())
    if name not in BACKENDS:
        raise UnsupportedModelError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    chosen = BACKENDS[name]
    if model.format not in chosen.formats:
        readers = [b for b in BACKENDS.values() if model.format in b.formats]
        raise UnsupportedModelError(
            f"the {name} backend cannot read {model.format} models like '{model.path}'; "
            f"use {' or '.join(b.name for b in readers)}"
        )
    return chosen


def open_runtime(
    path: Any,
    *,
    backend: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    sha256: str | None = None,
    check_finite: bool = False,
    isolated: bool = False,
    precision: str | None = None,
    **engine_options: Any,
) -> Runtime:
    """Validate, identify and load a model file. See ``edgekit.load`` for the arguments."""
    if precision is not None and precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    device = (device or "cpu").lower()
    if device not in DEVICES:
        raise DeviceError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise EdgekitError(f"threads must be a positive integer, got {threads!r}")
    model = path if isinstance(path, ModelFile) else open_model_file(path)
    if sha256 is not None:
        actual = model.sha256()
        if actual != sha256.lower().strip():
            raise UnsupportedModelError(f"'{model.path}' has sha256 {actual}, not the expected {sha256}; "
                                        "the file changed or is not the model you meant")
    chosen = resolve_backend(model, backend)
    runtime_class = chosen.runtime_class()
    if isolated or _compiled_for_an_npu(model, chosen):
        from edgekit.runtimes._isolation import probe

        probe(model.path, chosen.name)
    if chosen.name in ("openvino", "litert"):
        engine_options["precision"] = precision
    elif precision not in (None, "auto", "f32"):
        raise EdgekitError(f"precision '{precision}' is an execution choice of OpenVINO (f32, bf16, f16) and LiteRT "
                           f"(f32, f16); {chosen.name} runs float layers in f32: drop precision= or load with "
                           "backend='openvino'")
    runtime = runtime_class(model, device=device, threads=threads, **engine_options)
    runtime.check_finite = check_finite
    runtime.model_file = model
    return runtime


def _compiled_for_an_npu(model: ModelFile, backend: Backend) -> bool:
    """A vendor's context binary (a QNN EPContext) is parsed by the vendor's native library, which has crashed on
    corrupted ones: such a file is always opened in a throwaway process first (not again inside that process)."""
    import os

    from edgekit.runtimes._isolation import CHILD_VARIABLE

    if backend.name != "onnxruntime" or os.environ.get(CHILD_VARIABLE) or model.onnx is None:
        return False
    return any(node.op_type == "EPContext" for node in model.onnx.nodes)
