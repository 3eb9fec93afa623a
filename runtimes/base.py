"""The Runtime interface every engine backend implements, and the feed rules they share.

A backend only has to say what its tensors are (``TensorSpec``) and how to run
already-checked arrays (``_invoke``). Checking names, ranks, shapes and dtypes,
quantizing float feeds for integer inputs and dequantizing integer outputs is
done once, here, so the three engines behave the same.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from edgekit.runtimes.errors import InferenceError
from edgekit.runtimes.quantization import Quantizer, dequantize

_INTEGER_KINDS = "iub"
_MISSING = object()


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model.

    Attributes:
        name: The name from the model's signature (the same in every form of a model).
        shape: Dimensions; ``None`` marks a dynamic one.
        dtype: The numpy dtype the engine takes or gives.
        scale: Quantization scale of an integer tensor, else ``None``.
        zero_point: Quantization zero point of an integer tensor, else ``None``.
        kind: ``"tensor"``, or for ONNX models ``"sequence"``, ``"optional"`` or ``"map"`` (a list, a
            value-or-None or a dict is passed to the engine as given; ``dtype`` is then the element type).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    scale: float | None = None
    zero_point: int | None = None
    kind: str = "tensor"

    @property
    def quantized(self) -> bool:
        """True when float values map onto this integer tensor by scale and zero point."""
        return self.scale is not None and self.dtype.kind in "iu"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["dtype"] = self.dtype.name
        return data


def _describe(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class _FeedPlan:
    """Precomputed checks for one input, so a run costs a few attribute reads per feed."""

    __slots__ = ("spec", "name", "rank", "fixed_dims", "dtype", "quantize", "passthrough", "_quantizer")

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        # Values edgekit has no rules for (ONNX sequences/optionals/maps, element types numpy cannot name)
        # go to the engine as given: it accepts or refuses them itself.
        self.passthrough = spec.kind != "tensor"
        self.name = spec.name
        self.rank = len(spec.shape)
        self.fixed_dims = tuple((i, d) for i, d in enumerate(spec.shape) if d is not None)
        self.dtype = spec.dtype
        self.quantize = spec.quantized
        self._quantizer = Quantizer(spec.scale, spec.zero_point, spec.dtype) if self.quantize else None

    def prepare(self, value: Any, raw: bool) -> np.ndarray:
        if self.passthrough:
            return value
        array = value if type(value) is np.ndarray else np.asarray(value)
        shape = array.shape
        if len(shape) != self.rank:
            raise InferenceError(
                f"input '{self.name}' expects rank {self.rank} {_describe(self.spec.shape)}, "
                f"got rank {array.ndim} {list(shape)}; reshape the array"
            )
        for axis, size in self.fixed_dims:
            if shape[axis] != size:
                raise InferenceError(
                    f"input '{self.name}' expects shape {_describe(self.spec.shape)}, got {list(shape)} "
                    f"(dimension {axis} must be {size})"
                )
        # An empty tensor (a zero-size batch, reduce axes []) is a valid value: every engine takes it.
        if array.dtype == self.dtype:
            return array
        return self._convert(array, raw)

    def _convert(self, array: np.ndarray, raw: bool) -> np.ndarray:
        name, expected, given = self.spec.name, self.dtype, array.dtype
        if expected.kind in "OV" or (expected.kind in "SU" and given.kind in "OSU"):
            return array  # strings and element types numpy has no name for: the engine judges them
        if given.kind == "f" and self.quantize and not raw:  # float data for an integer model: its own parameters
            return self._quantizer(array)
        if expected.kind == "f" and given.kind == "f":
            return array.astype(expected)
        if expected.kind in _INTEGER_KINDS and given.kind in _INTEGER_KINDS and expected.kind != "b":
            if given.kind != "b" and np.can_cast(given, expected, casting="same_kind"):
                return array.astype(expected)
        hint = ""
        if expected.kind == "f" and given.kind in "iu":
            hint = "; convert and normalise it first (e.g. x.astype(np.float32) / 255) or use a preprocessing recipe"
        elif self.quantize and raw:
            hint = f"; with raw=True pass {expected.name} data, or drop raw=True to have float data quantized"
        raise InferenceError(f"input '{name}' expects {expected.name}, got {given.name}{hint}")


def time_by_op_type(ops: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Milliseconds per inference summed by op type over ``Runtime.profile_ops`` rows."""
    by_type: Counter[str] = Counter()
    for op in ops:
        by_type[op["type"]] += op["total_ms"]
    return by_type


class Runtime(abc.ABC):
    """A loaded model, ready to run. Use as a context manager or call ``close()``.

    Subclasses set ``backend``, ``device``, ``inputs`` and ``outputs`` and
    implement ``_invoke`` and ``_release``.
    """

    backend: str = ""
    #: The concrete engine used, e.g. ``ai_edge_litert 2.3.0``.
    engine: str = ""
    device: str = "cpu"
    #: The precision float layers really execute in: "f32" on ONNX Runtime; on LiteRT "f32", or "f16" when forced
    #: or when the model allows fp16 arithmetic on an arm64 CPU that has it; OpenVINO's own choice (bf16 on
    #: bf16-capable x86, f16 on ARM) unless ``precision=`` asked for another.
    precision: str = "f32"
    path: str = ""
    #: Set when the device is a vendor's simulator (its outputs are the device's, its timings are not): what
    #: ran, e.g. "Qualcomm HTP v68 simulator (...)"; None on real hardware.
    simulated: str | None = None
    #: The accelerator a compiled artifact was built for (e.g. "Qualcomm HTP v75 (sm8650), QNN SDK v2.51.0");
    #: None for a model any engine's CPU path can run.
    compiled_for: str | None = None
    #: Refuse NaN/Inf in float feeds (off by default: the check reads every element).
    check_finite: bool = False
    #: The checked file this runtime was loaded from (set by ``open_runtime``).
    model_file: Any = None

    def __init__(self) -> None:
        self._closed = False
        self._plans: tuple[_FeedPlan, ...] = ()
        self._dequantize: tuple[tuple[float, int] | None, ...] = ()

    # -- what subclasses provide -------------------------------------------------
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @abc.abstractmethod
    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run the engine on arrays ordered as ``inputs``; return arrays ordered as ``outputs``."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free engine resources. Called once."""

    # -- shared behaviour ---------------------------------------------------------
    def _set_specs(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.inputs, self.outputs = inputs, outputs
        self._plans = tuple(_FeedPlan(spec) for spec in inputs)
        self._input_names = tuple(spec.name for spec in inputs)
        self._output_names = tuple(spec.name for spec in outputs)
        self._dequantize = tuple((spec.scale, spec.zero_point) if spec.quantized else None for spec in outputs)
        self._any_dequantize = any(d is not None for d in self._dequantize)

    def run(self, feeds: Mapping[str, Any] | np.ndarray | Any, *, raw: bool = False) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feeds: A dict ``{input_name: array}``, or one array for a single-input model.
            raw: Pass integer tensors through untouched: no quantization of feeds,
                no dequantization of outputs.

        Returns:
            ``{output_name: array}`` in the model's output order.

        Raises:
            InferenceError: A feed is missing, unknown, or of the wrong rank, shape or dtype,
                or the engine failed.
        """
        # This is the hot path: every line costs on a model that runs in microseconds.
        if self._closed:
            raise InferenceError(f"runtime for '{self.path}' is closed; load the model again")
        if self.check_finite:  # before quantization, which would turn NaN into an arbitrary integer
            self._require_finite(feeds)
        results = self._invoke(self._prepare(feeds, raw))
        if raw or not self._any_dequantize:
            return dict(zip(self._output_names, results))
        out: dict[str, np.ndarray] = {}
        for name, deq, value in zip(self._output_names, self._dequantize, results):
            if deq is not None:
                value = dequantize(value, *deq)
            out[name] = value
        return out

    def _prepare(self, feeds: Any, raw: bool) -> list[np.ndarray]:
        plans = self._plans
        if type(feeds) is dict or isinstance(feeds, Mapping):
            if len(feeds) == len(plans):
                arrays = []
                for plan in plans:
                    value = feeds.get(plan.name, _MISSING)
                    if value is _MISSING:
                        break
                    arrays.append(plan.prepare(value, raw))
                else:
                    return arrays
            raise self._name_error(feeds)
        if len(plans) != 1:
            raise InferenceError(f"this model has {len(plans)} inputs {list(self._input_names)}; pass a dict by name")
        return [plans[0].prepare(feeds, raw)]

    def _require_finite(self, feeds: Any) -> None:
        named = feeds.items() if isinstance(feeds, Mapping) else [(self._input_names[0], feeds)]
        for name, value in named:
            array = np.asarray(value)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                raise InferenceError(f"input '{name}' holds {bad} NaN/Inf value(s); clean the data "
                                     "(check_finite=True is on)")

    def _name_error(self, feeds: Mapping[str, Any]) -> InferenceError:
        unknown = sorted(str(k) for k in set(feeds) - set(self._input_names))
        missing = [n for n in self._input_names if n not in feeds]
        parts = [f"unknown input(s) {unknown}"] if unknown else []
        parts += [f"missing input(s) {missing}"] if missing else []
        return InferenceError(f"{'; '.join(parts)}; the model's inputs are {list(self._input_names)}")

    def profile_ops(self, feeds: Mapping[str, Any], *, runs: int, raw: bool = False) -> list[dict[str, Any]] | None:
        """Per-op time, mean per inference over ``runs`` runs: ``[{name, type, total_ms, count}]``;
        ``None`` when the engine exposes no per-op timings (the profiler then says so)."""
        return None

    def close(self) -> None:
        """Release the engine. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.inputs)
        return f"<{type(self).__name__} {self.path!r} backend={self.backend} device={self.device} inputs=[{names}]>"
