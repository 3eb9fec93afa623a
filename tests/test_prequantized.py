"""Models that arrive already quantized keep their own scales: QAT (PyTorch PT2E -> QDQ ONNX; tfmot -> a SavedModel
with FakeQuant ops), an int8 .tflite.

Re-quantizing a QAT model calibrates new scales in front of the trained ones (issue 31 measured 8 new
QuantizeLinear at 0.0034 over trained 0.0117, 0.59x the float speed); a float target would run its integer
layers under a float name. Both are refused; the int8 targets whose engine reads the source as it is keep it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import qat
from click.testing import CliRunner
from conftest import DIGITS_IMAGES

import edgekit
from edgekit.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]

@pytest.fixture(scope="session")
def qat_files(tmp_path_factory) -> tuple[Path, Path]:
    return qat.train_qat(tmp_path_factory.mktemp("qat"))


@pytest.fixture(scope="session")
def qat_onnx(qat_files) -> Path:
    return qat_files[0]


@pytest.fixture(scope="session")
def qat_converted(qat_onnx, tmp_path_factory):
    results = edgekit.convert(qat_onnx, "onnx-int8,openvino-int8", calibration=DIGITS_IMAGES,
                              recipe=edgekit.Recipe(color="gray", layout="nchw"), calib_size=100, validation_size=200,
                              output_dir=tmp_path_factory.mktemp("qat-out"))
    return {r.target: r for r in results}


def _digits(count: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images[:count] / 16.0).astype(np.float32)[:, None]


def _ort(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": image[None]})[0] for image in images])


def _openvino(path: Path, images: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    return np.concatenate([compiled(image[None])[0] for image in images])


def test_qat_scales_are_kept_and_nothing_is_calibrated(qat_onnx, qat_converted):
    import onnx

    source = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(qat_onnx)).graph.initializer}
    for target, result in qat_converted.items():
        assert result.passed, (target, result.report["failures"])
        options = result.report["options"]
        assert options["quantization"] == "scales kept from source" and options["calibration"].startswith("none")
        assert "QDQ ONNX (6 QuantizeLinear" in result.report["source"]["quantization"]
    kept = {i.name: onnx.numpy_helper.to_array(i)
            for i in onnx.load(str(qat_converted["onnx-int8"].artifact)).graph.initializer}
    assert kept.keys() == source.keys() and all(np.array_equal(kept[k], source[k]) for k in source)
    ir = Path(qat_converted["openvino-int8"].artifact).read_text()
    quantize_linear = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(qat_onnx)).graph.node)
    assert ir.count('type="FakeQuantize"') == quantize_linear  # one per trained activation scale, none added


def test_each_engine_runs_the_kept_model_bit_identically_to_the_source(qat_onnx, qat_converted):
    images = _digits(64)
    assert np.array_equal(_ort(qat_converted["onnx-int8"].artifact, images), _ort(qat_onnx, images))
    assert np.array_equal(_openvino(qat_converted["openvino-int8"].artifact, images), _openvino(qat_onnx, images))
    from sklearn.datasets import load_digits

    accuracy = float(np.mean(_ort(qat_onnx, images).argmax(1) == load_digits().target[:64]))
    assert accuracy >= 0.9, f"the QAT fixture itself is poor ({accuracy:.0%}): a broken fixture proves nothing"


def test_the_audit_counts_the_layers_onnx_runtime_fuses_as_integer(qat_onnx, tmp_path):
    """PT2E leaves Conv biases float and a Relu between Conv and QuantizeLinear; ORT still fuses each into a
    QLinearConv. The audit must agree with ORT's own optimized graph, not call the model float."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qat_onnx), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    result = CliRunner().invoke(cli, ["inspect", str(qat_onnx), "--json"])
    assert result.exit_code == 0, result.output
    audit = json.loads(result.stdout)["audit"]
    assert fused.count("QLinearConv") == 3 and "Conv" not in audit["float_ops"]
    assert audit["float_ops"] == {"Gemm": 1} and "Gemm" in fused  # the float-output Gemm ORT leaves in float
    assert audit["integer_share"] >= 0.95


def test_targets_that_would_lose_the_scales_refuse_before_any_work(qat_onnx, tmp_path):
    with pytest.raises(edgekit.UnsupportedModelError, match=r"already quantized.*tflite-int8 would quantize it "
                       r"again.*onnx-fp32, openvino-fp16 would keep its integer layers under a float name"):
        edgekit.convert(qat_onnx, "tflite-int8,onnx-fp32,openvino-fp16", calibration="random", output_dir=tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(qat_onnx), "--to", "onnx-int8-dynamic", "-o", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.count("Error:") == 1
    assert "onnx-int8 or openvino-int8, which keep(s) its scales" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_pt2e_program_keeps_the_scales_it_was_trained_with(qat_files, tmp_path):
    qat_onnx, qat_pt2 = qat_files
    (result,) = edgekit.convert(qat_pt2, "onnx-int8", calibration=DIGITS_IMAGES,
                                recipe=edgekit.Recipe(color="gray", layout="nchw"), output_dir=tmp_path)
    assert result.passed, result.report["failures"]
    assert result.report["options"]["quantization"] == "scales kept from source"
    assert result.report["source"]["quantization"].startswith("PT2E-quantized PyTorch")
    assert _activation_scales(result.artifact) == _activation_scales(qat_onnx)
    images = _digits(64)
    assert np.array_equal(_ort(result.artifact, images), _ort(qat_onnx, images))


def _activation_scales(path: Path) -> list[float]:
    import onnx

    model = onnx.load(str(path))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [float(values[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"]


@pytest.mark.litert
def test_an_int8_tflite_source_is_kept_as_it_is(tflite_int8, tmp_path):
    (result,) = edgekit.convert(tflite_int8, "tflite-int8", output_dir=tmp_path)
    assert result.passed, result.report["failures"]
    assert Path(result.artifact).read_bytes() == Path(tflite_int8).read_bytes()
    assert result.report["options"]["quantization"] == "scales kept from source"


@pytest.mark.litert
def test_an_int8_tflite_is_not_given_a_float_openvino_name(tflite_int8, tmp_path):
    """OpenVINO reads an int8 .tflite into FakeQuantize layers: an "openvino-fp32" of it ran integer layers."""
    with pytest.raises(edgekit.UnsupportedModelError, match="openvino-fp32 would keep its integer layers under a "
                       "float name; choose tflite-int8"):
        edgekit.convert(tflite_int8, "openvino-fp32", output_dir=tmp_path)


def test_dequantize_on_request_makes_a_float_model_of_the_qat_source(qat_files, tmp_path):
    import onnx

    qat_onnx, qat_pt2 = qat_files
    results = edgekit.convert(qat_onnx, "onnx-fp32,openvino-fp32", dequantize=True, output_dir=tmp_path,
                              calibration=DIGITS_IMAGES, recipe=edgekit.Recipe(color="gray", layout="nchw"))
    for result in results:
        assert result.passed, result.report["failures"]
        assert result.report["source"]["dequantized"].startswith("on request")
    ops = {n.op_type for n in onnx.load(str(results[0].artifact)).graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"} and {"Conv", "Gemm"} <= ops
    assert 'type="FakeQuantize"' not in Path(results[1].artifact).read_text()
    images = _digits(64)  # the float model the QAT weights make: it decides as the fake-quantized one does
    assert np.mean(_ort(results[0].artifact, images).argmax(1) == _ort(qat_onnx, images).argmax(1)) >= 0.95
    with pytest.raises(edgekit.ConversionError, match="dequantize applies to ONNX sources"):
        edgekit.convert(qat_pt2, "onnx-fp32", dequantize=True, output_dir=tmp_path / "pt2")


QAT_SAVEDMODEL = Path(__file__).resolve().parent / "models" / "qat_tfmot"  # tests/models/build_qat_savedmodel.py


@pytest.mark.tensorflow
@pytest.mark.litert
def test_a_tfmot_qat_savedmodel_keeps_its_learned_ranges(tmp_path):
    """tfmot's QAT SavedModel: tflite-int8 takes the FakeQuant ranges (no calibration), every activation's
    scale is its learned (max - min) / 255, and accuracy on the bundled digits holds; other targets refuse."""
    import tensorflow as tf

    (result,) = edgekit.convert(QAT_SAVEDMODEL, "tflite-int8", calibration=DIGITS_IMAGES, output_dir=tmp_path,
                                recipe=edgekit.Recipe(color="gray"), calib_size=100, validation_size=200)
    assert result.passed, result.report["failures"]
    options = result.report["options"]
    assert options["quantization"] == "scales kept from source"
    assert options["source_quantization"].startswith("SavedModel with FakeQuant ops (5 FakeQuantWithMinMaxVars")
    assert result.report["audit"]["fully_integer"]
    assert result.validation["drop"] <= 1.0 and result.validation["accuracy_converted"] >= 0.95
    # activation ranges: the input's (quantize_layer) and each layer's post_activation min/max variables
    variables = {v.name[:-len(":0")]: v for v in tf.saved_model.load(str(QAT_SAVEDMODEL)).weights
                 if v.shape.rank == 0 and "kernel" not in v.name}
    learned = {round((float(variables[name[:-4] + "_max"].numpy()) - float(v.numpy())) / 255, 7)
               for name, v in variables.items() if name.endswith("_min")}
    from edgekit.runtimes.litert_interpreter import import_interpreter

    interpreter = import_interpreter()[1].Interpreter(model_path=str(result.artifact))
    scales = {round(float(t["quantization"][0]), 7) for t in interpreter.get_tensor_details()
              if t["dtype"] == np.int8 and t["quantization"][0] > 0}
    assert len(learned) >= 3 and learned <= scales, (learned, scales)
    with pytest.raises(edgekit.EdgekitError, match="already quantized .*FakeQuant.* choose tflite-int8"):
        edgekit.convert(QAT_SAVEDMODEL, "onnx-int8,tflite-fp32", calibration=DIGITS_IMAGES, output_dir=tmp_path)


def test_an_nncf_int8_ir_is_kept_as_it_is(digits_torch_onnx, tmp_path):
    """An IR that NNCF quantized (FakeQuantize layers) is a source for openvino-int8 only: nothing calibrated,
    every FakeQuantize kept, outputs bit-identical; a float IR, or another target, is refused."""
    import openvino as ov

    recipe = edgekit.Recipe(color="gray", layout="nchw")
    (made,) = edgekit.convert(digits_torch_onnx, "openvino-int8", calibration=DIGITS_IMAGES, recipe=recipe,
                              calib_size=100, output_dir=tmp_path / "made", validate_outputs=False)
    (kept,) = edgekit.convert(made.artifact, "openvino-int8", calibration=DIGITS_IMAGES, recipe=recipe,
                              validation_size=100, output_dir=tmp_path / "kept", name="kept")
    assert kept.passed and kept.report["options"]["quantization"] == "scales kept from source"
    fake = [sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(p)).get_ops())
            for p in (made.artifact, kept.artifact)]
    assert fake[0] == fake[1] > 0 and f"{fake[0]} FakeQuantize" in kept.report["options"]["source_quantization"]
    x = np.random.default_rng(3).random((1, 1, 8, 8), dtype=np.float32)
    with edgekit.load(made.artifact) as a, edgekit.load(kept.artifact) as b:
        assert np.array_equal(next(iter(a.run(x).values())), next(iter(b.run(x).values())))
    with pytest.raises(edgekit.EdgekitError, match="already quantized .*onnx-int8 would quantize it again"):
        edgekit.convert(made.artifact, "onnx-int8", calibration=DIGITS_IMAGES, output_dir=tmp_path / "no")
    (float_ir,) = edgekit.convert(digits_torch_onnx, "openvino-fp32", output_dir=tmp_path / "fp32",
                                  validate_outputs=False)
    with pytest.raises(edgekit.EdgekitError, match="is a float OpenVINO IR: an IR is a conversion source only when"):
        edgekit.convert(float_ir.artifact, "openvino-int8", calibration=DIGITS_IMAGES, output_dir=tmp_path / "no")


def _qcdq_conv(path: Path) -> Path:
    """A 4-bit QCDQ Conv as sub-8-bit QAT exports write it: weights in [-8, 7] behind DequantizeLinear, and each
    activation QuantizeLinear -> Clip(-8, 7) -> DequantizeLinear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scalars = {"w_s": np.float32(0.02), "a_s": np.float32(0.05), "o_s": np.float32(0.1), "zp": np.int8(0),
               "lo": np.int8(-8), "hi": np.int8(7)}
    weights = np.random.default_rng(0).integers(-8, 8, (8, 4, 3, 3)).astype(np.int8)
    initializers = [numpy_helper.from_array(weights, "w_q")] + [numpy_helper.from_array(np.array(v), k)
                                                                  for k, v in scalars.items()]
    node = helper.make_node
    nodes = [node("QuantizeLinear", ["x", "a_s", "zp"], ["xq"]), node("Clip", ["xq", "lo", "hi"], ["xc"]),
             node("DequantizeLinear", ["xc", "a_s", "zp"], ["xd"]),
             node("DequantizeLinear", ["w_q", "w_s", "zp"], ["wd"]),
             node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             node("QuantizeLinear", ["c", "o_s", "zp"], ["cq"]), node("Clip", ["cq", "lo", "hi"], ["cc"]),
             node("DequantizeLinear", ["cc", "o_s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "qcdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_qcdq_source_keeps_its_sub_8_bit_ranges_where_the_engine_reads_them(tmp_path):
    source = _qcdq_conv(tmp_path / "qcdq.onnx")
    (kept,) = edgekit.convert(source, "onnx-int8", calibration="random", output_dir=tmp_path / "out")
    assert kept.passed and "2 Q->Clip->DQ (sub-8-bit ranges)" in kept.report["options"]["source_quantization"]
    assert kept.report["audit"]["float_ops"] == {}  # the Clips compute on int8 data
    x = np.random.default_rng(1).random((1, 4, 8, 8), dtype=np.float32) * 0.6
    with edgekit.load(source) as a, edgekit.load(kept.artifact) as b:
        assert np.array_equal(a.run(x)["y"], b.run(x)["y"])
    with pytest.raises(edgekit.EdgekitError, match="openvino-int8 cannot keep the scales of 'qcdq.onnx': OpenVINO "
                                                   "reads its Q->Clip->DQ .* use onnx-int8"):
        edgekit.convert(source, "openvino-int8", calibration="random", output_dir=tmp_path / "ov")
