"""Model files are untrusted input: every bad file is a typed, actionable error, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tiny
from edgekit.runtimes import Backend

import edgekit
from edgekit import MissingDependencyError, UnsupportedModelError

pytestmark = [pytest.mark.litert, pytest.mark.onnxruntime, pytest.mark.openvino]


def test_format_comes_from_content_not_suffix(copy_to, tflite_fp32, onnx_fp32):
    disguised_tflite = copy_to(tflite_fp32, "model.onnx")
    disguised_onnx = copy_to(onnx_fp32, "model.tflite")
    with edgekit.load(disguised_tflite) as a, edgekit.load(disguised_onnx) as b:
        assert (a.backend, b.backend) == ("litert", "onnxruntime")


def test_ir_loads_from_its_bin_too(ir_fp32):
    with edgekit.load(ir_fp32.with_suffix(".bin")) as rt:
        assert rt.backend == "openvino" and rt.outputs[0].name == "output"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "missing.tflite", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "empty.onnx", b""), "is empty"),
        (lambda d: _write(d / "text.tflite", b"hello world, not a model"), "OpenVINO IR, RKNN or IMX500 model"),
        (lambda d: _write(d / "page.xml", b"<html><body>no</body></html>"), "OpenVINO IR, RKNN or IMX500 model"),
    ],
    ids=["missing", "folder", "empty", "text", "html"],
)
def test_unusable_paths_are_typed_errors(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(UnsupportedModelError, match=fragment) as info:
        edgekit.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".xml", ".bin"])
def test_random_bytes_never_crash(tmp_path, suffix):
    rng = np.random.default_rng(len(suffix))
    for i in range(25):
        path = _write(tmp_path / f"r{i}{suffix}", rng.integers(0, 256, 64 + 97 * i, dtype=np.uint8).tobytes())
        with pytest.raises(UnsupportedModelError):
            edgekit.load(path)


@pytest.mark.parametrize("fixture", ["tflite_fp32", "tflite_int8", "onnx_fp32"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files_are_refused(tmp_path, request, fixture, keep):
    source = request.getfixturevalue(fixture)
    data = source.read_bytes()
    path = _write(tmp_path / source.name, data[: int(len(data) * keep)])
    with pytest.raises(UnsupportedModelError):
        edgekit.load(path)


def test_truncated_ir_weights_are_refused(copy_to, ir_fp32):
    xml = copy_to(ir_fp32, "model.xml")
    weights = xml.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnsupportedModelError, match=r"truncated: the .xml needs \d+ bytes, the .bin has 100"):
        edgekit.load(xml)


def test_ir_without_its_bin_is_refused(copy_to, ir_fp32):
    xml = copy_to(ir_fp32, "model.xml")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(UnsupportedModelError, match="needs its weights file 'model.bin', which is missing"):
        edgekit.load(xml)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_external_data_beside_the_model_loads(tmp_path, backend):
    x = tiny.sample_inputs(2)
    with edgekit.load(tiny.save_with_external_data(tmp_path), backend=backend, precision="f32") as rt:
        np.testing.assert_allclose(rt.run(x)["output"], tiny.reference_output(x), atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("../weights.bin", "leaves the model's folder"),
        ("/etc/passwd", "not a relative path"),
        ("*/_ORT_MEM_ADDR_/*", "names a memory address"),
        ("link.bin", "link leading out"),
        ("hard.bin", "hard link"),
        ("absent.bin", "which is missing"),
    ],
)
def test_unsafe_external_data_is_refused_before_the_engine_sees_it(tmp_path, backend, location, fragment):
    folder = tmp_path / "model"
    folder.mkdir()
    path = tiny.save_with_external_data(folder, location)
    outside = tmp_path / "secret.bin"
    outside.write_bytes((folder / "weights.bin").read_bytes())
    os.symlink(outside, folder / "link.bin")
    os.link(outside, folder / "hard.bin")
    with pytest.raises(UnsupportedModelError, match=fragment):
        edgekit.load(path, backend=backend)


def test_backend_that_cannot_read_the_format_says_which_can(onnx_fp32):
    with pytest.raises(UnsupportedModelError, match="litert backend cannot read onnx.*use onnxruntime or openvino"):
        edgekit.load(onnx_fp32, backend="litert")
    with pytest.raises(UnsupportedModelError, match="unknown backend 'tensorrt'"):
        edgekit.load(onnx_fp32, backend="tensorrt")


def test_missing_engine_names_the_pip_extra():
    absent = Backend("fancy", "edgekit.runtimes._nope:Nope", ("no_such_engine_module",), "fancy-extra", ("onnx",))
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekit\[fancy-extra\]'"):
        absent.runtime_class()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_interrupt_mid_parse_stays_an_interrupt(tmp_path):
    """Ctrl-C while a model file's map is being read: the user's KeyboardInterrupt, not mmap's BufferError
    ("cannot close exported pointers exist") from the slice its traceback still holds."""
    from edgekit.runtimes.formats import _mapped

    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 64)

    def parse(view):
        header = memoryview(view)[:8]  # noqa: F841 - alive in this frame when the interrupt comes
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with _mapped(path) as view:
            parse(view)
