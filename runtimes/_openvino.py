"""OpenVINO backend: reads IR (.xml + .bin), ONNX and TFLite files.

One compiled model and one reused infer request per Runtime: creating a
request or going through the per-call dict API costs several times the
overhead budget on small models. Float layers run in the precision OpenVINO
picks by design (bf16 on bf16-capable x86, f16 on ARM: faster, with answers a
little further from the other engines'), reported as ``Runtime.precision``;
``precision="f32"`` (or ``config={"INFERENCE_PRECISION_HINT": ...}``) asks for
another.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from edgekit.runtimes._onnx_proto import io_quantization
from edgekit.runtimes.base import Runtime, TensorSpec
from edgekit.runtimes.errors import DeviceError, InferenceError, UnsupportedModelError
from edgekit.runtimes.formats import ONNX, TFLITE, ModelFile
from edgekit.runtimes.telemetry import keep_engine_telemetry_off

log = logging.getLogger("edgekit.runtimes")

DEVICE_NAMES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
# rt_info key under which edgekit's converters record I/O quantization as "scale,zero_point"
RT_INFO_QUANT = "edgekit_io_quantization"
_core = None
# Inputs up to this size are copied into the request's own tensors (cheaper than a new
# ov.Tensor per call); larger ones are shared zero-copy, where a copy would cost more.
_COPY_LIMIT_BYTES = 64 * 1024


def core() -> Any:
    """One OpenVINO Core per process: creating one costs milliseconds and loads plugins."""
    global _core
    if _core is None:
        keep_engine_telemetry_off()
        import openvino as ov

        _core = ov.Core()
    return _core


def choose_device(device: str, available: list[str]) -> str:
    """Map edgekit's device vocabulary to an OpenVINO device name."""
    kinds = ("npu", "gpu") if device == "auto" else (device,)
    for kind in kinds:
        name = DEVICE_NAMES[kind]
        match = next((d for d in available if d.split(".")[0] == name), None)
        if match:
            return match
    if device == "auto":
        log.warning("no OpenVINO GPU or NPU device found; running on CPU")
        return "CPU"
    raise DeviceError(
        f"OpenVINO has no {device.upper()} device on this machine (present: {', '.join(available) or 'none'}); "
        "install the device's driver or use device='cpu'"
    )


def _rt_info_quantization(model: Any) -> dict[str, tuple[float, int]]:
    found = {}
    for port in list(model.inputs) + list(model.outputs):
        name = port.get_any_name()
        if model.has_rt_info([RT_INFO_QUANT, name]):
            scale, zero_point = str(model.get_rt_info([RT_INFO_QUANT, name])).split(",")
            found[name] = (float(scale), int(zero_point))
    return found


def _port_names(ports: Any, wanted: list[str]) -> list[str]:
    """Each port's name as the model file says it. OpenVINO may name a port after an inner tensor (an
    ONNX function's expansion); the ONNX graph's own input/output names are what users and the other
    engines use."""
    names = []
    for index, port in enumerate(ports):
        known = port.get_names()
        match = next((name for name in wanted if name in known), None)
        if match is None and len(ports) == len(wanted):
            match = wanted[index]
        names.append(match or port.get_any_name())
    return names


def _tflite_signature(path: str, inputs: Any, outputs: Any) -> tuple[list[str], list[str], dict]:
    """Names and I/O quantization of a .tflite read by OpenVINO, from its signature. OpenVINO names the ports
    after inner tensors ('serving_default_x:0', 'StatefulPartitionedCall:0') and drops the I/O scales; a
    LiteRT interpreter, when one is installed, reads what the file says (parsing only, nothing runs)."""
    from edgekit.runtimes._litert import signature_io
    from edgekit.runtimes.errors import MissingDependencyError
    from edgekit.runtimes.litert_interpreter import import_interpreter

    try:
        _, module = import_interpreter()
        by_tensor = signature_io(module.Interpreter(model_path=path))
    except (MissingDependencyError, ValueError, RuntimeError):
        by_tensor = {}

    def names(ports: Any) -> list[str]:
        found = []
        for port in ports:
            match = next((by_tensor[n][0] for n in port.get_names() if n in by_tensor), None)
            found.append(match or port.get_any_name())
        return found

    quant = {name: (scale, zero_point) for name, scale, zero_point in by_tensor.values() if scale is not None}
    return names(inputs), names(outputs), quant


def _numpy_dtype(element_type: Any) -> np.dtype:
    if element_type.get_type_name() == "bf16":  # OpenVINO hands bf16 to numpy as float16 bits
        try:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            return np.dtype(np.object_)
    if element_type.get_type_name() == "string":
        return np.dtype(np.str_)
    return np.dtype(element_type.to_dtype())


def _spec(port: Any, name: str, quant: dict[str, tuple[float, int]]) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    dtype = _numpy_dtype(port.get_element_type())
    scale, zero_point = quant.get(name, (None, None)) if dtype.kind in "iu" else (None, None)
    return TensorSpec(name, shape, dtype, scale, zero_point)


def _shareable(array: np.ndarray) -> bool:
    """Memory OpenVINO can read in place: C-ordered, aligned, writeable (ov.Tensor refuses read-only
    memory), of plain numeric type. Anything else is copied into the request's own tensor."""
    flags = array.flags
    return flags.c_contiguous and flags.aligned and flags.writeable and array.dtype.kind in "fiub"


def _execution_precision(compiled: Any) -> str:
    """What float layers really run in (a hint the device cannot honour falls back: f16 becomes bf16 on x86)."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except (RuntimeError, AttributeError, TypeError):  # devices without the property report nothing to show
        return "unknown"


def engine_message(exc: BaseException) -> str:
    """OpenVINO puts a stack of 'Exception from <file>' and 'Check ... failed' lines first and the reason last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    reason = (useful or lines or [type(exc).__name__])[-1]
    if "bad_alloc" in reason:
        return f"out of memory ({reason}): the model declares tensors larger than this machine's memory"
    return reason


class OpenVINORuntime(Runtime):
    backend = "openvino"

    def __init__(
        self,
        model: ModelFile,
        *,
        device: str = "cpu",
        threads: int | None = None,
        config: dict[str, Any] | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__()
        keep_engine_telemetry_off()
        import openvino as ov

        self.path = str(model.path)
        self.engine = f"openvino {ov.get_version().split('-')[0]}"
        ov_core = core()
        device_name = choose_device(device, ov_core.available_devices)
        self.device = device_name.split(".")[0].lower()
        properties: dict[str, Any] = {}
        if precision not in (None, "auto"):
            properties["INFERENCE_PRECISION_HINT"] = precision
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = threads
        properties.update(config or {})
        self._device_name, self._properties = device_name, dict(properties)
        try:
            weights = str(model.weights_path) if model.weights_path else ""
            ov_model = ov_core.read_model(self.path, weights) if weights else ov_core.read_model(self.path)
            self._model = ov_model
            self._compiled = ov_core.compile_model(ov_model, device_name, properties)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise UnsupportedModelError(f"OpenVINO cannot load '{self.path}': {engine_message(exc)}") from exc
        self.precision = _execution_precision(self._compiled)
        inputs, outputs = self._compiled.inputs, self._compiled.outputs
        if model.format == TFLITE:
            input_names, output_names, quant = _tflite_signature(self.path, inputs, outputs)
        else:
            onnx_summary = model.onnx if model.format == ONNX else None
            quant = io_quantization(onnx_summary) if onnx_summary else _rt_info_quantization(ov_model)
            input_names = _port_names(inputs, [n for n, _ in onnx_summary.inputs] if onnx_summary else [])
            output_names = _port_names(outputs, [n for n, _ in onnx_summary.outputs] if onnx_summary else [])
        self._set_specs(tuple(_spec(p, n, quant) for p, n in zip(inputs, input_names)),
                        tuple(_spec(p, n, quant) for p, n in zip(outputs, output_names)))
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self._tensor, self._shape = ov.Tensor, ov.Shape
        self._element_types = [p.get_element_type() for p in inputs]
        # per input: the request's own tensor and a numpy view of its memory (None until first needed)
        self._own: list[tuple[Any, np.ndarray] | None] = [None] * len(self.inputs)
        self._own_bound = [False] * len(self.inputs)
        self._string_outputs = [p.get_element_type().get_type_name() == "string" for p in outputs]
        self._output_dtypes = [s.dtype if s.dtype.kind == "V" else None for s in self.outputs]
        self._output_range = range(len(self.outputs))
        log.info("loaded %s with %s on %s", self.path, self.engine, device_name)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        # One reused infer request and its input buffers: one run at a time.
        with self._lock:
            return self._invoke_locked(arrays)

    def _invoke_locked(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        request = self._request
        try:
            for index, array in enumerate(arrays):
                if array.nbytes > _COPY_LIMIT_BYTES and _shareable(array):
                    # Large inputs are read in place (a copy would cost more than the call); OpenVINO never
                    # writes into an input tensor.
                    request.set_input_tensor(index, self._tensor(array, shared_memory=True))
                    self._own_bound[index] = False
                else:
                    self._copy_in(request, index, array)
            request.infer()
            return [self._output(request, i) for i in self._output_range]
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InferenceError(f"OpenVINO failed to run '{self.path}': {engine_message(exc)}") from exc

    def _copy_in(self, request: Any, index: int, array: np.ndarray) -> None:
        """Copy into the request's own input tensor (made once per shape): any layout, read-only memory,
        broadcast views, 0-d scalars and empty tensors alike; the caller's array is only read."""
        if array.dtype.kind in "OSU":  # string tensors have no numpy view to copy into
            request.set_input_tensor(index, self._tensor(np.asarray(array, dtype=np.str_)))
            self._own_bound[index] = False
            return
        own = self._own[index]
        if own is None or own[1].shape != array.shape:
            tensor = self._tensor(self._element_types[index], self._shape(list(array.shape)))
            own = self._own[index] = (tensor, tensor.data)
            self._own_bound[index] = False
        if not self._own_bound[index]:
            request.set_input_tensor(index, own[0])
            self._own_bound[index] = True
        buffer = own[1]
        if buffer.dtype != array.dtype and buffer.dtype.itemsize == array.dtype.itemsize:
            array = array.view(buffer.dtype)  # bf16 travels as float16 bits in OpenVINO's numpy view
        np.copyto(buffer, array, casting="same_kind")

    def _output(self, request: Any, index: int) -> np.ndarray:
        tensor = request.get_output_tensor(index)
        if self._string_outputs[index]:
            return np.asarray(tensor.str_data, dtype=np.str_).reshape(tuple(tensor.shape))
        data = tensor.data.copy()  # copy: the request's output buffers are overwritten by the next call
        dtype = self._output_dtypes[index]
        return data.view(dtype) if dtype is not None else data

    def profile_ops(self, feeds: Any, *, runs: int, raw: bool = False) -> list[dict[str, Any]]:
        """OpenVINO's performance counters, from a second compiled model with PERF_COUNT on."""
        arrays = self._prepare(feeds, raw)
        compiled = core().compile_model(self._model, self._device_name, {**self._properties, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        inputs = {i: a for i, a in enumerate(arrays)}
        request.infer(inputs)  # warm-up
        totals: dict[str, list[Any]] = {}
        for _ in range(runs):
            request.infer(inputs)
            for info in request.get_profiling_info():
                if str(info.status).endswith("NOT_RUN"):
                    continue
                entry = totals.setdefault(info.node_name, [info.node_type, 0.0, 0])
                entry[1] += info.real_time.total_seconds() * 1e3
                entry[2] += 1
        return [{"name": name, "type": kind, "total_ms": total / runs, "count": max(1, count // runs)}
                for name, (kind, total, count) in totals.items()]

    def run_concurrently(self, feeds: Any, *, requests: int, min_runs: int, min_seconds: float,
                         max_seconds: float, raw: bool = False) -> tuple[list[float], float]:
        """Throughput mode: ``requests`` asynchronous infer requests in flight (AsyncInferQueue).
        Returns each request's latency (ms) and the wall time (s)."""
        import time

        import openvino as ov

        inputs = {i: a for i, a in enumerate(self._prepare(feeds, raw))}
        queue = ov.AsyncInferQueue(self._compiled, requests)
        latencies: list[float] = []
        queue.set_callback(lambda _request, started: latencies.append((time.perf_counter() - started) * 1e3))
        start = time.perf_counter()
        submitted = 0
        while True:
            queue.start_async(inputs, time.perf_counter())
            submitted += 1
            elapsed = time.perf_counter() - start
            if (submitted >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
                break
        queue.wait_all()
        return latencies, time.perf_counter() - start

    def _release(self) -> None:
        self._request = None
        self._compiled = None
        self._model = None
