"""Keep TensorFlow's native log noise off the user's terminal unless they asked for it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgekit.runtimes.errors import MissingDependencyError

log = logging.getLogger("edgekit")


def verbose() -> bool:
    return logging.getLogger("edgekit").getEffectiveLevel() <= logging.INFO


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (TensorFlow's C++ and MLIR logs ignore
    Python's logging and TF_CPP_MIN_LOG_LEVEL). A no-op when logging is verbose."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    # Python-level writes (progress bars drawn from inside a calibration generator) keep going to
    # the real terminal through a duplicate of the original descriptor. It stays open for the
    # process's life: logging handlers created meanwhile (absl's, on import) hold on to it.
    sys.stderr = _terminal(python_stderr)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


_terminal_stream = None


def _terminal(like: Any):
    global _terminal_stream
    if _terminal_stream is None:
        _terminal_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(like, "encoding", None) or "utf-8")
    return _terminal_stream


def import_tensorflow() -> Any:
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with native_stderr_silenced():
            import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError("TensorFlow (needed to convert Keras and SavedModel sources)", "convert") from exc
    tf.get_logger().setLevel(logging.ERROR)
    return tf
