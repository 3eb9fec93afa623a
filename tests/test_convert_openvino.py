"""Real conversions to OpenVINO IR: from Keras, ONNX and TFLite; NNCF int8 with and without accuracy control."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit import UnsupportedModelError

pytestmark = [pytest.mark.openvino, pytest.mark.slow]

MAX_INT8_DROP = 1.5


def _predict(path, x):
    with edgekit.load(path, precision="f32") as rt:
        return np.concatenate([rt.run(x[i : i + 1])[rt.outputs[0].name] for i in range(len(x))])


@pytest.mark.tensorflow
def test_every_openvino_target_from_keras(digits_openvino_all, digits_split):
    _, _, x_test, y_test = digits_split
    for target, result in digits_openvino_all.items():
        variant = target.split("-", 1)[1]
        assert result.passed, result.report["failures"]
        assert result.artifact.name == f"digits_{variant}.xml"
        assert result.artifact.with_suffix(".bin").is_file()
        with edgekit.load(result.artifact, precision="f32") as rt:
            assert [s.name for s in rt.inputs] == ["image"] and [s.name for s in rt.outputs] == ["probs"]
    fp32 = _predict(digits_openvino_all["openvino-fp32"].artifact, x_test)
    fp16 = _predict(digits_openvino_all["openvino-fp16"].artifact, x_test)
    int8 = _predict(digits_openvino_all["openvino-int8"].artifact, x_test)
    np.testing.assert_allclose(fp16, fp32, atol=5e-3)
    accuracy = {name: np.mean(p.argmax(1) == y_test) * 100 for name, p in (("fp32", fp32), ("int8", int8))}
    assert accuracy["fp32"] > 90 and accuracy["fp32"] - accuracy["int8"] <= MAX_INT8_DROP
    report = digits_openvino_all["openvino-int8"].report
    assert report["options"]["subset_size"] == 200  # NNCF's silent 300 cap replaced by the real count
    assert report["audit"]["op_types"]["FakeQuantize"] > 0 and report["audit"]["integer_compute"]


def _reference_logits(path, x):
    with edgekit.load(path, precision="f32") as rt:
        return rt.run(x)[rt.outputs[0].name]


@pytest.mark.tensorflow
@pytest.mark.onnxruntime
@pytest.mark.litert
def test_openvino_from_onnx_and_tflite_sources(tmp_path, digits_onnx_all, digits_tflite_all, digits_split):
    x = digits_split[2][:32]
    for name, source in (("onnx", digits_onnx_all["onnx-fp32"].artifact),
                         ("tflite", digits_tflite_all["tflite-fp32"].artifact)):
        results = edgekit.convert(source, "openvino-fp32,openvino-int8", calibration=x.copy(), calib_size=24,
                                  validation_size=8, output_dir=tmp_path / name)
        fp32, int8 = results
        assert fp32.report["options"]["reader"] == f"openvino.convert_model ({name})"
        with edgekit.load(fp32.artifact, precision="f32") as rt:
            assert [s.name for s in rt.inputs] == ["image"] and [s.name for s in rt.outputs] == ["probs"]
        np.testing.assert_allclose(np.concatenate([_reference_logits(fp32.artifact, x[i : i + 1]) for i in range(8)]),
                                   np.concatenate([_reference_logits(source, x[i : i + 1]) for i in range(8)]),
                                   atol=1e-5)
        assert int8.validation["outputs"]["probs"]["cosine"] > 0.99


@pytest.mark.tensorflow
def test_accuracy_control_reverts_layers_and_meets_the_budget(tmp_path, digits_keras, digits_split):
    """Calibrating on images at 5 % brightness (the classic preprocessing mismatch) gives int8 ranges
    far too narrow for real images: accuracy collapses, and NNCF's accuracy control must revert
    layers to float until the drop is within budget. Here it reverts every layer: the accuracy holds, but an
    "-int8" IR with no int8 layer is float, so it fails saying so and is kept aside."""
    _, _, x_test, y_test = digits_split
    budget = 1.0

    def samples():  # the first 40 calibrate (the pipeline does not shuffle iterables); the rest validate
        for index, (image, label) in enumerate(zip(x_test, y_test)):
            yield {"image": image * (0.05 if index < 40 else 1.0)}, int(label)

    common = {"calibration": samples, "calib_size": 40, "validation_size": 200}
    (plain,) = edgekit.convert(digits_keras, "openvino-int8", output_dir=tmp_path / "plain", **common)
    assert plain.validation["drop"] > 5 * budget  # the premise: plain int8 really breaks here
    (controlled,) = edgekit.convert(digits_keras, "openvino-int8", output_dir=tmp_path / "ac", max_drop=budget,
                                    **common)
    control = controlled.report["options"]["accuracy_control"]
    assert control["max_drop_points"] == budget and len(control["reverted_to_float"]) >= 1
    assert controlled.validation["drop"] <= budget
    assert controlled.report["audit"]["integer_share"] == 0.0 and not controlled.passed
    assert controlled.report["failures"][0].startswith("mostly float: only 0% of the weights")
    assert controlled.artifact == tmp_path / "ac" / "failed" / controlled.artifact.name


def test_ir_source_and_broken_ir_are_clear_errors(tmp_path, copy_to, ir_fp32):
    with pytest.raises(UnsupportedModelError, match="is a float OpenVINO IR: an IR is a conversion source only"):
        edgekit.convert(ir_fp32, "openvino-fp16", output_dir=tmp_path)
    broken = copy_to(ir_fp32, "broken.xml")
    broken.with_suffix(".bin").write_bytes(b"\0" * 10)
    with pytest.raises(UnsupportedModelError, match="truncated"):
        edgekit.inspect_model(broken)


@pytest.mark.litert
def test_layers_read_from_tflite_have_the_same_names_in_every_conversion(tmp_path, tflite_fp32):
    """OpenVINO's TFLite reader names layers from a process-wide counter; edgekit renames them by position, so
    ``--ignored-names`` and the sensitivity ranking name the same layer in the second conversion as the first."""
    import openvino as ov

    names = []
    for attempt in ("first", "second"):
        (result,) = edgekit.convert(tflite_fp32, "openvino-fp32", output_dir=tmp_path / attempt, validate_outputs=False)
        ops = ov.Core().read_model(result.artifact).get_ordered_ops()
        names.append([(op.get_type_name(), op.get_friendly_name()) for op in ops])
    assert names[0] == names[1]
    assert any(kind == "MatMul" or kind == "Convolution" for kind, _ in names[0])


def test_the_overflow_fix_follows_the_cpu_the_model_is_for(tmp_path, onnx_fp32):
    """x86 without VNNI saturates int8 dot products (OpenVINO's saturation issue): every layer's weights go to
    7 bits there; with VNNI, on ARM, or for an explicit x86 (VNNI assumed, as ONNX's --for), NNCF's default.
    The report records the CPU and the fix; an explicit --overflow-fix wins."""
    from edgekit.converters._openvino import overflow_fix_for
    from edgekit.runtimes.cpu import X86_WITHOUT_VNNI, describe_cpu

    described = {flags: describe_cpu("auto", cpuinfo=f"flags : fpu {flags}") for flags in
                 ("avx2", "avx2 avx512f avx512_vnni", "avx2 avx_vnni", "avx512f amx_int8")}
    assert described["avx2"] == X86_WITHOUT_VNNI and X86_WITHOUT_VNNI not in list(described.values())[1:]
    assert describe_cpu("x86") == "x86" and describe_cpu("arm64") == "arm64"
    assert [overflow_fix_for(c) for c in (X86_WITHOUT_VNNI, "x86", "arm64")] == ["enable", None, None]
    (here,) = edgekit.convert(onnx_fp32, "openvino-int8", calibration="random", calib_size=8, validation_size=4,
                              output_dir=tmp_path / "here")
    cpu = describe_cpu("auto")
    assert here.report["options"]["for_cpu"] == cpu
    assert here.report["options"]["overflow_fix"] == (overflow_fix_for(cpu) or "first_layer_only (NNCF's default)")
    (forced,) = edgekit.convert(onnx_fp32, "openvino-int8", calibration="random", calib_size=8, validation_size=4,
                                output_dir=tmp_path / "forced", overflow_fix="disable", for_cpu="arm64")
    assert forced.report["options"]["overflow_fix"] == "disable" and forced.report["options"]["for_cpu"] == "arm64"
    assert any("ARM CPU plugin" in note for note in forced.report["options"]["notes"])
