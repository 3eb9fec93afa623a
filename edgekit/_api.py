"""The device-side entry point: ``edgekit.load``."""

from __future__ import annotations

import os
from typing import Any

from edgekit.runtimes import open_runtime
from edgekit.runtimes.base import Runtime


def load(
    path: str | os.PathLike[str],
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
    """Load a .tflite, .onnx or OpenVINO .xml model for inference.

    The format is recognised from the file's bytes, not its suffix, and the
    file is checked before an engine parses it (truncation, unsafe ONNX
    external data).

    Args:
        path: The model file (for OpenVINO IR the .xml; its .bin must sit beside it).
        backend: ``"litert"``, ``"onnxruntime"`` or ``"openvino"``; default: the format's own engine.
            OpenVINO can also read .onnx and .tflite files.
        device: ``"cpu"``, ``"gpu"``, ``"npu"`` or ``"auto"`` (an accelerator if present, else CPU
            with a logged warning).
        threads: Intra-op threads; default: the engine's choice.
        sha256: Refuse the file unless its sha256 is this (the conversion reports record it).
        check_finite: Refuse float feeds holding NaN or Inf (reads every element: off by default).
        isolated: Let the engine parse the file first in a subprocess with memory and time limits, so a
            native crash on a crafted file becomes an ``UnsupportedModelError`` instead of killing this process.
        precision: The precision float layers execute in: ``"auto"`` (default: the engine's own choice —
            OpenVINO runs bf16 on bf16-capable x86 and f16 on ARM, ONNX Runtime f32, LiteRT f32 unless the model
            allows fp16 arithmetic and the CPU has it), ``"f32"``, ``"bf16"`` or ``"f16"`` (OpenVINO hints;
            on LiteRT ``"f16"`` is XNNPACK's FORCE_FP16). ``Runtime.precision`` says what really runs.
        **engine_options: Passed to the engine: ``delegate``/``delegate_options``/``implementation``/
            ``signature``/``weight_cache`` (LiteRT; ``weight_cache`` is a file where XNNPACK keeps packed
            weights between loads), ``providers``/``session_options`` (ONNX Runtime), ``config`` (OpenVINO).

    Returns:
        A ``Runtime``; use it as a context manager or call ``close()``.

    Raises:
        UnsupportedModelError: The file is missing, unreadable, of an unknown kind, truncated or unsafe.
        MissingDependencyError: The engine is not installed; the message names the pip extra.
        DeviceError: The requested device is not present; the message lists what is.
    """
    return open_runtime(path, backend=backend, device=device, threads=threads, sha256=sha256,
                        check_finite=check_finite, isolated=isolated, precision=precision, **engine_options)
