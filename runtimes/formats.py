"""Recognise a model file by its content and check it before an engine sees it.

Engines are native code and model files are untrusted, so every cheap check
that turns a would-be crash or a cryptic engine message into a typed,
actionable ``UnsupportedModelError`` happens here: missing or empty files,
wrong suffixes, truncated flatbuffers and weight files, and ONNX external data
that points outside the model's folder.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.runtimes._onnx_proto import OnnxSummary, read_onnx
from edgekit.runtimes.errors import UnsupportedModelError

TFLITE, ONNX, OPENVINO, RKNN, IMX500 = "tflite", "onnx", "openvino", "rknn", "imx500"
_TFLITE_IDENTIFIER = b"TFL3"
_RKNN_MAGIC, _RKNN_HEADER = b"RKNN", 64  # rknn-toolkit2's files: magic, then the model data's length at 16
_ZIP_MAGIC = b"PK\x03\x04"  # an IMX500 package (imxconv-pt's packerOut.zip) is a zip archive
_IMX500_MEMBERS = ("manifest.json", "dnnParams.xml")
_XML_HEAD_BYTES = 4096


@dataclass(frozen=True)
class ModelFile:
    """A model file whose format is known and whose structure passed the safety checks."""

    path: Path
    format: str
    weights_path: Path | None = None  # the .bin of an OpenVINO IR
    onnx: OnnxSummary | None = None  # what the safety walk read from an ONNX file

    @property
    def size_bytes(self) -> int:
        size = self.path.stat().st_size
        return size + (self.weights_path.stat().st_size if self.weights_path else 0)

    def sha256(self) -> str:
        """sha256 of the model (for an IR: of the .xml followed by the .bin)."""
        digest = hashlib.sha256()
        for part in (self.path, self.weights_path):
            if part is not None:
                hash_into(digest, part)
        return digest.hexdigest()


def hash_into(digest: Any, path: Path) -> None:
    """Feed a file to a hashlib digest in 1 MiB blocks (models can be gigabytes)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def hash_feeds(digest: Any, feeds: dict[str, Any]) -> None:
    """Feed one sample's arrays to a hashlib digest, by input name in sorted order."""
    import numpy as np

    for name in sorted(feeds):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(feeds[name]).tobytes())


@contextmanager
def _mapped(path: Path):
    with open(path, "rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield view
        finally:
            try:
                view.close()
            except BufferError:
                # an exception raised while a slice of the map was alive (a Ctrl-C mid-parse) still holds it in
                # its traceback: closing now would replace that exception with this one; the map is released
                # with the traceback instead
                pass


def _sniff(path: Path, head: bytes) -> str | None:
    if len(head) >= 8 and head[4:8] == _TFLITE_IDENTIFIER:
        return TFLITE
    if head.startswith(_RKNN_MAGIC):
        return RKNN
    if head.startswith(_ZIP_MAGIC):
        return IMX500
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return OPENVINO if b"<net" in head else None
    # An ONNX ModelProto starts with a field tag of one of its known fields.
    if head and head[0] in (0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42):
        return ONNX
    return None


def open_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Identify ``path`` by its bytes and validate it.

    Raises:
        UnsupportedModelError: Missing, empty, unknown, truncated or unsafe file.
    """
    path = Path(path)
    if not path.exists():
        raise UnsupportedModelError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise UnsupportedModelError(
            f"'{path}' is a folder; pass the model file itself (.tflite, .onnx or OpenVINO .xml)"
        )
    if path.suffix.lower() == ".bin" and path.with_suffix(".xml").exists():
        path = path.with_suffix(".xml")  # the weights half of an IR: load the pair
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_XML_HEAD_BYTES)
    except OSError as exc:
        raise UnsupportedModelError(f"cannot read model file '{path}': {exc.strerror}") from exc
    if size == 0:
        raise UnsupportedModelError(f"model file '{path}' is empty")
    kind = _sniff(path, head)
    if kind is None:
        raise UnsupportedModelError(
            f"'{path}' is not a TFLite, ONNX, OpenVINO IR, RKNN or IMX500 model (unrecognised content); "
            "edgekit loads .tflite, .onnx, OpenVINO .xml+.bin and Rockchip .rknn files, and reads IMX500 packages"
        )
    if kind == TFLITE:
        _check_tflite(path, head, size)
        return ModelFile(path, TFLITE)
    if kind == ONNX:
        return ModelFile(path, ONNX, onnx=check_onnx(path))
    if kind == RKNN:
        _check_rknn(path, head, size)
        return ModelFile(path, RKNN)
    if kind == IMX500:
        imx500_manifest(path)
        return ModelFile(path, IMX500)
    return ModelFile(path, OPENVINO, _check_openvino(path))


def _check_rknn(path: Path, head: bytes, size: int) -> None:
    """A Rockchip .rknn: its header declares how many bytes of model data follow; fewer is a truncated file."""
    declared = int.from_bytes(head[16:24], "little") if len(head) >= 24 else None
    if size < _RKNN_HEADER or declared is None or size < _RKNN_HEADER + declared:
        raise UnsupportedModelError(f"'{path}' is a truncated .rknn file ({size} bytes"
                                    + (f", its header declares {declared} bytes of model data)" if declared else ")"))


def imx500_manifest(path: Path) -> dict[str, Any]:
    """An IMX500 package's manifest (imxconv-pt's packerOut.zip: the sensor's network and its dnnParams.xml);
    any other zip archive, or a damaged one, is refused."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            manifest = members.get(_IMX500_MEMBERS[0])
            if any(name not in members for name in _IMX500_MEMBERS) or manifest.file_size > 1 << 20:
                raise UnsupportedModelError(f"'{path}' is a zip archive, not an IMX500 package (imxconv-pt's "
                                            f"packerOut.zip holds {' and '.join(_IMX500_MEMBERS)})")
            described = json.loads(archive.read(manifest))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UnsupportedModelError(f"'{path}' is a damaged zip archive ({exc})") from exc
    if not isinstance(described, dict) or str(described.get("Target", "")).upper() != "IMX500":
        raise UnsupportedModelError(f"'{path}' is a packer archive for another target than the IMX500")
    return described


def imx500_tensors(path: Path) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """An IMX500 package's input and output tensors as its dnnParams.xml declares them (the sensor's 8-bit
    tensors: shape in the declared order, dtype by signedness, scale; zero point 0)."""
    import xml.etree.ElementTree as ElementTree
    import zipfile

    import numpy as np
    from edgekit.runtimes.base import TensorSpec

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(_IMX500_MEMBERS[1])
        if info.file_size > 4 << 20:
            raise UnsupportedModelError(f"'{path}': its dnnParams.xml is {info.file_size} bytes, too large to be one")
        try:
            root = ElementTree.fromstring(archive.read(info))
        except ElementTree.ParseError as exc:
            raise UnsupportedModelError(f"'{path}': its dnnParams.xml does not parse ({exc})") from exc

    def specs(kind: str) -> tuple[Any, ...]:
        return tuple(TensorSpec(t.get("name", "?"), tuple(int(d.get("size", 0)) for d in t.iter("dimension")),
                                np.dtype(np.uint8 if t.get("format") == "unsigned" else np.int8),
                                float(t.get("scale", "nan")), 0) for t in root.iter(kind))

    return specs("inputTensor"), specs("outputTensor")


def _check_tflite(path: Path, head: bytes, size: int) -> None:
    root_offset = int.from_bytes(head[0:4], "little")
    if size < 16 or root_offset >= size:
        raise UnsupportedModelError(f"'{path}' is a truncated TFLite file ({size} bytes)")


def check_onnx(path: Path) -> OnnxSummary:
    """Parse an ONNX file's structure and refuse unsafe external data."""
    with _mapped(path) as view:
        summary = read_onnx(view, str(path))
    folder = path.resolve().parent
    for location in summary.external_locations:
        _check_external_location(path, folder, location)
    return summary


def _check_external_location(model: Path, folder: Path, location: str) -> None:
    def refuse(why: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"'{model}' refers to external data '{location}' {why}; refusing to load it "
            "(external data must be a plain file beside the model)"
        )

    if "_ORT_MEM_ADDR_" in location:
        raise refuse("that names a memory address, not a file")
    if not location or os.path.isabs(location) or re.match(r"^[A-Za-z]:", location) or "\\" in location:
        raise refuse("that is not a relative path")
    if ".." in Path(location).parts:
        raise refuse("that leaves the model's folder")
    target = folder / location
    if target.is_symlink() or not target.resolve().is_relative_to(folder):
        raise refuse("that is a link leading out of the model's folder")
    if not target.is_file():
        raise UnsupportedModelError(
            f"'{model}' needs its external data file '{location}', which is missing; copy it beside the model"
        )
    if target.stat().st_nlink > 1:
        raise refuse("that is a hard link")


def _check_openvino(xml_path: Path) -> Path | None:
    bin_path = xml_path.with_suffix(".bin")
    text = xml_path.read_bytes()
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise UnsupportedModelError(f"'{xml_path}' declares XML entities; OpenVINO IR never does, refusing it")
    if not bin_path.is_file():
        if b'element_type' in text and b'type="Const"' in text:
            raise UnsupportedModelError(
                f"OpenVINO model '{xml_path}' needs its weights file '{bin_path.name}', which is missing; "
                "copy the .bin beside the .xml"
            )
        return None  # a weightless IR is legal
    needed = max((int(o) + int(s) for o, s in _CONST_EXTENT.findall(text)), default=0)
    have = bin_path.stat().st_size
    if needed > have:
        raise UnsupportedModelError(
            f"OpenVINO weights '{bin_path}' are truncated: the .xml needs {needed} bytes, the .bin has {have}; "
            "re-copy or re-convert the model"
        )
    if needed < have:
        # OpenVINO writes weights back to back: a longer .bin belongs to another model.
        raise UnsupportedModelError(
            f"'{bin_path.name}' ({have} bytes) is not the pair of '{xml_path.name}', which describes {needed} bytes "
            "of weights; copy the .xml and .bin that were converted together"
        )
    return bin_path


# offset="N" ... size="M" inside a Const layer's <data> element (attribute order as OpenVINO writes it)
_CONST_EXTENT = re.compile(rb'<data[^>]*?\boffset="(\d+)"[^>]*?\bsize="(\d+)"')
