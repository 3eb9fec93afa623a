"""LiteRT (TFLite) backend: ai-edge-litert, else tflite-runtime, else tensorflow.lite.

Runs through tensor indices taken from the model's signature (set_tensor /
invoke / get_tensor): the fastest idiomatic path, with the signature's names.
XNNPACK is the default CPU delegate of all three implementations; the thread
count is passed when the interpreter is built because XNNPACK ignores a later
change.
"""

from __future__ import annotations

import ctypes.util
import importlib
import logging
import threading
from typing import Any

import numpy as np
from edgekit.runtimes._formats import ModelFile
from edgekit.runtimes.base import Runtime, TensorSpec
from edgekit.runtimes.errors import (
    DeviceError,
    InferenceError,
    MissingDependencyError,
    UnsupportedModelError,
    first_line,
)

log = logging.getLogger("edgekit.runtimes")

IMPLEMENTATIONS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite.python.interpreter"),
)
# Well-known delegate libraries a device may have installed system-wide.
KNOWN_DELEGATES = {"edgetpu": "npu", "vx_delegate": "npu", "ethosu_delegate": "npu",
                   "tensorflowlite_gpu_delegate": "gpu"}


def import_interpreter(preferred: str | None = None) -> tuple[str, Any]:
    """Return (implementation name, interpreter module), trying the implementations in order."""
    order = [i for i in IMPLEMENTATIONS if preferred in (None, i[0])]
    if not order:
        names = ", ".join(name for name, _ in IMPLEMENTATIONS)
        raise UnsupportedModelError(f"unknown LiteRT implementation '{preferred}'; choose one of {names}")
    for name, module in order:
        try:
            return name, importlib.import_module(module)
        except ImportError:
            continue
    raise MissingDependencyError("a LiteRT interpreter (ai-edge-litert or tflite-runtime)", "litert")


def implementation_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version({"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name))
    except Exception:  # noqa: BLE001 - metadata may be absent in frozen installs; the version is informative only
        return "unknown"


def find_system_delegates() -> dict[str, str]:
    """Delegate libraries found on the library path: {library path: device kind}."""
    found = {}
    for stem, kind in KNOWN_DELEGATES.items():
        path = ctypes.util.find_library(stem)
        if path:
            found[path] = kind
    return found


def _quantization(details: dict[str, Any]) -> tuple[float | None, int | None]:
    params = details.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        return None, None  # per-channel I/O quantization: no single scale to apply
    scale, zero_point = details.get("quantization", (0.0, 0))
    if not scale:
        return None, None
    return float(scale), int(zero_point)


def _spec(name: str, details: dict[str, Any]) -> TensorSpec:
    signature = details.get("shape_signature")
    dims = signature if signature is not None and len(signature) else details["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    scale, zero_point = _quantization(details) if np.dtype(details["dtype"]).kind in "iu" else (None, None)
    return TensorSpec(name, shape, np.dtype(details["dtype"]), scale, zero_point)


def signature_io(interpreter: Any) -> dict[str, tuple[str, float | None, int | None]]:
    """Tensor name -> (signature name, scale, zero point) for the inputs and outputs of the model's
    default signature (what other engines reading the file need to name and scale its ports)."""
    signatures = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
    if key is None:
        details = interpreter.get_input_details() + interpreter.get_output_details()
        named = [(d["name"], d) for d in details]
    else:
        runner = interpreter.get_signature_runner(key)
        named = list(runner.get_input_details().items()) + list(runner.get_output_details().items())
    specs = {d["name"]: _spec(name, d) for name, d in named}
    return {tensor: (spec.name, spec.scale, spec.zero_point) for tensor, spec in specs.items()}


def _in_graph_order(named: dict[str, Any], graph: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    position = {d["index"]: i for i, d in enumerate(graph)}
    return sorted(named.items(), key=lambda item: position.get(item[1]["index"], len(position)))


class LiteRTRuntime(Runtime):
    backend = "litert"

    def __init__(
        self,
        model: ModelFile,
        *,
        device: str = "cpu",
        threads: int | None = None,
        delegate: str | None = None,
        delegate_options: dict[str, Any] | None = None,
        implementation: str | None = None,
        signature: str | None = None,
        api: str | None = None,
        dispatch_library: str | None = None,
    ) -> None:
        super().__init__()
        self.path = str(model.path)
        impl_name, module = import_interpreter(implementation)
        self.engine = f"{impl_name} {implementation_version(impl_name)}"
        self._compiled = None
        if _wants_compiled_model(api, device, delegate, dispatch_library, impl_name):
            self._compile(device, threads, dispatch_library)
            delegates = []  # the interpreter below only reads the signature and quantization
        else:
            delegates = self._delegates(module, device, delegate, delegate_options)
        try:
            self._interpreter = module.Interpreter(
                model_path=self.path, num_threads=threads, experimental_delegates=delegates or None
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UnsupportedModelError(f"LiteRT cannot load '{self.path}': {_explain(first_line(exc))}") from exc
        self._bind_signature(signature)
        if self._compiled is not None:
            self._bind_buffers()
        self._lock = threading.Lock()
        log.info("loaded %s with %s on %s", self.path, self.engine, self.device)

    # -- ai-edge-litert's CompiledModel: hardware accelerators (NPU via vendor dispatch, GPU) -----------
    def _compile(self, device: str, threads: int | None, dispatch_library: str | None) -> None:
        from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, HardwareAccelerator, Options
        from ai_edge_litert.environment import Environment

        accelerators = {"cpu": HardwareAccelerator.CPU, "gpu": HardwareAccelerator.GPU,
                        "npu": HardwareAccelerator.NPU,
                        "auto": HardwareAccelerator.NPU | HardwareAccelerator.GPU | HardwareAccelerator.CPU}[device]
        try:
            environment = Environment.create(dispatch_library_path=dispatch_library or "")
            options = Options(hardware_accelerators=accelerators, cpu_options=CpuOptions(num_threads=threads or 1))
            self._compiled = CompiledModel.from_file(self.path, environment=environment, options=options)
        except (RuntimeError, ValueError, OSError) as exc:
            if device == "cpu":
                raise UnsupportedModelError(f"LiteRT cannot compile '{self.path}': {first_line(exc)}") from exc
            reason = [line.strip(" └") for line in str(exc).splitlines() if line.strip(" └")][-1:] or ["no details"]
            raise DeviceError(
                f"LiteRT has no usable {device.upper()} accelerator here ({reason[0]}); present: cpu (XNNPACK). "
                f"For an NPU pass dispatch_library='<your vendor's LiteRT dispatch folder>' or delegate='<lib.so>'; "
                "or use device='cpu'"
            ) from exc
        self.device = device if device != "auto" else "auto (LiteRT picks)"
        self.engine += " CompiledModel"

    def _bind_buffers(self) -> None:
        # run the same signature the interpreter was bound to (a model without signatures has one subgraph)
        index = self._compiled.get_signature_index(self._signature_key) if self._signature_key else 0
        self._signature_index = index
        self._in_buffers = self._compiled.create_input_buffers(index)
        self._out_buffers = self._compiled.create_output_buffers(index)
        self._out_layout = [(int(np.prod([d or 1 for d in s.shape])), s.dtype, s.shape) for s in self.outputs]

    def _invoke_compiled(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for index, (array, spec) in enumerate(zip(arrays, self.inputs)):
            if array.shape != self._shapes[index]:
                raise InferenceError(f"input '{spec.name}': the accelerator path runs the model's compiled shape "
                                     f"{list(self._shapes[index])}, got {list(array.shape)}")
        try:
            for buffer, array in zip(self._in_buffers, arrays):
                buffer.write(np.ascontiguousarray(array))
            self._compiled.run_by_index(self._signature_index, self._in_buffers, self._out_buffers)
            return [buffer.read(count, dtype).reshape(tuple(1 if d is None else d for d in shape))
                    for buffer, (count, dtype, shape) in zip(self._out_buffers, self._out_layout)]
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"LiteRT failed to run '{self.path}': {first_line(exc)}") from exc

    def _delegates(self, module: Any, device: str, delegate: str | None, options: dict | None) -> list:
        if delegate is not None:
            try:
                loaded = module.load_delegate(delegate, options or {})
            except (ValueError, OSError, RuntimeError) as exc:
                raise DeviceError(f"cannot load LiteRT delegate '{delegate}': {first_line(exc)}") from exc
            self.device = device if device != "auto" else "delegate"
            return [loaded]
        if device == "cpu":
            self.device = "cpu"
            return []
        present = find_system_delegates()
        wanted = [path for path, kind in present.items() if device in (kind, "auto")]
        if wanted:
            self.device = present[wanted[0]]
            return self._delegates(module, self.device, wanted[0], options)
        if device == "auto":
            log.warning("no LiteRT accelerator delegate found; running on CPU (XNNPACK)")
            self.device = "cpu"
            return []
        listing = ", ".join(f"{p} ({k})" for p, k in present.items()) or "none"
        raise DeviceError(
            f"no LiteRT {device.upper()} delegate on this machine (present: cpu via XNNPACK; delegate libraries: "
            f"{listing}); pass delegate='/path/to/lib.so' for your accelerator, or use device='cpu'"
        )

    def _bind_signature(self, signature: str | None) -> None:
        it = self._interpreter
        signatures = it.get_signature_list()
        if signature is not None and signature not in signatures:
            raise UnsupportedModelError(
                f"'{self.path}' has no signature '{signature}'; it has {sorted(signatures) or 'none'}"
            )
        key = signature or ("serving_default" if "serving_default" in signatures else next(iter(signatures), None))
        self._signature_key = key
        if key is None:  # an old model without signatures: fall back to tensor names
            ins = [(d["name"], d) for d in it.get_input_details()]
            outs = [(d["name"], d) for d in it.get_output_details()]
        else:
            runner = it.get_signature_runner(key)
            if getattr(runner, "_subgraph_index", 0) != 0:
                raise UnsupportedModelError(
                    f"signature '{key}' of '{self.path}' runs in subgraph {runner._subgraph_index}; "
                    "only signatures of the main subgraph are supported"
                )
            # The signature lists names alphabetically; the subgraph keeps the model's own order (forward()'s
            # parameters, the outputs as returned), which the ONNX and OpenVINO forms of the model also keep.
            ins = _in_graph_order(runner.get_input_details(), it.get_input_details())
            outs = _in_graph_order(runner.get_output_details(), it.get_output_details())
        self._input_indices = [d["index"] for _, d in ins]
        self._shapes = [tuple(int(x) for x in d["shape"]) for _, d in ins]
        self._single = len(ins) == 1
        self._output_indices = [d["index"] for _, d in outs]
        self._set_specs(tuple(_spec(n, d) for n, d in ins), tuple(_spec(n, d) for n, d in outs))

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        # A TFLite interpreter is not thread-safe: one run at a time (uncontended, the lock costs ~0.1 us).
        with self._lock:
            return self._invoke_compiled(arrays) if self._compiled is not None else self._invoke_locked(arrays)

    def _invoke_locked(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        it = self._interpreter
        try:
            if self._single:  # the common case, kept to the raw engine calls
                array = arrays[0]
                if array.shape != self._shapes[0]:
                    self._resize(arrays)
                it.set_tensor(self._input_indices[0], array)
            else:
                if any(a.shape != s for a, s in zip(arrays, self._shapes)):
                    self._resize(arrays)
                for index, array in zip(self._input_indices, arrays):
                    it.set_tensor(index, array)
            it.invoke()
            return [it.get_tensor(index) for index in self._output_indices]
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"LiteRT failed to run '{self.path}': {first_line(exc)}") from exc

    def _resize(self, arrays: list[np.ndarray]) -> None:
        # Resizing and re-allocating costs far more than a run: done only when a shape changes.
        self._shapes = [None] * len(arrays)  # stays invalid if the engine refuses the new shapes
        for index, array in zip(self._input_indices, arrays):
            self._interpreter.resize_tensor_input(index, array.shape, strict=True)
        self._interpreter.allocate_tensors()
        self._shapes = [a.shape for a in arrays]

    def _release(self) -> None:
        self._interpreter = None
        if self._compiled is not None:
            self._compiled.close()
            self._compiled = None



def _explain(message: str) -> str:
    """Say what an unresolved custom op means: usually a model compiled for one accelerator."""
    if "unresolved custom op: ethos-u" in message:
        return ("it was compiled for an Arm Ethos-U NPU (custom op 'ethos-u'), which only the NPU runs: on the device "
                "pass delegate='<path to the Ethos-U delegate library>', or load the int8 .tflite it was compiled from")
    if "unresolved custom op" in message:
        return f"{message} This LiteRT build lacks that op: load the model with the delegate it was built for"
    return message


def _wants_compiled_model(api: str | None, device: str, delegate: str | None, dispatch_library: str | None,
                          implementation: str) -> bool:
    """The CompiledModel API is ai-edge-litert's route to GPUs and NPUs (vendor dispatch libraries); the
    Interpreter stays the default on CPU and whenever a delegate library is given."""
    if api not in (None, "interpreter", "compiled"):
        raise UnsupportedModelError(f"unknown LiteRT api '{api}'; choose interpreter or compiled")
    if api == "interpreter" or delegate is not None:
        return False
    wanted = api == "compiled" or dispatch_library is not None or (
        device in ("gpu", "npu") and not any(kind == device for kind in find_system_delegates().values()))
    if wanted and implementation != "ai_edge_litert":
        if api == "compiled" or dispatch_library is not None:
            raise MissingDependencyError("ai-edge-litert (the CompiledModel API for accelerators)", "litert")
        return False  # the legacy runtimes only have delegates: the delegate path reports what is missing
    return wanted
