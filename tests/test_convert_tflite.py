"""Real conversions of a CNN trained on real digits to every TFLite target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit import CalibrationError, ConversionError, UnsupportedModelError
from edgekit.cli import cli
from edgekit.pipeline.preprocess import Recipe, load_image

pytestmark = [pytest.mark.tensorflow, pytest.mark.litert, pytest.mark.slow]

MAX_INT8_DROP = 1.5  # accuracy points on the held-out digits, the budget


def _accuracy(path, x, y) -> float:
    with edgekit.load(path) as rt:
        predictions = np.concatenate([rt.run(x[i : i + 1])[rt.outputs[0].name] for i in range(len(x))])
    return float(np.mean(predictions.argmax(1) == y) * 100)


def test_every_target_is_written_with_its_report(digits_tflite_all):
    for target, result in digits_tflite_all.items():
        variant = target.split("-", 1)[1]
        assert result.artifact.name == f"digits_{variant}.tflite" and result.artifact.is_file()
        report = json.loads(result.report_path.read_text())
        assert result.report_path.name == f"digits_{variant}.tflite.json"
        assert report["status"] == "ok", report["failures"]
        assert report["source"]["sha256"] and report["artifact"]["sha256"] and report["tools"]["tensorflow"]
        assert report["calibration"]["kind"] == "folder" and report["calibration"]["calibration_count"] == 200
        assert report["validation"]["samples"] == 250
        # the same names as the source, in every form
        with edgekit.load(result.artifact) as rt:
            assert [s.name for s in rt.inputs] == ["image"] and [s.name for s in rt.outputs] == ["probs"]


def test_int8_keeps_accuracy_and_is_fully_integer(digits_tflite_all, digits_split, digits_keras):
    _, _, x_test, y_test = digits_split
    int8, fp32 = digits_tflite_all["tflite-int8"], digits_tflite_all["tflite-fp32"]
    audit = int8.report["audit"]
    assert audit["fully_integer"] and audit["input_dtypes"] == ["int8"] and audit["output_dtypes"] == ["int8"]
    validation = int8.validation
    assert validation["accuracy_float"] > 90
    assert validation["accuracy_float"] - validation["accuracy_converted"] <= MAX_INT8_DROP
    # independently of the pipeline's own figures: the whole test split through edgekit.load
    float_accuracy, int8_accuracy = _accuracy(fp32.artifact, x_test, y_test), _accuracy(int8.artifact, x_test, y_test)
    assert float_accuracy > 90 and float_accuracy - int8_accuracy <= MAX_INT8_DROP
    assert int8.report["artifact"]["size_bytes"] < 0.4 * fp32.report["artifact"]["size_bytes"]


def test_float_targets_agree_with_fp32(digits_tflite_all):
    for target in ("tflite-fp16", "tflite-dynamic", "tflite-int16x8"):
        outputs = digits_tflite_all[target].validation["outputs"]["probs"]
        assert outputs["cosine"] > 0.99, target
    assert digits_tflite_all["tflite-fp16"].validation["outputs"]["probs"]["max_abs_error"] < 0.01
    sizes = {t: r.report["artifact"]["size_bytes"] for t, r in digits_tflite_all.items()}
    assert sizes["tflite-fp16"] < 0.6 * sizes["tflite-fp32"] and sizes["tflite-dynamic"] < 0.4 * sizes["tflite-fp32"]


def test_the_stored_recipe_drives_run_image(digits_tflite_all, digits_folder):
    result = digits_tflite_all["tflite-int8"]
    recipe = Recipe.from_dict(result.report["recipe"])
    assert recipe.size == (8, 8) and recipe.color == "gray" and recipe.layout == "nhwc"
    image = sorted((digits_folder / "7").glob("*.png"))[0]
    cli_run = CliRunner().invoke(cli, ["run", str(result.artifact), "--image", str(image), "--json"])
    assert cli_run.exit_code == 0, cli_run.output
    (out,) = json.loads(cli_run.stdout)["outputs"]
    with edgekit.load(result.artifact) as rt:
        expected = rt.run(load_image(str(image), recipe))["probs"]
    assert out["top5"][0]["index"] == int(expected.argmax()) == 7
    assert out["max"] == pytest.approx(float(expected.max()), abs=1e-6)


def test_npy_calibration(tmp_path, digits_keras, digits_split):
    x_train, _, _, _ = digits_split
    np.save(tmp_path / "calib.npy", x_train[:300])
    (result,) = edgekit.convert(digits_keras, "tflite-int8", calibration=tmp_path / "calib.npy", calib_size=100,
                                validation_size=100, output_dir=tmp_path / "out")
    calibration = result.report["calibration"]
    assert calibration["kind"] == "npy" and calibration["calibration_count"] == 100
    assert result.validation["samples"] == 100 and result.validation["accuracy_float"] is None  # no labels
    assert result.validation["outputs"]["probs"]["cosine"] > 0.98 and result.passed


def test_generator_calibration_with_labels(tmp_path, digits_keras, digits_split):
    x_train, y_train, _, _ = digits_split

    def samples():
        for image, label in zip(x_train, y_train):
            yield {"image": image}, int(label)

    (result,) = edgekit.convert(digits_keras, ["tflite-int8"], calibration=samples, calib_size=150,
                                validation_size=200, output_dir=tmp_path)
    validation = result.validation
    assert result.report["calibration"]["kind"] == "iterable"
    assert validation["accuracy_float"] - validation["accuracy_converted"] <= MAX_INT8_DROP


def test_few_samples_warn_and_still_hold_some_out(tmp_path, digits_keras, digits_split):
    np.save(tmp_path / "few.npy", digits_split[0][:40])
    (result,) = edgekit.convert(digits_keras, "tflite-int8", calibration=tmp_path / "few.npy", output_dir=tmp_path)
    calibration = result.report["calibration"]
    assert calibration["calibration_count"] == 30 and calibration["validation_count"] == 10
    assert any("the data has 40" in w for w in result.report["warnings"])


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d, x: d.mkdir() or d, "has no images"),
        (lambda d, x: _write_pngs(d, b"not a png"), "no readable calibration samples"),
        (lambda d, x: _save(d.with_suffix(".npy"), x[:20, :4]), "shape [4, 8, 1], the model expects [8, 8, 1]"),
        (lambda d, x: _save(d.with_suffix(".npy"), (x[:20] * 255).astype(np.uint8)), "is uint8 but the model takes"),
        (lambda d, x: _savez(d.with_suffix(".npz"), pixels=x[:20]), "no array for input(s) ['image']"),
        (lambda d, x: _write(d.with_suffix(".csv"), b"1,2"), "neither an image folder"),
        (lambda d, x: d / "missing", "does not exist"),
    ],
    ids=["empty-folder", "unreadable-images", "npy-shape", "npy-dtype", "npz-name", "csv", "missing"],
)
def test_bad_calibration_is_a_calibration_error(tmp_path, digits_keras, digits_split, make, fragment):
    path = make(tmp_path / "calib", digits_split[0])
    out = tmp_path / "out"
    with pytest.raises(CalibrationError) as info:
        edgekit.convert(digits_keras, "tflite-int8", calibration=path, output_dir=out)
    assert fragment in str(info.value)
    assert not (out.exists() and list(out.iterdir()))  # nothing written, not even a staging folder


def test_some_unreadable_images_are_skipped_and_counted(tmp_path, digits_keras, digits_folder):
    import shutil

    folder = shutil.copytree(digits_folder, tmp_path / "images")
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG garbage")
    (result,) = edgekit.convert(digits_keras, "tflite-int8", calibration=folder, calib_size=400, validation_size=60,
                                output_dir=tmp_path / "out", seed=3)
    skipped = result.report["calibration"]["skipped"]
    assert len(skipped) == 1 and "broken.png" in skipped[0] and result.passed


def test_interrupted_conversion_leaves_nothing_and_clobbers_nothing(tmp_path, digits_keras, digits_split):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "digits_int8.tflite"
    existing.write_bytes(b"the good model from yesterday")

    def interrupted():
        for i, image in enumerate(digits_split[0]):
            if i == 20:
                raise KeyboardInterrupt
            yield {"image": image}

    with pytest.raises((KeyboardInterrupt, ConversionError)):
        edgekit.convert(digits_keras, "tflite-int8", calibration=interrupted,
                        output_dir=out, force=True, calib_size=50, validation_size=10)
    assert existing.read_bytes() == b"the good model from yesterday"
    assert sorted(p.name for p in out.iterdir()) == ["digits_int8.tflite"]


def test_existing_artifact_is_not_overwritten_without_force(digits_tflite_all, digits_keras, digits_folder):
    out = digits_tflite_all["tflite-fp32"].artifact.parent
    before = digits_tflite_all["tflite-fp32"].artifact.read_bytes()
    with pytest.raises(edgekit.EdgekitError, match=r"already exists; pass force=True"):
        edgekit.convert(digits_keras, "tflite-fp32", output_dir=out)
    assert digits_tflite_all["tflite-fp32"].artifact.read_bytes() == before


def test_target_and_source_errors(tmp_path, digits_keras, tflite_fp32):
    with pytest.raises(ConversionError, match="need\\(s\\) calibration data"):
        edgekit.convert(digits_keras, "tflite-int8", output_dir=tmp_path)
    with pytest.raises(ConversionError, match="unknown target\\(s\\) \\['tflite-int4'\\]"):
        edgekit.convert(digits_keras, "tflite-int4", output_dir=tmp_path)
    with pytest.raises(UnsupportedModelError, match="ONNX targets convert .* is a .tflite"):
        edgekit.convert(tflite_fp32, "onnx-fp16", output_dir=tmp_path)
    with pytest.raises(ConversionError, match="input_shapes names unknown input\\(s\\) \\['img'\\]"):
        edgekit.convert(digits_keras, "tflite-fp32", input_shapes={"img": (1, 8, 8, 1)}, output_dir=tmp_path)


def test_dynamic_dimensions_need_input_shape(tmp_path):
    import keras

    inputs = keras.Input((None, None, 1), name="frame")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pooled")(keras.layers.Conv2D(2, 3)(inputs)))
    model.save(tmp_path / "dyn.keras")
    with pytest.raises(ConversionError,
                       match=r"input 'frame' has a dynamic dimension 1 .*input_shapes=\{'frame': \(1, 1, 1, 1\)\}"):
        edgekit.convert(tmp_path / "dyn.keras", "tflite-fp32", output_dir=tmp_path)
    (result,) = edgekit.convert(tmp_path / "dyn.keras", "tflite-fp32", input_shapes={"frame": (1, 16, 16, 1)},
                                output_dir=tmp_path)
    with edgekit.load(result.artifact) as rt:
        assert rt.inputs[0].shape == (1, 16, 16, 1)


def test_unquantizable_ops_stay_float_and_are_stated_unless_integer_only(tmp_path):
    """The TFLite converter's own default is "integer with float fallback": an op with no int8 kernel stays
    float, and edgekit says so (warning, audit, integer share); the strict full-integer mode refuses it."""
    import tensorflow as tf

    class Sine(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).random((4, 4), dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.sin(tf.matmul(x, self.w))}

    module = Sine()
    tf.saved_model.save(module, str(tmp_path / "sine"), signatures={"serving_default": module.serve})
    with pytest.raises(ConversionError, match="cannot be quantized and would stay float: SINx1; allow_float_ops=False"):
        edgekit.convert(tmp_path / "sine", "tflite-int8", calibration="random", output_dir=tmp_path / "a",
                        allow_float_ops=False)
    assert not list((tmp_path / "a").iterdir())
    (result,) = edgekit.convert(tmp_path / "sine", "tflite-int8", calibration="random", output_dir=tmp_path / "b")
    assert result.passed and result.report["audit"]["float_ops"] == {"SIN": 1}
    assert result.report["audit"]["integer_share"] == 1.0  # the matmul's weights: SIN carries none
    assert any("not fully integer: SINx1 stay float" in w for w in result.report["warnings"])
    assert result.report["calibration"]["synthetic"] and result.validation["synthetic"]
    # one command, many targets: the strict target fails, the next one is still made; exit 1, one Error line
    done = CliRunner().invoke(cli, ["convert", str(tmp_path / "sine"), "--to", "tflite-int8,tflite-fp32",
                                    "--integer-only", "--calib", "random", "-o", str(tmp_path / "c"), "--json"])
    assert done.exit_code == 1
    reports = json.loads(done.stdout)
    assert [(r["target"], r["status"]) for r in reports] == [("tflite-int8", "error"), ("tflite-fp32", "ok")]
    assert "SINx1" in reports[0]["failures"][0]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: 1 of 2 target(s) did not pass: tflite-int8: ")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["sine_fp32.tflite", "sine_fp32.tflite.json"]


def test_a_float_tflite_with_shape_arithmetic_is_float_and_requantizes(tmp_path):
    """A float .tflite from TF's converter whose reshape is computed at run time (as Keras' MobileNetV3Small's
    is) carries int32 SHAPE / STRIDED_SLICE / PACK ops: shape arithmetic, not quantization. It is float, and
    tflite-int8 is made from it (it was refused as "already quantized")."""
    import tensorflow as tf
    from edgekit.runtimes.formats import open_model_file

    from edgekit.audit import audit_model

    class Net(tf.Module):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.k = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
            self.w = tf.Variable(rng.normal(0, 0.3, (8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="image")])
        def serve(self, x):
            y = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, self.k, 1, "SAME")), axis=[1, 2], keepdims=True)
            return {"logits": tf.matmul(tf.reshape(y, tf.stack([tf.shape(y)[0], -1])), self.w)}

    net = Net()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.serve.get_concrete_function()], net)
    (tmp_path / "net.tflite").write_bytes(converter.convert())
    source = audit_model(open_model_file(tmp_path / "net.tflite"))
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(source.op_types) and source.integer_share == 0.0
    (result,) = edgekit.convert(tmp_path / "net.tflite", "tflite-int8", calibration="random", output_dir=tmp_path)
    audit = result.report["audit"]
    assert result.passed and audit["integer_share"] == 1.0 and audit["float_ops"] == {}


def test_cli_convert_max_drop_failure_keeps_the_artifact_aside(tmp_path, digits_keras):
    """A failed artifact is kept for inspection in failed/, never under the name a good one has (where a deploy
    script globbing the folder would ship it); a re-run needs no --force for it, and a passing run removes it."""
    runner = CliRunner()
    command = ["convert", str(digits_keras), "--to", "tflite-int8", "--calib", "random", "--calib-size", "20",
               "-o", str(tmp_path), "--json"]
    result = runner.invoke(cli, [*command, "--max-drop", "0"])
    assert result.exit_code == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "exceeds --max-drop 0" in error_lines[0] and "kept aside" in error_lines[0]
    (report,) = json.loads(result.stdout)
    assert report["status"] == "failed"
    assert report["artifact"]["path"] == str(tmp_path / "failed" / "digits_int8.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed"]
    on_disk = json.loads((tmp_path / "failed" / "digits_int8.tflite.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["validation"]["synthetic"]
    again = runner.invoke(cli, [*command, "--max-drop", "0"])  # the failed copy is a record: replaced, no --force
    assert again.exit_code == 1 and sorted(p.name for p in (tmp_path / "failed").iterdir()) == [
        "digits_int8.tflite", "digits_int8.tflite.json"]
    passing = runner.invoke(cli, command)
    assert passing.exit_code == 0, passing.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["digits_int8.tflite",
                                                                          "digits_int8.tflite.json"]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _write_pngs(folder, data: bytes):
    (folder / "0").mkdir(parents=True)
    for i in range(3):
        (folder / "0" / f"{i}.png").write_bytes(data)
    return folder


def _save(path, array):
    np.save(path, array)
    return path


def _savez(path, **arrays):
    np.savez(path, **arrays)
    return path


def _metadata(path) -> dict[bytes, bytes]:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    return {m.name: bytes(model.buffers[m.buffer].data) for m in model.metadata or []}


def test_tflite_fp16_lets_xnnpack_compute_in_fp16_where_the_cpu_can(digits_tflite_all, tflite_fp32, tmp_path):
    """XNNPACK computes in fp16 (on Armv8.2+) only for models marked fp16 inference + fp16 accumulation; TF's
    converter writes fp16accfp32 (not enough) and ai-edge-quantizer nothing."""
    keras_route = digits_tflite_all["tflite-fp16"]
    assert _metadata(keras_route.artifact)[b"reduced_precision_support"] == b"fp16accfp16"
    assert keras_route.report["options"]["fp16_arithmetic"].startswith("allowed")
    (marked,) = edgekit.convert(tflite_fp32, "tflite-fp16", output_dir=tmp_path / "marked")
    (plain,) = edgekit.convert(tflite_fp32, "tflite-fp16", output_dir=tmp_path / "plain", fp16_arithmetic=False)
    assert _metadata(marked.artifact)[b"reduced_precision_support"] == b"fp16accfp16"
    assert b"reduced_precision_support" not in _metadata(plain.artifact)
    for result in (marked, plain):  # LiteRT loads the marked file; on this x86 CPU both run fp32 arithmetic
        assert result.passed and result.validation["outputs"]["output"]["cosine"] > 0.999
