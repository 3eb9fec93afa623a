"""The one error family of edgekit.

It lives in the bottom layer (``edgekit.runtimes``) because every layer raises it and
arrows only point down; ``edgekit.errors`` re-exports it for users. Messages
say what went wrong, with which value, and what to do.
"""

from __future__ import annotations

from contextvars import ContextVar

#: True while the ``edgekit`` command runs: messages then name options as its flags (``--calib PATH``), and
#: as ``edgekit.convert``'s keywords (``calibration=PATH``) for a Python caller
COMMAND_LINE: ContextVar[bool] = ContextVar("edgekit_command_line", default=False)


def spelled(flag: str, keyword: str | None = None) -> str:
    """An option in its reader's words: ``flag`` (``"--calib-size"``, ``"--calib PATH"``) on the command line,
    ``keyword`` from Python — by default the flag's name as a keyword (``calib_size``)."""
    if COMMAND_LINE.get():
        return flag
    return keyword if keyword is not None else flag.split()[0].removeprefix("--").replace("-", "_")


def input_shape_option(name: str, dims: str) -> str:
    """How to fix an input's shape, in the reader's words (``dims`` as ``1,3,224,224``)."""
    return spelled(f"--input-shape {name}:{dims}", f"input_shapes={{'{name}': ({dims.replace(',', ', ')})}}")


def calibration_advice() -> str:
    """What a target that calibrates says when no data was given."""
    return spelled("pass --calib PATH (or --calib random)", "pass calibration=PATH (or calibration='random')")


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose."""


class MissingDependencyError(EdgekitError, ImportError):
    """An optional engine or tool is not installed; the message names the pip extra."""

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} is not installed; install it with: pip install 'edgekit[{extra}]'"
                         + _userland_hint())


def _userland_hint() -> str:
    """On a 32-bit ARM Python the install would fail too: say so, and what to do instead."""
    import platform
    import struct

    if struct.calcsize("P") == 4 and platform.machine().lower().startswith(("arm", "aarch64")):
        return (" -- but this Python is 32-bit ARM, for which no engine publishes wheels: install 64-bit "
                "Raspberry Pi OS")
    return ""


class UnsupportedModelError(EdgekitError):
    """The model file is missing, malformed, unsafe, or of a kind edgekit cannot handle."""


class DeviceError(EdgekitError):
    """The requested device or accelerator is not available; the message lists what is."""


class CalibrationError(EdgekitError):
    """The calibration data cannot be used for this model."""


class ConversionError(EdgekitError):
    """A converter failed to produce the requested artifact."""


class InferenceError(EdgekitError, ValueError):
    """A run failed: bad feeds, or the engine refused them."""


def first_line(exc: BaseException) -> str:
    """An engine exception's first line: engines put the useful part there and a stack dump after."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
