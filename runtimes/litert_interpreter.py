"""Which LiteRT interpreter this machine has, imported on first use: ai-edge-litert, else the legacy
tflite-runtime, else TensorFlow's own; and the installed version of a distribution, as reports name it.

Its own module because the backend (``_litert``), the audit, the sparsity reader and the TFLite converters all
read .tflite files through it, and the backend itself uses the audit.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.runtimes.errors import MissingDependencyError, UnsupportedModelError

IMPLEMENTATIONS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite.python.interpreter"),
)


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
