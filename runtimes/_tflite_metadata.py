"""A .tflite file's metadata entries (name -> bytes), read from the flatbuffer without an engine or schema module.

The device path has no TensorFlow and may have only tflite-runtime, neither of which exposes the model's
metadata; the runtime needs one entry of it (``reduced_precision_support``: whether XNNPACK may compute in
fp16) to say honestly what precision runs. The file is untrusted: every offset is bounds-checked and a
malformed table yields no metadata rather than an exception.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

# field numbers in TFLite's schema.fbs
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_MAX_VALUE = 1 << 16  # metadata values edgekit reads are short strings; a larger one is not read


class _Malformed(Exception):
    pass


class _Table:
    def __init__(self, data: bytes | mmap.mmap, position: int) -> None:
        self.data, self.position = data, position
        vtable = position - _read(data, "<i", position)
        self.vtable_size = _read(data, "<H", vtable)
        self.vtable = vtable

    def _field(self, number: int) -> int | None:
        slot = 4 + 2 * number
        if slot + 2 > self.vtable_size:
            return None
        offset = _read(self.data, "<H", self.vtable + slot)
        return self.position + offset if offset else None

    def scalar(self, number: int, fmt: str, default: int = 0) -> int:
        at = self._field(number)
        return default if at is None else _read(self.data, fmt, at)

    def _indirect(self, number: int) -> int | None:
        at = self._field(number)
        return None if at is None else at + _read(self.data, "<I", at)

    def tables(self, number: int) -> list[_Table]:
        start = self._indirect(number)
        if start is None:
            return []
        count = _read(self.data, "<I", start)
        if start + 4 + 4 * count > len(self.data):
            raise _Malformed
        return [_Table(self.data, element + _read(self.data, "<I", element))
                for element in range(start + 4, start + 4 + 4 * count, 4)]

    def bytes(self, number: int) -> bytes | None:
        start = self._indirect(number)
        if start is None:
            return None
        length = _read(self.data, "<I", start)
        if length > _MAX_VALUE or start + 4 + length > len(self.data):
            raise _Malformed
        return bytes(self.data[start + 4:start + 4 + length])


def _read(data: bytes | mmap.mmap, fmt: str, at: int) -> int:
    if at < 0 or at + struct.calcsize(fmt) > len(data):
        raise _Malformed
    return struct.unpack_from(fmt, data, at)[0]


def read_metadata(path: str | Path) -> dict[str, bytes]:
    """The model's metadata entries whose values are at most 64 KiB; {} for a file without (or unreadable)."""
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _entries(data)
    except (OSError, ValueError, _Malformed):
        return {}


def _entries(data: mmap.mmap) -> dict[str, bytes]:
    model = _Table(data, _read(data, "<I", 0))
    buffers = model.tables(_MODEL_BUFFERS)
    found = {}
    for entry in model.tables(_MODEL_METADATA):
        name, index = entry.bytes(_METADATA_NAME), entry.scalar(_METADATA_BUFFER, "<I")
        if name is None or index >= len(buffers):
            continue
        value = buffers[index].bytes(_BUFFER_DATA)
        if value is None:  # models over 2 GB keep buffers after the flatbuffer: offset + size in the file
            offset, size = buffers[index].scalar(_BUFFER_OFFSET, "<Q"), buffers[index].scalar(_BUFFER_SIZE, "<Q")
            value = bytes(data[offset:offset + size]) if offset > 1 and size <= _MAX_VALUE else None
        if value is not None:
            found[name.decode("utf-8", "replace")] = value
    return found
