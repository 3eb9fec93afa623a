"""edgekit: put trained neural networks on edge devices.

``import edgekit`` is cheap: numpy and every engine are imported only when a
model is loaded. The device path (``load``, ``Runtime``) never imports
TensorFlow, NNCF or the converters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.errors import (
    CalibrationError,
    ConversionError,
    DeviceError,
    EdgekitError,
    InferenceError,
    MissingDependencyError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ConversionJob",
    "ConversionResult",
    "DeviceError",
    "EdgekitError",
    "InferenceError",
    "MissingDependencyError",
    "OptimizeResult",
    "ProfileReport",
    "Recipe",
    "Runtime",
    "TensorSpec",
    "UnsupportedModelError",
    "__version__",
    "build_dataset",
    "convert",
    "inspect_model",
    "load",
    "load_image",
    "optimize",
    "prepare",
    "preprocess_frame",
    "profile",
]

# name -> module that defines it; resolved on first access (PEP 562)
_LAZY = {
    "load": "edgekit._api",
    "Runtime": "edgekit.runtimes.base",
    "TensorSpec": "edgekit.runtimes.base",
    "inspect_model": "edgekit.inspection",
    "convert": "edgekit.pipeline.conversion",
    "prepare": "edgekit.pipeline.job",
    "ConversionJob": "edgekit.pipeline.job",
    "ConversionResult": "edgekit.pipeline.conversion",
    "Recipe": "edgekit.pipeline.preprocess",
    "load_image": "edgekit.pipeline.preprocess",
    "preprocess_frame": "edgekit.pipeline.preprocess",
    "build_dataset": "edgekit.pipeline.calibration",
    "profile": "edgekit.profiling.profiler",
    "ProfileReport": "edgekit.profiling.profiler",
    "optimize": "edgekit.optimizing.study",
    "OptimizeResult": "edgekit.optimizing.result",
}

if TYPE_CHECKING:
    from edgekit._api import load
    from edgekit.inspection import inspect_model
    from edgekit.optimizing.result import OptimizeResult
    from edgekit.optimizing.study import optimize
    from edgekit.pipeline.calibration import build_dataset
    from edgekit.pipeline.conversion import ConversionResult, convert
    from edgekit.pipeline.job import ConversionJob, prepare
    from edgekit.pipeline.preprocess import Recipe, load_image, preprocess_frame
    from edgekit.profiling.profiler import ProfileReport, profile
    from edgekit.runtimes.base import Runtime, TensorSpec


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")
