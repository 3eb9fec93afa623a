"""Affine integer quantization, the arithmetic every engine here uses for int8/uint8/int16 tensors:
``real = (q - zero_point) * scale`` and ``q = clip(round_half_to_even(real / scale) + zero_point)``, as TFLite
and ONNX's QuantizeLinear/DequantizeLinear define it. The runtime's feeds and outputs, the profiler's
synthetic inputs and the TFLite sensitivity ranking all go through ``Quantizer``/``quantize`` and
``dequantize``; ``sqnr_db`` is the figure validation and the sensitivity rankings judge quantization noise by."""

from __future__ import annotations

import numpy as np


class Quantizer:
    """Float values as ``dtype`` integers (rounded half to even, clipped to the type's range), with the
    parameters worked out once: the runtime quantizes every float feed of an integer model with one of these,
    on a path where a model may run in microseconds."""

    __slots__ = ("_inverse_scale", "_low", "_high", "_zero_point", "_dtype")

    def __init__(self, scale: float, zero_point: int, dtype: np.dtype) -> None:
        info = np.iinfo(dtype)
        self._inverse_scale = np.float32(1.0 / scale)
        # clipped before the zero point is added, so the float32 sum cannot leave the integer type's range
        self._low, self._high = info.min - zero_point, info.max - zero_point
        self._zero_point = np.float32(zero_point) if zero_point else None
        self._dtype = np.dtype(dtype)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        q = np.multiply(values, self._inverse_scale, dtype=np.float32)
        np.rint(q, out=q)
        np.clip(q, self._low, self._high, out=q)
        if self._zero_point is not None:
            q += self._zero_point
        return q.astype(self._dtype)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float values as ``dtype`` integers, once (``Quantizer`` for many calls with the same parameters)."""
    return Quantizer(scale, zero_point, dtype)(values)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer values as the float32 reals they stand for."""
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """Signal-to-quantization-noise ratio in dB from the two powers (sums of squares): ``inf`` for no noise,
    ``-inf`` for no signal (float16 exports show 60+, good int8 20-40, a collapse < 10)."""
    if noise_power == 0:
        return float("inf")
    return float(10 * np.log10(signal_power / noise_power)) if signal_power else float("-inf")
