"""edgekit's error types (defined in the bottom layer, ``edgekit.runtimes.errors``, so every layer can raise them)."""

from edgekit.runtimes.errors import (
    CalibrationError,
    ConversionError,
    DeviceError,
    EdgekitError,
    InferenceError,
    MissingDependencyError,
    UnsupportedModelError,
)

__all__ = [
    "CalibrationError",
    "ConversionError",
    "DeviceError",
    "EdgekitError",
    "InferenceError",
    "MissingDependencyError",
    "UnsupportedModelError",
]
