"""Shared fixtures: the tiny model in every form, and the engine-marker skip hook.

A test marked with an engine is skipped only when that engine is not
installed (CI installs all of them, so nothing is skipped there).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
import digits  # noqa: E402
import tiny  # noqa: E402

ENGINE_MODULES = {
    "litert": ("ai_edge_litert", "tflite_runtime", "tensorflow"),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "tensorflow": ("tensorflow",),
    "torch": ("torch",),
    "optuna": ("optuna",),
    "qnn": ("onnxruntime_qnn",),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _managed_environment(module: str) -> bool:
    """A converter's own environment (`edgekit setup rknn` / `imx500`, which the README's test command runs)."""
    try:
        importlib.import_module(f"edgekit.converters.{module}").find_python()
    except Exception:  # noqa: BLE001 - missing or misconfigured: the marker says so
        return False
    return True


#: markers of tests that need a converter's managed environment: (its module, the command that makes it)
MANAGED_ENVIRONMENTS = {"rknn": ("_rknn_env", "edgekit setup rknn"), "imx500": ("_imx500_env", "edgekit setup imx500")}


def pytest_collection_modifyitems(config, items):
    ready: dict[str, bool] = {}
    for item in items:
        for marker, (module, command) in MANAGED_ENVIRONMENTS.items():
            if item.get_closest_marker(marker):
                ready[marker] = ready[marker] if marker in ready else _managed_environment(module)
                if not ready[marker]:
                    item.add_marker(pytest.mark.skip(reason=f"{marker}'s environment is missing: {command}"))
        for marker, modules in ENGINE_MODULES.items():
            if item.get_closest_marker(marker) and not any(_installed(m) for m in modules):
                item.add_marker(pytest.mark.skip(reason=f"{marker} is not installed"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tflite_fp32() -> Path:
    return tiny.HERE / "tiny_fp32.tflite"


@pytest.fixture(scope="session")
def tflite_int8() -> Path:
    return tiny.HERE / "tiny_int8.tflite"


@pytest.fixture(scope="session")
def onnx_fp32(model_dir) -> Path:
    import onnx

    path = model_dir / "tiny_fp32.onnx"
    onnx.save(tiny.make_onnx(), path)
    return path


@pytest.fixture(scope="session")
def onnx_int8_io(model_dir) -> Path:
    import onnx

    path = model_dir / "tiny_int8io.onnx"
    onnx.save(tiny.make_onnx(int8_io=True), path)
    return path


@pytest.fixture(scope="session")
def ir_fp32(model_dir, onnx_fp32) -> Path:
    import openvino as ov

    path = model_dir / "tiny_fp32.xml"
    ov.save_model(ov.Core().read_model(onnx_fp32), path, compress_to_fp16=False)
    return path


@pytest.fixture(scope="session")
def image_onnx(model_dir) -> Path:
    """A one-channel 8x8 image model (NCHW): a fixed linear map to 3 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = model_dir / "image.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def copy_to(tmp_path):
    """Copy a model (with an IR's .bin) into a fresh folder under a chosen name."""

    def copy(source: Path, name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(source, target)
        if source.suffix == ".xml":
            shutil.copyfile(source.with_suffix(".bin"), target.with_suffix(".bin"))
        return target

    return copy


# -- the digits CNN: real labeled data, trained once per session (TensorFlow) -------------------


@pytest.fixture(scope="session")
def digits_split():
    """(x_train, y_train, x_test, y_test) from sklearn's bundled digits, images NHWC float in [0, 1]."""
    return digits.load_split()


@pytest.fixture(scope="session")
def digits_keras(tmp_path_factory) -> Path:
    return digits.train_cnn(tmp_path_factory.mktemp("digits") / "digits.keras")


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory, digits_split) -> Path:
    """The held-out digits as 8-bit PNGs in class sub-folders: calibration + labeled validation."""
    _, _, x_test, y_test = digits_split
    return digits.write_image_folder(tmp_path_factory.mktemp("digit-images"), x_test, y_test)


def _convert_digits(tmp_path_factory, keras_model: Path, folder: Path, family: str, targets: str) -> dict:
    """One conversion per session for a target family: calibrated on the digits image folder."""
    import edgekit

    results = edgekit.convert(keras_model, targets, calibration=folder, calib_size=200, validation_size=250,
                              output_dir=tmp_path_factory.mktemp(f"digits-{family}"))
    return {r.target: r for r in results}


@pytest.fixture(scope="session")
def digits_tflite_all(tmp_path_factory, digits_keras, digits_folder):
    """Every TFLite target of the digits CNN."""
    return _convert_digits(tmp_path_factory, digits_keras, digits_folder, "tflite",
                           "tflite-int8,tflite-int16x8,tflite-fp16,tflite-dynamic,tflite-fp32")


@pytest.fixture(scope="session")
def digits_onnx_all(tmp_path_factory, digits_keras, digits_folder):
    """Every ONNX target of the digits CNN (via tf2onnx)."""
    return _convert_digits(tmp_path_factory, digits_keras, digits_folder, "onnx",
                           "onnx-int8,onnx-int8-dynamic,onnx-fp16,onnx-fp32")


@pytest.fixture(scope="session")
def digits_openvino_all(tmp_path_factory, digits_keras, digits_folder):
    """Every OpenVINO target of the digits CNN."""
    return _convert_digits(tmp_path_factory, digits_keras, digits_folder, "openvino",
                           "openvino-int8,openvino-fp16,openvino-fp32")


SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DIGITS_IMAGES = SAMPLES / "digits" / "images"  # the bundled labeled images the digits nets never trained on


@pytest.fixture(scope="session")
def digits_torch_onnx(tmp_path_factory) -> Path:
    """samples/pytorch_to_edge.py's CNN, trained on sklearn's digits (not the bundled images), as ONNX [1,1,8,8]."""
    import importlib.util as util

    import edgekit

    spec = util.spec_from_file_location("pytorch_to_edge", SAMPLES / "pytorch_to_edge.py")
    sample = util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    import torch

    (result,) = edgekit.convert(sample.train(), "onnx-fp32", example_inputs=torch.zeros(1, 1, 8, 8), name="digits",
                                output_dir=tmp_path_factory.mktemp("digits-torch"), validate_outputs=False)
    return result.artifact


def scramble_largest_weight(path: str | Path) -> None:
    """Permute the largest weight of the ONNX file at ``path`` in place: a negative control's broken model."""
    import onnx

    model = onnx.load(str(path))
    weights = max(model.graph.initializer, key=lambda i: np.prod(i.dims))
    values = onnx.numpy_helper.to_array(weights)
    scrambled = np.random.default_rng(0).permutation(values.reshape(-1)).reshape(values.shape)
    weights.CopyFrom(onnx.numpy_helper.from_array(scrambled, weights.name))
    onnx.save(model, str(path))


def make_conv_onnx(path: Path, *, opset: int = 17, dynamic_hw: bool = False) -> Path:
    """A small image model built in code: two Conv/Relu branches, Concat, global pooling, Gemm.

    Input ``pixels`` is NCHW [batch, 3, 16, 16] (or [batch, 3, H, W] with ``dynamic_hw``);
    output ``logits`` [batch, 5].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.normal(0, scale, shape)).astype(np.float32), name)

    inits = [init("wa", (4, 3, 3, 3)), init("ba", (4,), 0.1), init("wb", (4, 3, 1, 1)), init("bb", (4,), 0.1),
             init("wc", (8, 8, 3, 3)), init("bc", (8,), 0.1), init("wg", (5, 8)), init("bg", (5,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["pixels", "wa", "ba"], ["ca"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ca"], ["ra"]),
        helper.make_node("Conv", ["pixels", "wb", "bb"], ["cb"]),
        helper.make_node("Relu", ["cb"], ["rb"]),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "wc", "bc"], ["cc"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cc"], ["rc"]),
        helper.make_node("GlobalAveragePool", ["rc"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], transB=1),
    ]
    dims = ["batch", 3, "height", "width"] if dynamic_hw else ["batch", 3, 16, 16]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path

