"""Affine integer quantization, the arithmetic every engine here uses for int8/uint8/int16 tensors:
``real = (q - zero_point) * scale`` and ``q = clip(round_half_to_even(real / scale) + zero_point)``, as TFLite
and ONNX's QuantizeLinear/DequantizeLinear define it. The runtime's feeds and outputs, the profiler's
synthetic inputs and the TFLite sensitivity ranking all go through these two functions."""

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
