"""One contract, every engine: the same tiny model in each form must look and behave the same."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tiny

import edgekit
from edgekit import DeviceError, InferenceError, TensorSpec

FORMS = [
    pytest.param(("tflite_fp32", "litert"), marks=pytest.mark.litert, id="litert"),
    pytest.param(("onnx_fp32", "onnxruntime"), marks=pytest.mark.onnxruntime, id="onnxruntime"),
    pytest.param(("ir_fp32", "openvino"), marks=pytest.mark.openvino, id="openvino-ir"),
    pytest.param(("onnx_fp32", "openvino"), marks=pytest.mark.openvino, id="openvino-onnx"),
]


@pytest.fixture(params=FORMS)
def runtime(request):
    fixture, backend = request.param
    path = request.getfixturevalue(fixture)
    # the suite compares engines with the float reference: OpenVINO at f32, not its bf16 default on this CPU
    with edgekit.load(path, backend=backend, precision="f32") as rt:
        yield rt


def test_names_shapes_and_dtypes_agree(runtime):
    assert runtime.inputs == (TensorSpec("input", (None, tiny.FEATURES), np.dtype("float32")),)
    assert runtime.outputs == (TensorSpec("output", (None, tiny.CLASSES), np.dtype("float32")),)


@pytest.mark.parametrize("batch", [1, 3, 8, 1])
def test_outputs_match_the_float_reference(runtime, batch):
    x = tiny.sample_inputs(batch, seed=batch)
    result = runtime.run({"input": x})
    assert list(result) == ["output"]
    out = result["output"]
    assert out.shape == (batch, tiny.CLASSES) and out.dtype == np.float32
    np.testing.assert_allclose(out, tiny.reference_output(x), atol=1e-5)


def test_single_array_and_dict_feeds_agree(runtime):
    x = tiny.sample_inputs(2)
    np.testing.assert_array_equal(runtime.run(x)["output"], runtime.run({"input": x})["output"])


def test_float64_feed_is_cast_like_numpy(runtime):
    x = tiny.sample_inputs(2)
    np.testing.assert_allclose(runtime.run(x.astype(np.float64))["output"], runtime.run(x)["output"], atol=1e-7)


def test_outputs_are_not_overwritten_by_the_next_call(runtime):
    first = runtime.run(tiny.sample_inputs(1, seed=1))["output"]
    kept = first.copy()
    runtime.run(tiny.sample_inputs(1, seed=2))
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize(
    ("feeds", "fragments"),
    [
        ({"inptu": np.zeros((1, 16), np.float32)}, ["unknown input(s) ['inptu']", "['input']"]),
        ({}, ["missing input(s) ['input']"]),
        (np.zeros((16,), np.float32), ["'input'", "rank 2", "got rank 1"]),
        (np.zeros((1, 15), np.float32), ["'input'", "[?, 16]", "[1, 15]", "dimension 1 must be 16"]),
        (np.zeros((1, 16), np.uint8), ["'input'", "float32", "uint8", "normalise"]),
        (np.array([["a"] * 16]), ["'input'", "float32", "str32"]),
    ],
    ids=["unknown-name", "missing", "rank", "shape", "dtype", "strings"],
)
def test_bad_feeds_name_the_input_and_the_problem(runtime, feeds, fragments):
    with pytest.raises(InferenceError) as info:
        runtime.run(feeds)
    for fragment in fragments:
        assert fragment in str(info.value)
    # and the runtime still works afterwards
    assert runtime.run(tiny.sample_inputs(1))["output"].shape == (1, tiny.CLASSES)


def test_context_manager_closes(runtime):
    with runtime as rt:
        assert not rt.closed
    assert runtime.closed
    runtime.close()  # idempotent
    with pytest.raises(InferenceError, match="closed"):
        runtime.run(tiny.sample_inputs(1))


def test_threads_option_gives_the_same_answer(runtime, request):
    fixture, backend = request.node.callspec.params["runtime"]
    x = tiny.sample_inputs(4)
    with edgekit.load(request.getfixturevalue(fixture), backend=backend, threads=1, precision="f32") as single:
        np.testing.assert_allclose(single.run(x)["output"], runtime.run(x)["output"], atol=1e-6)


@pytest.mark.parametrize("device", ["gpu", "npu"])
def test_missing_accelerator_lists_what_is_present(runtime, request, device):
    fixture, backend = request.node.callspec.params["runtime"]
    with pytest.raises(DeviceError) as info:
        edgekit.load(request.getfixturevalue(fixture), backend=backend, device=device)
    message = str(info.value)
    assert device.upper() in message and "present" in message and "device='cpu'" in message


def test_auto_device_falls_back_to_cpu_and_says_so(runtime, request, caplog):
    fixture, backend = request.node.callspec.params["runtime"]
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        with edgekit.load(request.getfixturevalue(fixture), backend=backend, device="auto", precision="f32") as rt:
            assert rt.device == "cpu"
            np.testing.assert_allclose(rt.run(tiny.sample_inputs(1))["output"],
                                       tiny.reference_output(tiny.sample_inputs(1)), atol=1e-5)
    assert any("running on CPU" in r.getMessage() for r in caplog.records)


@pytest.mark.litert
def test_litert_says_which_implementation_it_used(tflite_fp32):
    """CI's legacy job sets EDGEKIT_EXPECT_LITERT=tflite_runtime to prove the fallback is exercised."""
    expected = os.environ.get("EDGEKIT_EXPECT_LITERT")
    with edgekit.load(tflite_fp32) as rt:
        implementation = rt.engine.split()[0]
    assert implementation in ("ai_edge_litert", "tflite_runtime", "tensorflow")
    if expected:
        assert implementation == expected


def test_callers_arrays_are_never_written_to(runtime):
    first, second = tiny.sample_inputs(2, seed=21), tiny.sample_inputs(2, seed=22)
    kept = first.copy()
    runtime.run(first)
    runtime.run(second)
    np.testing.assert_array_equal(first, kept)


def _read_only(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.setflags(write=False)
    return x


def _memory_mapped(x: np.ndarray, folder) -> np.ndarray:
    path = folder / "feeds.npy"
    np.save(path, x)
    return np.load(path, mmap_mode="r")  # read-only, backed by the file


# Every layout a caller may hand over, small (copied) and large (above OpenVINO's zero-copy threshold).
LAYOUTS = {
    "read-only": lambda x, folder: _read_only(x),
    "fortran-order": lambda x, folder: np.asfortranarray(x),
    "strided-view": lambda x, folder: np.repeat(x, 2, axis=1)[:, ::2],
    "broadcast": lambda x, folder: np.broadcast_to(x[:1], x.shape),
    "memory-mapped": _memory_mapped,
    "from-buffer": lambda x, folder: np.frombuffer(x.tobytes(), np.float32).reshape(x.shape),
}


@pytest.mark.parametrize("batch", [3, 2048], ids=["small", "large"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_any_valid_array_layout_gives_the_c_ordered_answer(runtime, layout, batch, tmp_path):
    x = tiny.sample_inputs(batch, seed=7)
    given = LAYOUTS[layout](x, tmp_path)
    expected = tiny.reference_output(np.ascontiguousarray(given))
    snapshot = np.array(given, copy=True)
    np.testing.assert_allclose(runtime.run(given)["output"], expected, atol=1e-5)
    np.testing.assert_array_equal(given, snapshot)  # the caller's memory is only read
    # and again after a C-ordered call of another shape, so cached buffers cannot leak between calls
    runtime.run(tiny.sample_inputs(1))
    np.testing.assert_allclose(runtime.run(given)["output"], expected, atol=1e-5)


def test_an_empty_batch_is_a_valid_value(runtime):
    out = runtime.run(np.zeros((0, tiny.FEATURES), np.float32))["output"]
    assert out.shape == (0, tiny.CLASSES)


@pytest.fixture(scope="module")
def typed_onnx(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("typed") / "typed.onnx"
    onnx.save(tiny.make_typed_onnx(), path)
    return path


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=pytest.mark.onnxruntime),
                                     pytest.param("openvino", marks=pytest.mark.openvino)])
@pytest.mark.parametrize("count", [0, 7, 40_000], ids=["empty", "small", "large"])
def test_scalars_int64_bool_and_float16_inputs_work(typed_onnx, backend, count):
    feeds = tiny.typed_feeds(count)
    with edgekit.load(typed_onnx, backend=backend, precision="f32") as rt:
        assert rt.inputs[0] == TensorSpec("scale", (), np.dtype("float32"))
        out = rt.run(feeds)["y"]
        readonly = {name: _read_only(value) for name, value in feeds.items()}
        np.testing.assert_array_equal(rt.run(readonly)["y"], out)
    assert out.shape == (count,)
    np.testing.assert_allclose(out, tiny.typed_reference(feeds), rtol=1e-6)
