"""LiteRT (TFLite) backend: ai-edge-litert, else tflite-runtime, else tensorflow.lite.

Runs through tensor indices taken from the model's signature (set_tensor /
invoke / get_tensor): the fastest idiomatic path, with the signature's names.
XNNPACK is the default CPU delegate of all three implementations; the thread
count is passed when the interpreter is built because XNNPACK ignores a later
change. XNNPACK's own options (fp16 arithmetic forced on fp32 layers, a packed
weight cache file) exist only in ai-edge-litert's CompiledModel API, which runs
the model when they are asked for.
"""

from __future__ import annotations

import ctypes.util
import gc
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes._native_log import last_error_logged, native_log_captured, silence_native_log_at_exit
from edgekit.runtimes._tflite_metadata import read_metadata
from edgekit.runtimes.audit import audit_model
from edgekit.runtimes.base import Runtime, TensorSpec
from edgekit.runtimes.cpu import has_fp16_arithmetic
from edgekit.runtimes.errors import (
    DeviceError,
    InferenceError,
    MissingDependencyError,
    UnsupportedModelError,
    first_line,
    spelled,
)
from edgekit.runtimes.formats import ModelFile
from edgekit.runtimes.litert_interpreter import implementation_version, import_interpreter

log = logging.getLogger("edgekit.runtimes")

# Well-known delegate libraries a device may have installed system-wide.
KNOWN_DELEGATES = {"edgetpu": "npu", "vx_delegate": "npu", "ethosu_delegate": "npu",
                   "tensorflowlite_gpu_delegate": "gpu"}
# XNNPACK delegate flags (xnnpack_delegate.h): its defaults (signed and unsigned int8 kernels) and fp16 forced
XNNPACK_DEFAULT_FLAGS, XNNPACK_FORCE_FP16 = 0x1 | 0x2, 0x4
#: the metadata entry by which a model allows XNNPACK fp16 arithmetic (what converters write for tflite-fp16)
FP16_ARITHMETIC_MARK = ("reduced_precision_support", b"fp16accfp16")


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
        precision: str | None = None,
        weight_cache: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.path = str(model.path)
        impl_name, module = import_interpreter(implementation)
        self.engine = f"{impl_name} {implementation_version(impl_name)}"
        self._compiled = None
        xnnpack = _xnnpack_options(precision, weight_cache)
        compiled = _wants_compiled_model(api, device, delegate, dispatch_library, impl_name, xnnpack)
        on_gpu = compiled and device == "gpu"  # LiteRT's own GPU accelerator (a delegate library says nothing)
        if on_gpu:
            self.precision = _gpu_precision(precision)
            xnnpack.pop("xnnpack_flags", None)  # XNNPACK's fp16 is the CPU's; the GPU has its own precision
        else:
            self.precision = self._float_precision(precision, model)
        if compiled:
            self._compile(device, threads, dispatch_library, xnnpack, gpu_f32=on_gpu and self.precision == "f32")
            delegates = []  # the interpreter below only reads the signature and quantization
        else:
            delegates = self._delegates(module, device, delegate, delegate_options)
        try:
            with native_log_captured("LiteRT"):  # "INFO: Created TensorFlow Lite XNNPACK delegate" and the like
                self._interpreter = module.Interpreter(
                    model_path=self.path, num_threads=threads, experimental_delegates=delegates or None
                )
                if self._compiled is None:  # (allocating would make XNNPACK pack every weight a second time)
                    self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UnsupportedModelError(f"LiteRT cannot load '{self.path}': {_explain(first_line(exc))}") from exc
        self._bind_signature(signature)
        if self._compiled is not None:
            self._bind_buffers()
        self._lock = threading.Lock()
        log.info("loaded %s with %s on %s", self.path, self.engine, self.device)

    def _float_precision(self, asked: str | None, model: ModelFile) -> str:
        """What XNNPACK computes float layers in: fp16 when forced, or when the model allows it (its
        fp16accfp16 mark) on an arm64 CPU with fp16 arithmetic; fp32 otherwise."""
        if asked not in (None, "auto", "f32", "f16"):
            raise UnsupportedModelError(f"LiteRT runs float layers in f32 or f16 (XNNPACK), not '{asked}'; "
                                        "bf16 is an OpenVINO hint: load with backend='openvino'")
        if asked == "f16":
            with native_log_captured("LiteRT"):  # its interpreter logs too (cpuinfo's complaints, where it has any)
                audit = audit_model(model)
            if audit.compute_ops and not audit.float_ops:  # forcing fp16 would run, change nothing, say "f16"
                raise UnsupportedModelError(
                    f"precision 'f16' changes nothing in '{self.path}': every compute op is integer "
                    f"({audit.describe_share()}); XNNPACK's fp16 applies to float layers: load it without precision")
        key, value = FP16_ARITHMETIC_MARK
        marked = read_metadata(self.path).get(key) == value and has_fp16_arithmetic()
        if asked == "f32" and marked:
            raise UnsupportedModelError(
                f"'{self.path}' allows fp16 arithmetic ({key}: {value.decode()}), which XNNPACK uses on this CPU "
                "and no option turns off: load its tflite-fp32 form, or convert with "
                f"{spelled('--no-fp16-arithmetic', 'fp16_arithmetic=False')}")
        return "f16" if asked == "f16" or marked else "f32"

    # -- ai-edge-litert's CompiledModel: hardware accelerators (NPU via vendor dispatch, GPU), XNNPACK options --
    def _compile(self, device: str, threads: int | None, dispatch_library: str | None,
                 xnnpack: dict[str, Any], gpu_f32: bool = False) -> None:
        from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, GpuOptions, HardwareAccelerator, Options
        from ai_edge_litert.environment import Environment

        accelerators = {"cpu": HardwareAccelerator.CPU, "gpu": HardwareAccelerator.GPU,
                        "npu": HardwareAccelerator.NPU,
                        "auto": HardwareAccelerator.NPU | HardwareAccelerator.GPU | HardwareAccelerator.CPU}[device]
        engine_said: list[str] = []
        silence_native_log_at_exit()  # the environment made below logs its teardown at exit
        try:
            # LiteRT logs every accelerator and vendor plugin it probes to fd 2 and has no Python switch for it
            with native_log_captured("LiteRT") as engine_said:
                environment = Environment.create(dispatch_library_path=dispatch_library or "")
                try:
                    options = Options(hardware_accelerators=accelerators,
                                      cpu_options=CpuOptions(num_threads=threads or 1, **xnnpack),
                                      gpu_options=GpuOptions(enforce_f32=True) if gpu_f32 else None)
                    self._compiled = CompiledModel.from_file(self.path, environment=environment, options=options)
                except BaseException:
                    environment.close()  # it logs its teardown: here, inside the capture
                    raise
            self._environment = environment  # closed with the model, inside the capture (it logs as it goes)
        except (RuntimeError, ValueError, OSError) as exc:
            if device == "cpu":
                # the exception names only a source line; the reason is the last error LiteRT logged
                reason = ([line for line in engine_said if line.lower().startswith("error")] or [first_line(exc)])[-1]
                if reason.startswith("ERROR: [") and reason.endswith("]"):  # a bare source location
                    reason = last_error_logged("LiteRT") or reason  # (cpuinfo says why once per process)
                raise UnsupportedModelError(f"LiteRT cannot compile '{self.path}': {reason}") from exc
            raise DeviceError(_accelerator_unusable(device, exc, engine_said)) from exc
        self.device = device if device != "auto" else "auto (LiteRT picks)"
        self.engine += " CompiledModel"

    def _bind_buffers(self) -> None:
        # run the same signature the interpreter was bound to (a model without signatures has one subgraph)
        index = self._compiled.get_signature_index(self._signature_key) if self._signature_key else 0
        self._signature_index = index
        key = list(self._compiled.get_signature_list())[index]
        self._compiled_key = key
        # the compiled model lists a signature's ports in its own order; edgekit's ports keep the graph's
        compiled_inputs = list(self._compiled.get_input_tensor_details(key))
        self._input_order = [compiled_inputs.index(spec.name) if spec.name in compiled_inputs else position
                             for position, spec in enumerate(self.inputs)]
        self._make_buffers()
        # LiteRT makes (and logs) a process-wide environment on the first buffer write: do it now, captured
        with native_log_captured("LiteRT"):
            for buffer, shape, spec in zip(self._in_buffers, self._shapes, self.inputs):
                buffer.write(np.zeros(shape, spec.dtype))

    def _make_buffers(self) -> None:
        index = self._signature_index
        self._in_buffers = self._compiled.create_input_buffers(index)
        self._in_buffers = [self._in_buffers[position] for position in self._input_order]
        self._out_buffers = self._compiled.create_output_buffers(index)
        details = self._compiled.get_output_tensor_details(self._compiled_key)
        outputs = list(details.values())
        self._out_layout = [(int(np.prod(shape)), spec.dtype, tuple(shape)) for spec, shape in
                            zip(self.outputs, (details.get(s.name, outputs[i])["shape"]
                                               for i, s in enumerate(self.outputs)))]
        order = list(details)
        self._out_order = [order.index(s.name) if s.name in order else i for i, s in enumerate(self.outputs)]

    def _invoke_compiled(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            if any(array.shape != shape for array, shape in zip(arrays, self._shapes)):
                self._resize_compiled(arrays)
            for buffer, array in zip(self._in_buffers, arrays):
                buffer.write(np.ascontiguousarray(array))
            run_inputs = [None] * len(self._in_buffers)
            for buffer, position in zip(self._in_buffers, self._input_order):
                run_inputs[position] = buffer
            self._compiled.run_by_index(self._signature_index, run_inputs, self._out_buffers)
            return [self._out_buffers[position].read(count, dtype).reshape(shape)
                    for position, (count, dtype, shape) in zip(self._out_order, self._out_layout)]
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"LiteRT failed to run '{self.path}': {first_line(exc)}") from exc

    def _resize_compiled(self, arrays: list[np.ndarray]) -> None:
        # like the interpreter: a new shape (a batch) resizes the model's dynamic dimensions, once per change
        self._shapes = [None] * len(arrays)  # stays invalid if the engine refuses the new shapes
        for array, position in zip(arrays, self._input_order):  # (Runtime.run checked them against the specs)
            self._compiled.resize_input_tensor(position, list(array.shape), self._signature_index)
        self._make_buffers()
        self._shapes = [a.shape for a in arrays]

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
            with native_log_captured("LiteRT"):
                self._compiled.close()
                self._compiled = self._in_buffers = self._out_buffers = None  # buffers hold the environment too
                self._environment.close()
                gc.collect()  # the capsules' destructors run now, while the capture is on



def _explain(message: str) -> str:
    """Say what an unresolved custom op means: usually a model compiled for one accelerator."""
    if "unresolved custom op: ethos-u" in message:
        return ("it was compiled for an Arm Ethos-U NPU (custom op 'ethos-u'), which only the NPU runs: on the device "
                "pass delegate='<path to the Ethos-U delegate library>', or load the int8 .tflite it was compiled from")
    if "unresolved custom op" in message:
        return f"{message} This LiteRT build lacks that op: load the model with the delegate it was built for"
    return message


def _gpu_precision(asked: str | None) -> str:
    """What LiteRT's GPU accelerator computes float layers in: fp16 by default (its outputs then differ from the
    CPU's by fp16 rounding: 0.42 % of the largest logit on a digits MobileNet), f32 when asked, through the
    accelerator's own ``enforce_f32`` option."""
    if asked not in (None, "auto", "f32", "f16"):
        raise UnsupportedModelError(f"LiteRT's GPU accelerator runs float layers in f16 (its default) or f32, not "
                                    f"'{asked}'")
    return "f32" if asked == "f32" else "f16"


def _xnnpack_options(precision: str | None, weight_cache: str | os.PathLike[str] | None) -> dict[str, Any]:
    """CpuOptions fields for XNNPACK's own options; {} keeps the engine's defaults (and the Interpreter)."""
    options: dict[str, Any] = {}
    if precision == "f16":
        options["xnnpack_flags"] = XNNPACK_DEFAULT_FLAGS | XNNPACK_FORCE_FP16
    if weight_cache is not None:
        cache = Path(weight_cache)
        if cache.is_dir() or not cache.parent.is_dir():
            raise UnsupportedModelError(f"weight_cache must be a file path in an existing folder, got '{cache}' "
                                        "(XNNPACK writes the packed weights there on the first load)")
        options["xnnpack_weight_cache_path"] = str(cache)
    return options


def _wants_compiled_model(api: str | None, device: str, delegate: str | None, dispatch_library: str | None,
                          implementation: str, xnnpack: dict[str, Any] | None = None) -> bool:
    """The CompiledModel API is ai-edge-litert's route to GPUs and NPUs (vendor dispatch libraries) and to
    XNNPACK's own options; the Interpreter stays the default on CPU and whenever a delegate library is given."""
    if api not in (None, "interpreter", "compiled"):
        raise UnsupportedModelError(f"unknown LiteRT api '{api}'; choose interpreter or compiled")
    if xnnpack:
        if api == "interpreter" or delegate is not None:
            raise UnsupportedModelError("precision='f16' and weight_cache are XNNPACK options of LiteRT's "
                                        "CompiledModel API; drop api='interpreter' / delegate= to use them")
        if implementation != "ai_edge_litert":
            raise MissingDependencyError("ai-edge-litert (XNNPACK's fp16 and weight-cache options)", "litert")
        return True
    if api == "interpreter" or delegate is not None:
        return False
    wanted = api == "compiled" or dispatch_library is not None or (
        device in ("gpu", "npu") and not any(kind == device for kind in find_system_delegates().values()))
    if wanted and implementation != "ai_edge_litert":
        if api == "compiled" or dispatch_library is not None:
            raise MissingDependencyError("ai-edge-litert (the CompiledModel API for accelerators)", "litert")
        return False  # the legacy runtimes only have delegates: the delegate path reports what is missing
    return wanted


#: what LiteRT's GPU accelerator logs when it cannot start, and what fixes it (its exception names only a source
#: line: "ERROR: [litert/runtime/compiled_model.cc:1036]")
_GPU_CAUSES = (
    (("libvulkan", "couldn't load vulkan"), "the Vulkan loader (libvulkan.so.1) is missing",
     "install it (Debian/Ubuntu: apt-get install libvulkan1) and the GPU's Vulkan driver (NVIDIA's driver ships "
     "one; Mesa's for AMD and Intel)"),
    (("no adapters found", "no adapter"), "no GPU adapter is visible to Vulkan/WebGPU",
     "install the GPU's driver, or pass the GPU into the container"),
    (("libopencl", "opencl library"), "no OpenCL library could be loaded", "install the GPU's OpenCL driver (ICD)"),
)


def _accelerator_unusable(device: str, exc: BaseException, engine_said: list[str]) -> str:
    """Why the asked accelerator cannot start, from what LiteRT logged while it tried, and what to do."""
    said = [line.strip(" └") for line in engine_said if line.strip(" └")]
    raised = [line.strip(" └") for line in str(exc).splitlines() if line.strip(" └")]
    if device in ("gpu", "auto"):
        text = "\n".join(said + raised).lower()
        for needles, cause, fix in _GPU_CAUSES:  # in table order: without the Vulkan loader no adapter is found
            if any(needle in text for needle in needles):
                return (f"LiteRT has no usable GPU accelerator here: {cause}; present: cpu (XNNPACK). To use the "
                        f"GPU, {fix}; or use device='cpu'")
    reason = ([line for line in said if line.lower().startswith("error")] or raised or ["no details"])[-1]
    advice = ("For an NPU pass dispatch_library='<your vendor's LiteRT dispatch folder>' or delegate='<lib.so>'"
              if device == "npu" else "LiteRT's GPU accelerator needs a Vulkan (Linux) or OpenCL driver for the GPU")
    return f"LiteRT has no usable {device.upper()} accelerator here ({reason}); present: cpu (XNNPACK). {advice}; " \
           "or use device='cpu'"
