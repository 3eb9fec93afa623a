"""What converters and engines log while edgekit drives them, kept for the report instead of the terminal.

ONNX Runtime's quantizer logs through the root logger ("Please consider to run pre-processing before
quantization", "Axis 1 is out-of-range for weight …" once per LayerNorm); NNCF, TensorFlow and PyTorch log
through their own. The CLI shows only edgekit's own messages unless ``-v``; what the engines said while
converting is kept in the conversion report (``engine_messages``), each distinct message once with its count.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

#: a message longer than this is cut in the report (stack dumps, whole graphs)
MAX_MESSAGE_CHARS = 300


def is_edgekit_record(record: logging.LogRecord) -> bool:
    return record.name == "edgekit" or record.name.startswith("edgekit.")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if is_edgekit_record(record):
            return
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a library's malformed format arguments are its bug, not a crash here
            message = str(record.msg)
        first = next((line for line in message.splitlines() if line.strip()), "")
        self.seen[f"{record.levelname.lower()} {record.name}: {first[:MAX_MESSAGE_CHARS]}"] += 1


@contextmanager
def engine_messages() -> Iterator[list[str]]:
    """Yields a list filled, on exit, with the warnings (and worse) other libraries logged inside the block:
    "warning root: Please consider … (x6)"."""
    collector, said = _Collector(), []
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield said
    finally:
        root.removeHandler(collector)
        said.extend(f"{text} (x{count})" if count > 1 else text for text, count in collector.seen.items())
