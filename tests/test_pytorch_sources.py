"""PyTorch sources (an nn.Module with example inputs, a .pt2 file), ONNX sources to TFLite, and a float .tflite
re-quantized: every route of the conversion matrix that starts outside TensorFlow.

Architectures from tests/models/torch_zoo.py (torchvision-style ResNet and MobileNetV3, an Ultralytics-style
detector head, a BERT-style encoder), BatchNorm statistics measured on data. Every artifact is compared with
the PyTorch model's own outputs on every engine that reads it, on held-out inputs; every form takes the same
feeds (names, shapes) and gives the same output names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch_zoo

import edgekit
from edgekit.pipeline.validation import cosine

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.litert, pytest.mark.onnxruntime,
              pytest.mark.openvino]

TARGETS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int16x8", "onnx-fp32",
           "onnx-fp16", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8")
FLOORS = {"fp32": 0.9999, "fp16": 0.999, "dynamic": 0.99, "int8": 0.98, "int16x8": 0.98}
# below the 0.98: the encoder's tflite-int8 measured 0.976: it once read 0.99+ only because near-tie
# arg-max flips on 16 samples called a collapse and the repair's remedy then kept the whole graph float (the bug
# of issue 29)
LOWER = {("encoder", "tflite-int8"): 0.97}
HELD_OUT = 12
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))  # the console script of this environment


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (model, {target: ConversionResult}); one `edgekit.convert` call per model, made when first asked."""
    done: dict[str, tuple[Any, dict[str, Any]]] = {}

    def convert(name: str):
        if name not in done:
            model, example = torch_zoo.build(name)
            data = torch_zoo.inputs_for(name, 80, seed=1)
            samples = [{k: v[i : i + 1] for k, v in data.items()} for i in range(80)]
            results = edgekit.convert(model, list(TARGETS), example_inputs=example, calibration=samples,
                                      calib_size=64, validation_size=16, name=name,
                                      output_dir=tmp_path_factory.mktemp(name))
            done[name] = model, {r.target: r for r in results}
        return done[name]

    return convert


def _outputs(artifact: Path, engine: str, data: dict[str, np.ndarray]) -> tuple[list[str], list[str], np.ndarray]:
    options = {"config": {"INFERENCE_PRECISION_HINT": "f32"}} if engine == "openvino" else {}
    with edgekit.load(artifact, backend=engine, **options) as runtime:
        count = len(next(iter(data.values())))
        got = np.concatenate([runtime.run({k: v[i : i + 1] for k, v in data.items()})[runtime.outputs[0].name]
                              for i in range(count)])
        return [s.name for s in runtime.inputs], [s.name for s in runtime.outputs], got


ENGINES = {".tflite": ("litert",), ".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}


@pytest.mark.parametrize(("name", "target"), [(n, t) for n in torch_zoo.NAMES for t in TARGETS])
def test_every_form_agrees_with_the_pytorch_model_on_every_engine(converted, name, target):
    model, results = converted(name)
    result = results[target]
    assert result.passed, result.report["failures"]
    data = torch_zoo.inputs_for(name, HELD_OUT, seed=99)
    expected = torch_zoo.predict(model, data)
    cosines = {}
    for engine in ENGINES[result.artifact.suffix]:
        inputs, outputs, got = _outputs(result.artifact, engine, data)
        assert inputs == list(data), f"{target} on {engine} takes {inputs}, the PyTorch model {list(data)}"
        assert outputs == ["output_0"], f"{target} on {engine} names its output {outputs}"
        assert got.shape == expected.shape
        cosines[engine] = cosine(expected, got)
    floor = LOWER.get((name, target), FLOORS[target.split("-", 1)[1]])
    assert min(cosines.values()) >= floor, f"{name} {target}: cosine {cosines} below {floor}"


def test_the_report_says_which_route_each_artifact_took(converted):
    _, results = converted("resnet")
    routes = {t: r.report["options"]["route"] for t, r in results.items()}
    assert routes["tflite-int8"] == "torch -> TFLite (litert-torch) -> static_wi8_ai8 (ai-edge-quantizer)"
    assert routes["onnx-int8"] == "torch -> ONNX (dynamo exporter)"
    assert routes["openvino-fp32"] == "torch -> ONNX (dynamo exporter) -> openvino.convert_model"
    report = results["tflite-int8"].report
    assert {"torch", "litert-torch", "ai-edge-quantizer", "onnxscript"} <= set(report["tools"])
    assert report["source"]["kind"] == "pytorch" and report["source"]["reference"].startswith("the PyTorch model")
    assert report["audit"]["input_dtypes"] == ["int8"]  # as the TFLite converter's int8 target: integer I/O
    assert results["tflite-int8"].artifact.name == "resnet_int8.tflite"


def test_a_transformer_is_converted_with_the_settings_its_engines_document(converted):
    """With no options: NNCF's transformer model type for the encoder (found from its attention), not for a CNN;
    tflite-int8's embedding lookup stays float, as LiteRT runs it, stated in the report rather than refused."""
    _, encoder = converted("encoder")
    _, resnet = converted("resnet")
    nncf = encoder["openvino-int8"].report["options"]
    assert nncf["model_type"] == "transformer" and "attention op(s)" in nncf["notes"][0]
    assert resnet["openvino-int8"].report["options"]["model_type"] is None
    tflite = encoder["tflite-int8"].report
    assert tflite["status"] == "ok" and "EMBEDDING_LOOKUP" in tflite["audit"]["float_ops"]
    assert tflite["audit"]["integer_share"] >= 0.9  # the embedding table is a lookup, not a weighted layer
    assert any("not fully integer: EMBEDDING_LOOKUPx1" in w for w in tflite["warnings"])


def test_int64_inputs_reach_tflite_as_int32_and_the_report_says_so(converted):
    _, results = converted("encoder")
    report = results["tflite-fp32"].report
    assert "input_ids" in report["options"]["note"] and "int32" in report["options"]["note"]
    with edgekit.load(results["tflite-fp32"].artifact) as runtime:
        assert {s.name: s.dtype.name for s in runtime.inputs} == {"input_ids": "int32", "attention_mask": "int32"}


@pytest.fixture(scope="module")
def exported_onnx(converted):
    """The float ONNX export of each model, as a user would hand edgekit an .onnx file."""
    return lambda name: converted(name)[1]["onnx-fp32"].artifact


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v3", "encoder"])
def test_an_onnx_source_reaches_every_tflite_target_and_keeps_its_layout(exported_onnx, converted, tmp_path, name):
    model, _ = converted(name)
    data = torch_zoo.inputs_for(name, 60, seed=1)
    tflite = [t for t in TARGETS if t.startswith("tflite")]
    results = edgekit.convert(exported_onnx(name), tflite, output_dir=tmp_path, calib_size=48,
                              calibration=[{k: v[i : i + 1] for k, v in data.items()} for i in range(60)])
    held_out = torch_zoo.inputs_for(name, HELD_OUT, seed=99)
    expected = torch_zoo.predict(model, held_out)
    for result in results:
        assert result.passed, result.report["failures"]
        assert result.report["options"]["route"].startswith("ONNX -> TFLite (onnx2tf flatbuffer_direct")
        inputs, _, got = _outputs(result.artifact, "litert", held_out)
        assert inputs == list(held_out)  # NCHW kept: the same feeds as the ONNX model
        # int8 and 16x8 measured 0.973-0.998 here (onnx2tf's float graph, then ai-edge-quantizer); MobileNetV3's
        # hard-sigmoid gates are rewritten to be quantized, as from .pt2
        variant = result.target.split("-", 1)[1]
        floor = LOWER.get((name, result.target), 0.97) if variant in ("int8", "int16x8") else FLOORS[variant]
        assert cosine(expected, got) >= floor, (result.target, cosine(expected, got))
    int8 = results[tflite.index("tflite-int8")].report
    rewritten = " ".join(int8["options"].get("rewritten_before_onnx2tf", []))
    # onnx2tf pads max-pooling with PADV2 and makes hard-sigmoid RELU_0_TO_1, neither of which ai-edge-quantizer
    # can quantize: rewritten exactly before onnx2tf, so neither stays float
    assert not {"PADV2", "RELU_0_TO_1"} & set(int8["audit"]["float_ops"]), int8["audit"]["float_ops"]
    if name == "resnet":
        assert "1 padded MaxPool(s)" in rewritten and int8["audit"]["integer_share"] > 0.95
    if name == "mobilenet_v3":
        assert "HardSigmoid(s)" in rewritten


def test_nhwc_tflite_is_one_option_away_and_recorded(converted, exported_onnx, tmp_path):
    import torch

    model, _ = converted("resnet")
    data = torch_zoo.inputs_for("resnet", 60, seed=1)
    samples = [{"images": x[None]} for x in data["images"]]
    held_out = torch_zoo.inputs_for("resnet", HELD_OUT, seed=99)
    expected = torch_zoo.predict(model, held_out)
    nhwc = {"images": np.ascontiguousarray(held_out["images"].transpose(0, 2, 3, 1))}
    from_torch = edgekit.convert(model, "tflite-fp32,tflite-int8", example_inputs=torch.zeros(1, 3, 64, 64),
                                 calibration=samples, calib_size=48, channels_last=True, output_dir=tmp_path / "pt")
    from_onnx = edgekit.convert(exported_onnx("resnet"), "tflite-fp32", calibration=samples, calib_size=48,
                                channels_last=True, output_dir=tmp_path / "onnx")
    for result, floor in zip(from_torch + from_onnx, (0.9999, 0.98, 0.9999)):
        assert result.passed, result.report["failures"]
        assert result.report["options"]["channels_last_inputs"] == ["images"]
        assert result.report["recipe"]["layout"] == "nhwc"
        with edgekit.load(result.artifact) as runtime:
            assert runtime.inputs[0].shape == (1, 64, 64, 3)
        _, _, got = _outputs(result.artifact, "litert", nhwc)
        assert cosine(expected, got) >= floor, (result.target, cosine(expected, got))
    ops = edgekit.inspect_model(from_torch[0].artifact).audit.op_types
    assert "TRANSPOSE" not in ops, ops  # litert-torch folds the layout change into the convolutions


def test_an_output_layout_onnx2tf_changes_is_restored_and_reported(converted, exported_onnx, tmp_path):
    """onnx2tf drops the detector head's last Transpose ([1, 64, 7] came out [1, 7, 64]); edgekit appends a
    TRANSPOSE to the .tflite so its outputs are the ONNX model's, and says so."""
    model, _ = converted("yolo")
    data = torch_zoo.inputs_for("yolo", 60, seed=1)
    held_out = torch_zoo.inputs_for("yolo", HELD_OUT, seed=99)
    expected = torch_zoo.predict(model, held_out)
    results = edgekit.convert(exported_onnx("yolo"), "tflite-fp32,tflite-int8", output_dir=tmp_path, calib_size=48,
                              calibration=[{"images": x[None]} for x in data["images"]])
    for result, floor in zip(results, (0.9999, 0.999)):
        assert result.passed, result.report["failures"]
        assert result.report["options"]["output_layouts_restored"] == [
            "output 'output_0': onnx2tf wrote [1, 7, 64]; a TRANSPOSE [0, 2, 1] restores the ONNX model's [1, 64, 7]"]
        _, outputs, got = _outputs(result.artifact, "litert", held_out)
        assert outputs == ["output_0"] and got.shape == expected.shape
        assert cosine(expected, got) >= floor, (result.target, cosine(expected, got))
    assert results[1].report["audit"]["integer_share"] > 0.95


def test_an_output_onnx2tf_changes_beyond_a_permutation_is_refused(exported_onnx, tmp_path):
    import onnx
    from edgekit.converters._onnx2tf import convert_float, restore_output_layouts

    convert_float(exported_onnx("yolo"), tmp_path / "yolo.tflite", ["images"], tmp_path)
    other = onnx.load(str(exported_onnx("yolo")))  # the same head, negated: no axis order of the .tflite matches
    other.graph.node.append(onnx.helper.make_node("Neg", ["output_0"], ["negated"]))
    other.graph.output[0].name = "negated"
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(edgekit.ConversionError, match=r"onnx2tf changed output 'negated' from \[1, 64, 7\] to "
                                                      r"\[1, 7, 64\].*convert from the PyTorch model"):
        restore_output_layouts(tmp_path / "other.onnx", tmp_path / "yolo.tflite", [])


def test_a_float_tflite_made_by_the_tflite_converter_is_requantized_to_int8(converted, tmp_path):
    import zoo

    (tmp_path / "keras").mkdir()
    keras_model = zoo.build("resnet", tmp_path / "keras")
    data = zoo.inputs_for("resnet", 60, seed=1)
    np.savez(tmp_path / "calib.npz", **data)
    (float_result,) = edgekit.convert(keras_model, "tflite-fp32", output_dir=tmp_path / "float")
    assert float_result.report["options"]["route"] == "keras -> TFLite (TFLiteConverter, float32)"
    (result,) = edgekit.convert(float_result.artifact, "tflite-int8", calibration=tmp_path / "calib.npz",
                                calib_size=48, output_dir=tmp_path / "int8")
    assert result.passed, result.report["failures"]
    route = "float .tflite (the source itself) -> static_wi8_ai8 (ai-edge-quantizer)"
    assert result.report["options"]["route"] == route
    assert result.report["audit"]["integer_ops"] == result.report["audit"]["compute_ops"]
    held_out = zoo.inputs_for("resnet", HELD_OUT, seed=99)
    _, _, expected = _outputs(float_result.artifact, "litert", held_out)
    _, _, got = _outputs(result.artifact, "litert", held_out)
    assert cosine(expected, got) >= 0.98
    with pytest.raises(edgekit.UnsupportedModelError, match="already quantized"):
        edgekit.convert(result.artifact, "tflite-int16x8", calibration=tmp_path / "calib.npz",
                        output_dir=tmp_path / "again")


def test_a_pt2_file_converts_from_the_command_line(tmp_path):
    import torch

    model, example = torch_zoo.build("resnet")
    torch.export.save(torch.export.export(model, (), kwargs=example), tmp_path / "resnet.pt2")
    done = subprocess.run([EDGEKIT, "convert", str(tmp_path / "resnet.pt2"),
                           "--to", "onnx-fp32,tflite-fp32,openvino-fp32", "-o", str(tmp_path / "out"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    reports = json.loads(done.stdout)
    assert [r["status"] for r in reports] == ["ok"] * 3
    data = torch_zoo.inputs_for("resnet", 4, seed=99)
    expected = torch_zoo.predict(model, data)
    for name, engine in (("resnet_fp32.onnx", "onnxruntime"), ("resnet_fp32.tflite", "litert"),
                         ("resnet_fp32.xml", "openvino")):
        inputs, _, got = _outputs(tmp_path / "out" / name, engine, data)
        assert inputs == ["images"] and cosine(expected, got) >= 0.9999


def test_engines_chatter_stays_out_of_the_terminal_and_in_the_report(tmp_path):
    """An encoder .pt2 to int8 from the command line, no options: torch's exporter ("torchvision is not
    installed", per op), ONNX Runtime's quantizer on the root logger ("Axis 1 is out-of-range" per LayerNorm),
    TensorFlow's and LiteRT's native logs and Python warnings stay off stderr; what the engines logged is kept in
    the report. stderr holds edgekit's own lines only."""
    import torch

    model, example = torch_zoo.build("encoder")
    torch.export.save(torch.export.export(model, (), kwargs=example), tmp_path / "encoder.pt2")
    np.savez(tmp_path / "calib.npz", **torch_zoo.inputs_for("encoder", 48, seed=1))
    done = subprocess.run([EDGEKIT, "convert", str(tmp_path / "encoder.pt2"), "--to", "onnx-int8,tflite-int8",
                           "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["status"] for r in json.loads(done.stdout)] == ["ok", "ok"]
    edgekit_lines = ("WARNING edgekit:", "calibrating ", "validating ", "converting ")
    foreign = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(edgekit_lines)]
    assert not foreign, foreign
    said = json.loads((tmp_path / "out" / "encoder_int8.onnx.json").read_text())["engine_messages"]
    assert any(m.startswith("warning root: Axis 1 is out-of-range for weight") for m in said), said


def test_pytorch_mistakes_get_one_line_errors_before_any_work(tmp_path):
    import torch

    model, example = torch_zoo.build("resnet")
    with pytest.raises(edgekit.ConversionError, match="needs example_inputs="):
        edgekit.convert(model, "onnx-fp32", output_dir=tmp_path)
    with pytest.raises(edgekit.ConversionError, match=r"example_inputs names \['pixels'\], but forward\(\) takes "
                                                      r"\['images'\]"):
        edgekit.convert(model, "onnx-fp32", example_inputs={"pixels": example["images"]}, output_dir=tmp_path)
    with pytest.raises(edgekit.ConversionError, match="the model fails on its example inputs: RuntimeError"):
        edgekit.convert(model, "onnx-fp32", example_inputs=torch.zeros(1, 5, 64, 64), output_dir=tmp_path)
    with pytest.raises(edgekit.ConversionError, match="output_names gives 2 name"):
        edgekit.convert(model, "onnx-fp32", example_inputs=example, output_names=["a", "b"], output_dir=tmp_path)
    (tmp_path / "broken.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(edgekit.UnsupportedModelError, match="broken.pt2' is not a .pt2 archive"):
        edgekit.convert(tmp_path / "broken.pt2", "onnx-fp32", output_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt2"]


def test_onnx_to_tflite_needs_static_shapes_and_its_environment_before_any_work(exported_onnx, tmp_path):
    import onnx

    model = onnx.load(str(exported_onnx("resnet")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    with pytest.raises(edgekit.ConversionError, match=r"input 'images' has a dynamic batch: pass input_shapes="
                                                      r"\{'images': \(1, 3, 64, 64\)\}"):
        edgekit.convert(tmp_path / "dynamic.onnx", "onnx-fp32,tflite-fp32", output_dir=tmp_path / "out")
    done = subprocess.run([EDGEKIT, "convert", str(exported_onnx("resnet")), "--to",
                           "tflite-fp32", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "EDGEKIT_ONNX2TF": str(tmp_path / "nowhere")})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: EDGEKIT_ONNX2TF={tmp_path / 'nowhere'} is not a python "
                                                "interpreter or a venv folder"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_tflite_sensitivity_ranking_and_the_remedies_it_drives(converted, tmp_path):
    """The per-op ranking (float vs int8 .tflite, every intermediate tensor kept) names real ops, worst first;
    keeping the worst ops float is one option (``exclude_nodes``); and the TFLite remedies offer it after the
    output head, before 16x8, laid out as the pipeline lays out its attempts."""
    import shutil
    from itertools import islice

    from edgekit.converters._sensitivity import rank_nodes
    from edgekit.converters._tflite import remedies

    model, results = converted("mobilenet_v3")
    data = torch_zoo.inputs_for("mobilenet_v3", 16, seed=1)
    samples = [{"images": x[None]} for x in data["images"]]
    float_path, int8_path = results["tflite-fp32"].artifact, results["tflite-int8"].artifact
    ranking = rank_nodes(float_path, int8_path, samples, tmp_path)
    assert len(ranking) > 20 and ranking == sorted(ranking, key=lambda r: -r["added_noise"])
    # hard-swish stays float in tflite-int8 (XNNPACK has no int8 kernel for it), so only int8 ops are ranked
    assert "HARD_SWISH" in results["tflite-int8"].report["options"]["kept_float_for_engine"]
    assert {r["op_type"] for r in ranking} >= {"CONV_2D", "DEPTHWISE_CONV_2D"} and \
        "HARD_SWISH" not in {r["op_type"] for r in ranking}
    worst = tuple(r["node"] for r in ranking[:2])
    import torch

    def floats(**options):
        (kept,) = edgekit.convert(model, "tflite-int8", example_inputs=torch.from_numpy(samples[0]["images"]),
                                  calibration=samples, calib_size=12, repair=False, output_dir=tmp_path / "kept",
                                  force=True, **options)
        return kept.report, sum(kept.report["audit"]["float_ops"].values())

    # every tensor name carries the wrapper module's path (…_Named.wrap.<locals>.Named;26): keeping one op
    # float keeps exactly that one (it once matched them all and left a 0 %-integer "int8" model "ok")
    _, default = floats()
    kept, one = floats(exclude_nodes=worst[:1])
    assert kept["options"]["excluded_nodes"] == list(worst[:1]) and one == default + 1
    assert floats(exclude_nodes=worst)[1] == default + 2
    staging = tmp_path / "staging"  # attempt 0 = the default, attempt 1 = the output head in float
    (staging / "tflite-int8-attempt-1" / ".m_int8.tflite-work").mkdir(parents=True)
    (staging / "tflite-int8-attempt-0").mkdir()
    shutil.copyfile(int8_path, staging / "tflite-int8-attempt-0" / "m_int8.tflite")
    shutil.copyfile(int8_path, staging / "tflite-int8-attempt-1" / "m_int8.tflite")
    shutil.copyfile(float_path, staging / "tflite-int8-attempt-1" / ".m_int8.tflite-work" / "float32.tflite")
    offered = list(remedies(staging / "tflite-int8-attempt-0" / "m_int8.tflite", lambda: islice(samples, 16)))
    labels = [label for label, _, _ in offered]
    assert labels[0] == "outputs in float" and labels[-1] == "int16 activations, int8 weights (16x8)"
    assert labels[1:4] == [f"outputs and the {k} most sensitive op(s) in float" for k in (1, 2, 4)]
    assert offered[2][1]["exclude_nodes"] == worst and offered[2][2] == ranking


def test_onnx_int8_runs_mobilenet_v3s_gates_in_int8_kernels(converted, tmp_path):
    """ONNX Runtime has no int8 HardSigmoid: quantized as exported, each of MobileNetV3's x*hardsigmoid(x) and
    squeeze-excite gates (and their ReduceMean pooling) runs in float between a DequantizeLinear and a
    QuantizeLinear (measured at 160x160: int8 0.43-0.55x float), and keeping them in float with their
    convolutions would leave 36 % of the weights in integer. edgekit rewrites them exactly into ops ORT runs in
    int8 (``_ort_rewrite``): nothing is left in float, and the model agrees with its float self as well as ORT's
    quantizer's own output does."""
    from edgekit.converters._ort_placement import ops_run_in_float

    model, results = converted("mobilenet_v3")
    placed = results["onnx-int8"]
    options = placed.report["options"]
    assert options["int8_placement"] == "engine" and "float_islands" not in options
    pools, folded, shifted = options["rewritten_before_quantization"]
    assert pools.startswith("4 ReduceMean(s)") and folded.startswith("3 HardSigmoid gate(s) folded")
    assert shifted.startswith("13 hard-swish gate(s)")
    assert ops_run_in_float(placed.artifact, tmp_path) == {} and placed.report["audit"]["integer_share"] > 0.9
    data = torch_zoo.inputs_for("mobilenet_v3", 80, seed=1)
    samples = [{k: v[i : i + 1] for k, v in data.items()} for i in range(80)]
    (everywhere,) = edgekit.convert(model, "onnx-int8", example_inputs=torch_zoo.build("mobilenet_v3")[1],
                                    calibration=samples, calib_size=64, validation_size=16, name="mobilenet_v3",
                                    output_dir=tmp_path / "everywhere", repair=False, int8_placement="everywhere")
    assert everywhere.report["options"]["int8_placement"] == "everywhere"
    assert "rewritten_before_quantization" not in everywhere.report["options"]
    assert list(ops_run_in_float(everywhere.artifact, tmp_path).values()).count("HardSigmoid") >= 10
    rewritten_db, as_exported_db = (r.report["validation"]["outputs"]["output_0"]["sqnr_db_median_sample"]
                                    for r in (placed, everywhere))
    assert rewritten_db >= 12 and abs(rewritten_db - as_exported_db) < 3
    assert placed.report["validation"]["top1_agreement"] >= 90
    resnet = converted("resnet")[1]["onnx-int8"].report["options"]  # no gate; its head's mean is a pool
    assert resnet["rewritten_before_quantization"] == [
        "1 ReduceMean(s) over height and width as GlobalAveragePool (ONNX Runtime has no int8 ReduceMean)"]


def test_a_torchvision_style_mobilenet_v2_pt2_becomes_an_integer_tflite_int8_that_agrees(tmp_path):
    """Issue 29's first finding, on the architecture it named: a MobileNetV2 .pt2 to tflite-int8 with defaults
    came out "ok" with 0 of 70 ops integer (a remedy's op name matched every op). Now: integer, and it agrees
    with the PyTorch model on held-out digits (trained 4 epochs: 97 % held-out)."""
    import torch

    model, example = torch_zoo.build("mobilenet_v2")
    torch.export.save(torch.export.export(model, (), kwargs=example), tmp_path / "mobilenet_v2.pt2")
    np.savez(tmp_path / "calib.npz", **torch_zoo.inputs_for("mobilenet_v2", 80, seed=1))
    (result,) = edgekit.convert(tmp_path / "mobilenet_v2.pt2", "tflite-int8", calibration=tmp_path / "calib.npz",
                                calib_size=64, validation_size=16, output_dir=tmp_path / "out")
    assert result.passed, result.report["failures"]
    audit = result.report["audit"]
    assert audit["integer_share"] == 1.0 and audit["fully_integer"], audit
    held_out = torch_zoo.inputs_for("mobilenet_v2", 40, seed=99)
    _, _, got = _outputs(result.artifact, "litert", held_out)
    expected = torch_zoo.predict(model, held_out)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95
    assert cosine(expected, got) >= 0.97  # measured 0.998 (families benchmark: 0.985 min per sample)
