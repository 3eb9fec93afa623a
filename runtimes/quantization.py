"""Affine integer quantization, the arithmetic every engine here uses for int8/uint8/int16 tensors:
``real = (q - zero_point) * scale`` and ``q = clip(round_half_to_even(real / scale) + zero_point)``, as TFLite
and ONNX's QuantizeLinear/DequantizeLinear define it. The runtime's feeds and outputs, the profiler's
synthetic inputs and the TFLite sensitivity ranking all go through these two functions; ``sqnr_db`` is the
figure validation and the sensitivity rankings judge quantization noise by."""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float values as ``dtype`` integers (rounded half to even, clipped to the type's range)."""
    info = np.iinfo(dtype)
    q = np.multiply(values, np.float32(1.0 / scale), dtype=np.float32)
    np.rint(q, out=q)
    # clipped before the zero point is added, so the float32 sum cannot leave the integer type's range
    np.clip(q, info.min - zero_point, info.max - zero_point, out=q)
    if zero_point:
        q += np.float32(zero_point)
    return q.astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer values as the float32 reals they stand for."""
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """Signal-to-quantization-noise ratio in dB from the two powers (sums of squares): ``inf`` for no noise,
    ``-inf`` for no signal (float16 exports show 60+, good int8 20-40, a collapse < 10)."""
    if noise_power == 0:
        return float("inf")
    return float(10 * np.log10(signal_power / noise_power)) if signal_power else float("-inf")
