"""ONNX Runtime backend.

``device=`` picks an execution provider class (GPU/NPU providers first, the CPU
provider last as ORT's own fallback for unsupported nodes); ``providers=`` and
``session_options=`` pass straight through for everything else.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import numpy as np
from edgekit.runtimes import GRAPH_OPTIMIZATIONS
from edgekit.runtimes._native_log import native_log_captured
from edgekit.runtimes._onnx_proto import io_quantization
from edgekit.runtimes._qnn import EP_NAME as QNN_PROVIDER
from edgekit.runtimes._qnn import context_info, describe_context, describe_htp, htp_session_options, simulated
from edgekit.runtimes.base import Runtime, TensorSpec
from edgekit.runtimes.errors import DeviceError, InferenceError, UnsupportedModelError, first_line
from edgekit.runtimes.formats import ModelFile

log = logging.getLogger("edgekit.runtimes")

PROVIDERS_BY_DEVICE = {
    "gpu": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
            "MIGraphXExecutionProvider", "DmlExecutionProvider", "WebGpuExecutionProvider",
            "CoreMLExecutionProvider"),
    "npu": ("QNNExecutionProvider", "VitisAIExecutionProvider", "NnapiExecutionProvider",
            "RknpuExecutionProvider", "CANNExecutionProvider"),
}
# ORT type strings -> numpy dtypes
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32, "tensor(uint32)": np.uint32, "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}


def choose_providers(device: str, available: list[str]) -> tuple[list[str], str]:
    """Map edgekit's device vocabulary to an ORT provider list; return (providers, device used)."""
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if simulated():  # once registered, the QNN plugin is listed; on x86-64 it is Qualcomm's simulator, no NPU
        available = [p for p in available if p != QNN_PROVIDER]
    kinds = ("npu", "gpu") if device == "auto" else (device,)
    for kind in kinds:
        for provider in PROVIDERS_BY_DEVICE[kind]:
            if provider in available:
                return [provider, "CPUExecutionProvider"], kind
    if device == "auto":
        log.warning("no GPU/NPU execution provider in this onnxruntime build; running on CPU")
        return ["CPUExecutionProvider"], "cpu"
    raise DeviceError(
        f"no {device.upper()} execution provider in this onnxruntime build (present: {', '.join(available)}); "
        f"install an onnxruntime build with one of {', '.join(PROVIDERS_BY_DEVICE[device])}, or use device='cpu'"
    )


def engine_errors() -> tuple[type[BaseException], ...]:
    """The exception types ORT raises, translated at this boundary only."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError, ValueError)


_CONTAINERS = {"seq": "sequence", "optional": "optional", "map": "map"}


def _spec(arg: Any, quant: dict[str, tuple[float, int]]) -> TensorSpec:
    container = _CONTAINERS.get(arg.type.split("(", 1)[0])
    if container:  # seq(tensor(float)), optional(...), map(...): ORT takes lists, None and dicts as given
        element = arg.type[arg.type.index("(") + 1 : -1]
        return TensorSpec(arg.name, (), np.dtype(_ORT_TYPES.get(element, np.object_)), kind=container)
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    dtype = np.dtype(_ORT_TYPES.get(arg.type, np.object_))
    scale, zero_point = quant.get(arg.name, (None, None)) if dtype.kind in "iu" else (None, None)
    return TensorSpec(arg.name, shape, dtype, scale, zero_point)


#: ``graph_optimization=`` names -> ONNX Runtime's levels ("all" is its default)
GRAPH_OPTIMIZATION_LEVELS = dict(zip(GRAPH_OPTIMIZATIONS, ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED",
                                                              "ORT_ENABLE_ALL")))


def _optimization_level(ort: Any, name: str) -> Any:
    if name not in GRAPH_OPTIMIZATION_LEVELS:
        raise DeviceError(f"graph_optimization '{name}' is not an ONNX Runtime level; choose from "
                          f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
    return getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[name])


class OrtRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(
        self,
        model: ModelFile,
        *,
        device: str = "cpu",
        threads: int | None = None,
        providers: list[Any] | None = None,
        session_options: Any = None,
        graph_optimization: str | None = None,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = str(model.path)
        self.engine = f"onnxruntime {ort.__version__}"
        self._errors = engine_errors()
        options = session_options or ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        if graph_optimization is not None:
            options.graph_optimization_level = _optimization_level(ort, graph_optimization)
        self._threads = threads
        self.qnn = context_info(model.onnx)
        if self.qnn is not None:  # a compiled QNN context: only the HTP (or its simulator) can run it
            self._check_qnn(device)
            with native_log_captured("QNN", stdout_too=True):  # Qualcomm's libraries print as they load
                options = htp_session_options(ort, self.qnn["htp_arch"], options)
            providers, self.device = None, "npu"
            self.precision = "fixed-point (HTP)"  # the context binary holds no float layers
            self.compiled_for = describe_context(self.qnn)
            self.simulated = describe_htp(self.qnn["htp_arch"]) if simulated() else None
        elif providers is None:
            providers, self.device = choose_providers(device, ort.get_available_providers())
        else:
            self.device = device
        try:
            # the QNN provider and Qualcomm's libraries log every session to fd 2 (kept for -v)
            with native_log_captured("QNN", stdout_too=True) if self.qnn else nullcontext():
                self._session = ort.InferenceSession(self.path, sess_options=options, providers=providers)
        except self._errors as exc:
            raise UnsupportedModelError(f"ONNX Runtime cannot load '{self.path}': {first_line(exc)}") from exc
        self.providers = tuple(self._session.get_providers())
        quant = io_quantization(model.onnx) if model.onnx else {}
        self._set_specs(
            tuple(_spec(a, quant) for a in self._session.get_inputs()),
            tuple(_spec(a, quant) for a in self._session.get_outputs()),
        )
        self._output_names = [s.name for s in self.outputs]
        log.info("loaded %s with %s on %s", self.path, self.providers, self.device)

    def _check_qnn(self, device: str) -> None:
        chip = describe_context(self.qnn)
        if device == "gpu":
            raise DeviceError(f"'{self.path}' is compiled for the {chip}: it runs on that NPU (or its "
                              "simulator), not a GPU; load it with device='npu'")
        if device == "cpu":
            log.info("'%s' is compiled for the %s: running it there, not on the CPU", self.path, chip)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, dict(zip(self._input_names, arrays)))
        except self._errors as exc:
            raise InferenceError(f"ONNX Runtime failed to run '{self.path}': {first_line(exc)}") from exc

    def profile_ops(self, feeds: Any, *, runs: int, raw: bool = False) -> list[dict[str, Any]]:
        """ONNX Runtime's session profiler, in a second session so the timed one stays unprofiled."""
        arrays = dict(zip(self._input_names, self._prepare(feeds, raw)))
        return profile_nodes(self.path, arrays, runs=runs, threads=self._threads, providers=list(self.providers))

    def _release(self) -> None:
        self._session = None


def profile_nodes(path: Any, feeds: dict[str, Any], *, runs: int, threads: int | None = None,
                  providers: list[Any] | None = None, optimized_model: Any = None,
                  budget_s: float | None = None) -> list[dict[str, Any]]:
    """Per-node ms per run from ONNX Runtime's session profiler, after a warm-up run: ``runs`` runs, or fewer
    (at least 3) where that many would take longer than ``budget_s``. ``optimized_model`` is where to save the
    graph ORT ran: its node names are the profile's."""
    import json
    import tempfile
    import time
    from pathlib import Path

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        if optimized_model is not None:
            options.optimized_model_filepath = str(optimized_model)
            options.log_severity_level = 3  # saving an NCHWc graph warns that it is CPU-specific: only read here
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        started = time.perf_counter()
        session.run(None, feeds)  # the warm-up run, dropped below
        if budget_s is not None:
            runs = max(3, min(runs, int(budget_s / max(time.perf_counter() - started, 1e-6))))
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    return _aggregate_node_events(events, runs)


def _aggregate_node_events(events: list[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Sum ORT's per-node kernel events ('<node>_kernel_time', microseconds), skipping the warm-up run."""
    per_node: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        per_node.setdefault(node, []).append(float(event.get("dur", 0)))
        types[node] = event.get("args", {}).get("op_name", "")
    rows = []
    for node, durations in per_node.items():
        executions = durations[len(durations) // (runs + 1):]  # drop the warm-up run's share
        rows.append({"name": node, "type": types[node], "total_ms": sum(executions) / 1e3 / runs,
                     "count": len(executions) // runs or 1})
    return rows
