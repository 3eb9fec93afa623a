"""int8 that keeps the model's answers: every common output shape is judged by the decision it carries, a
collapse is never "ok" by default, and the pipeline repairs it with the target's remedies.

The metrics run on fixtures with known answers; the pipeline on a detector head built to collapse (pixel
boxes and 0-1 scores concatenated into one tensor: one int8 scale cannot serve both)."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit.pipeline.validation import DECISION_FLOOR, judge, sqnr_db, validate

RNG = np.random.default_rng(0)


def test_sequence_agreement_ignores_the_background_class():
    """CTC-style [N, T, C]: mostly blank (class 0); a reader that lost every character still agrees on the
    blanks, which must not count."""
    ref = np.zeros((4, 40, 6), np.float32)
    ref[..., 0] = 1.0
    ref[:, ::8, 0], ref[:, ::8, 3] = 0.0, 1.0  # five characters per line
    lost = np.zeros_like(ref)
    lost[..., 0] = 1.0
    verdict = judge(ref, lost)
    assert verdict.kind == "sequence-ctc" and verdict.agreement == 0.0
    assert judge(ref, ref.copy()).agreement == 1.0
    one_wrong = ref.copy()
    one_wrong[0, 8, 3], one_wrong[0, 8, 4] = 0.0, 1.0  # one character of the first line misread
    assert judge(ref, one_wrong).agreement == 0.75  # that line is wrong; the other three read the same


def test_token_tags_are_judged_per_position():
    ref = np.zeros((2, 10, 4), np.float32)
    ref[..., 1] = 1.0  # no dominant background: every position carries a tag
    ref[:, ::2, 1], ref[:, ::2, 2] = 0.0, 1.0
    cand = ref.copy()
    cand[0, 0] = [0, 0, 0, 1]
    verdict = judge(ref, cand)
    # tag 1 is the most frequent: the 10 positions where both models say 1 are left out; 1 of the other 10 differs
    assert verdict.kind == "sequence" and verdict.agreement == pytest.approx(9 / 10)


def test_dense_per_pixel_argmax_in_either_layout():
    ref = RNG.random((2, 3, 16, 16)).astype(np.float32)
    cand = ref.copy()
    cand[:, :, :8] = cand[:, ::-1, :8]  # half the pixels change class
    nchw = judge(ref, cand)
    assert nchw.kind == "dense" and "[N, C, H, W]" in nchw.why and 0.3 < nchw.agreement < 0.8
    nhwc = judge(ref.transpose(0, 2, 3, 1), cand.transpose(0, 2, 3, 1))
    assert nhwc.kind == "dense" and "[N, H, W, C]" in nhwc.why and nhwc.agreement == pytest.approx(nchw.agreement)


def test_probability_map_overlap():
    ref = np.zeros((1, 1, 32, 32), np.float32)
    ref[..., 8:16, 4:28] = 0.9  # a text region
    empty = ref * 0.4  # every pixel now below 0.5: "detects nothing"
    verdict = judge(ref, empty)
    assert verdict.kind == "probability-map" and verdict.agreement == 0.0


def _detections(count: int) -> np.ndarray:
    boxes = RNG.uniform(20, 620, (1, count, 4)).astype(np.float32)
    scores = RNG.uniform(0, 0.1, (1, count, 3)).astype(np.float32)
    scores[0, ::5, 1] = 0.9  # every fifth anchor holds a confident object of class 1
    return np.concatenate([boxes, scores], axis=2)


def test_detector_decisions_in_both_layouts():
    ref = _detections(100)
    scores_lost = ref.copy()
    scores_lost[..., 4:] = 0.0  # what one int8 scale for 0-640 and 0-1 does to the scores
    assert sqnr_db(ref, scores_lost) > 30  # the raw tensor looks excellent...
    verdict = judge(ref, scores_lost)
    assert verdict.kind == "detector" and verdict.agreement == 0.0  # ...and nothing is detected
    moved = ref.copy()
    moved[..., :2] += 300  # same scores, boxes elsewhere
    assert judge(ref, moved).agreement == 0.0
    transposed = judge(ref.transpose(0, 2, 1), ref.transpose(0, 2, 1).copy())
    assert transposed.kind == "detector" and "anchors]" in transposed.why and transposed.agreement == 1.0


def test_classifier_near_ties_are_no_decision():
    ties = np.tile(np.array([2.0, 1.99, -2.0, 0.5], np.float32), (8, 1))  # top-1 ahead by 0.01 of a range of 4
    assert judge(ties, ties[:, [1, 0, 2, 3]].copy()).agreement is None
    clear = np.eye(12, dtype=np.float32)
    assert judge(clear, clear[:, ::-1].copy()).agreement == 0.0


def test_a_few_decided_samples_are_too_few_to_call_a_collapse():
    """A random-weight 1000-class net on 12 validation samples: its logits are near-ties but for 2 samples, and
    one of those flipping read as "keeps 50 % of the decisions", a collapse (so the repair kept the whole graph
    float). Below MIN_DECISIONS decided samples the judgement says so and SQNR judges; at MIN_DECISIONS a
    real collapse is still one."""
    from edgekit.pipeline.validation import MIN_DECISIONS

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 0.01, (12, 1000)).astype(np.float32)
    ref[:2, :2] = [[5.0, 4.7], [4.7, 5.0]]  # two decided (by 0.3, over 5 % of the range), ten near-ties
    flipped = ref.copy()
    flipped[0, 1] = 5.05  # quantization noise of 0.35 on one logit flips one of them
    verdict = judge(ref, flipped)
    assert verdict.agreement is None and "only 2 of 12" in verdict.note and "(validation_size)" in verdict.note
    report = validate(_Fixed([ref]), _Fixed([flipped]), [type("S", (), {"feeds": {}, "label": None})()])
    assert not report.collapsed and report.notes and "too few to judge" in report.notes[0]
    many = np.eye(MIN_DECISIONS, dtype=np.float32) * 5
    assert judge(many, many[:, ::-1].copy()).agreement == 0.0


def test_a_few_samples_outside_the_calibrated_range_do_not_make_a_collapse():
    """SQNR over all samples at once is ruled by the samples with the largest outputs: a fine-tuned torchvision
    EfficientNet-B0 gave logits of 50-475 on 3 of 200 held-out digits (the rest under 12), and its int8 read
    0.4 dB over all samples at 26.8 dB per sample (median) with 97.5 % of the decisions kept. The median over
    samples judges; a collapse, which breaks most samples, still falls below the floor."""
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 3, (20, 10)).astype(np.float32)
    ref[:3] *= 40  # three outlying samples
    close = ref + rng.normal(0, 0.1, ref.shape).astype(np.float32)
    close[:3] = np.clip(close[:3], -12, 12)  # int8 cannot reach them: clipped at the calibrated range
    samples = [type("S", (), {"feeds": {}, "label": None})()]
    report = validate(_Fixed([ref]), _Fixed([close]), samples)
    metrics = report.outputs["y"]
    assert metrics["sqnr_db"] < 3 and metrics["sqnr_db_median_sample"] > 25, metrics
    assert not any("SQNR" in c for c in report.collapsed), report.collapsed
    broken = ref + rng.normal(0, 3, ref.shape).astype(np.float32)  # every sample as noisy as it is loud
    lost = validate(_Fixed([ref]), _Fixed([broken]), samples)
    assert any("the median over samples" in c for c in lost.collapsed), lost.collapsed


class _Fixed:
    """A stand-in runtime returning fixed outputs in turn (validate only needs .outputs and .run)."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = (type("Spec", (), {"name": "y"})(),)
        self._outputs = iter(outputs)

    def run(self, feeds):
        return {"y": next(self._outputs)}


def test_a_collapse_fails_by_default_and_is_recorded_when_accepted():
    ref = [_detections(50) for _ in range(4)]
    lost = [np.concatenate([r[..., :4], np.zeros_like(r[..., 4:])], axis=2) for r in ref]
    samples = [type("Sample", (), {"feeds": {}, "label": None})() for _ in range(4)]
    failed = validate(_Fixed(ref), _Fixed(lost), samples)
    assert not failed.passed and "collapsed" in failed.failures[0] and "detector" in failed.failures[0]
    assert failed.outputs["y"]["judged_by"] == "detector" and failed.outputs["y"]["decision_agreement"] == 0.0
    accepted = validate(_Fixed(ref), _Fixed(lost), samples, accept_loss=True)
    assert accepted.passed and accepted.collapsed and failed.floors["decision_agreement"] == DECISION_FLOOR


def test_outputs_that_vanish_on_an_fp16_accelerator_fail_and_say_why():
    """A random-weight net's logits of ~1e-10 came back all zero from LiteRT's GPU accelerator (fp16 flushes them):
    validation of that run against the CPU's must fail, naming the precision, not call it fine."""
    rng = np.random.default_rng(5)
    ref = [rng.normal(0, 1e-10, (1, 10)).astype(np.float32) for _ in range(8)]
    gpu = _Fixed([np.zeros((1, 10), np.float32) for _ in range(8)])
    gpu.precision = "f16"
    samples = [type("Sample", (), {"feeds": {}, "label": None})() for _ in range(8)]
    report = validate(_Fixed(ref), gpu, samples)
    assert not report.passed
    (degenerate,) = report.degenerate
    assert "all zeros where the float model's are not" in degenerate and "f16 arithmetic flushes" in degenerate
    assert "largest value is 2" in degenerate and "e-10" in degenerate
    int8 = validate(_Fixed(ref), _Fixed([np.zeros((1, 10), np.float32) for _ in range(8)]), samples)
    assert "stuck at its zero point" in int8.degenerate[0]


def test_the_applications_own_decisions_judge_what_no_output_shape_shows():
    """An embedding ([N, 1, 1, 96]: no decision to read) whose small error flips the decisions a later model
    makes: cosine is near 1 and SQNR good, yet ``decide`` sees a third of the decisions change."""
    rng = np.random.default_rng(3)
    ref = [rng.normal(0, 1, (1, 1, 1, 96)).astype(np.float32) for _ in range(12)]
    for r in ref[::2]:
        r[..., 0] = 0.02  # a decision the float model only just makes: noise may flip it
    near = [r + rng.normal(0, 0.05, r.shape).astype(np.float32) for r in ref]
    flipped = [r.copy() for r in ref]
    for f in flipped[1:9:2]:
        f[..., 0] = -f[..., 0]

    def decide(outputs):  # e.g. a head firing on the embedding's first component, one decision per sample
        return outputs["y"][:, 0, 0, 0] > 0.0

    samples = [type("Sample", (), {"feeds": {}, "label": None})() for _ in range(12)]
    plain = validate(_Fixed(ref), _Fixed(flipped), samples)
    assert plain.passed and plain.outputs["y"]["judged_by"] == "tensor" and plain.outputs["y"]["sqnr_db"] > 14
    judged = validate(_Fixed(ref), _Fixed(flipped), samples, decide=decide)
    assert judged.decisions["count"] == 12 and judged.decisions["agreement"] == pytest.approx(8 / 12)
    assert not judged.passed and "decide() " in judged.failures[0] and "67%" in judged.failures[0]
    assert judged.drop == pytest.approx(100 * 4 / 12) and judged.drop_basis.startswith("decisions changed")
    budget = validate(_Fixed(ref), _Fixed(flipped), samples, decide=decide, max_drop=20, accept_loss=True)
    assert budget.over_budget and "exceeds max_drop 20 (decisions changed" in budget.failures[-1]
    kept = validate(_Fixed(ref), _Fixed(near), samples, decide=decide)
    same = np.mean([(r[..., 0] > 0) == (n[..., 0] > 0) for r, n in zip(ref, near)])
    assert kept.decisions["agreement"] == pytest.approx(same) and kept.passed == (same >= DECISION_FLOOR)
    calls = iter([np.zeros(12), np.zeros(3)])
    with pytest.raises(edgekit.ConversionError, match=r"decide\(\) .* shape \[12\] .* \[3\]"):
        validate(_Fixed(ref), _Fixed(near), samples, decide=lambda outputs: next(calls))


def _detector_head(path):
    """A conv feature map read out by two 1x1 convs: boxes (sigmoid x 640) and class scores (sigmoid),
    concatenated into [N, anchors, 4 + 3] as YOLO exports do."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = {"w": rng.normal(0, 0.5, (8, 3, 3, 3)), "wb": rng.normal(0, 0.5, (4, 8, 1, 1)),
               "ws": rng.normal(0, 1.0, (3, 8, 1, 1)), "scale": np.array(640.0), "shape": np.array([1, -1, 64])}
    inits = [numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["f"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["r"]),
        helper.make_node("Conv", ["r", "wb"], ["b"]), helper.make_node("Sigmoid", ["b"], ["bs"]),
        helper.make_node("Mul", ["bs", "scale"], ["bp"]), helper.make_node("Reshape", ["bp", "shape"], ["bf"]),
        helper.make_node("Conv", ["r", "ws"], ["s"]), helper.make_node("Sigmoid", ["s"], ["ss"]),
        helper.make_node("Reshape", ["ss", "shape"], ["sf"]),
        helper.make_node("Concat", ["bf", "sf"], ["cat"], axis=1),
        helper.make_node("Transpose", ["cat"], ["detections"], perm=[0, 2, 1]),
    ]
    return _save_onnx(path, nodes, ("images", [1, 3, 8, 8]), ("detections", [1, 64, 7]), inits)


def _save_onnx(path, nodes, model_input, model_output, initializers):
    """An opset-17 model of ``nodes`` with one float input and output, each given as (name, shape)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, path.stem,
                              [helper.make_tensor_value_info(model_input[0], TensorProto.FLOAT, model_input[1])],
                              [helper.make_tensor_value_info(model_output[0], TensorProto.FLOAT, model_output[1])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.onnxruntime
def test_a_detector_head_built_to_collapse_is_caught_and_repaired(tmp_path):
    model = _detector_head(tmp_path / "head.onnx")
    np.save(tmp_path / "calib.npy", np.random.default_rng(2).random((60, 1, 3, 8, 8), np.float32)[:, 0])
    (result,) = edgekit.convert(model, "onnx-int8", calibration=tmp_path / "calib.npy", calib_size=40,
                                validation_size=20, output_dir=tmp_path / "out")
    repair = result.report["repair"]
    assert repair and repair["attempts"][0]["remedy"] == "default" and repair["attempts"][0]["collapsed"]
    assert result.passed and repair["chosen"], repair
    assert result.report["options"]["excluded_nodes"], "the report lists what was kept in float"
    assert result.validation["outputs"]["detections"]["judged_by"] == "detector"
    assert result.validation["outputs"]["detections"]["decision_agreement"] >= DECISION_FLOOR
    (plain,) = edgekit.convert(model, "onnx-int8", calibration=tmp_path / "calib.npy", calib_size=40,
                               validation_size=20, output_dir=tmp_path / "plain", repair=False)
    assert not plain.passed and "collapsed" in plain.report["failures"][0]


def _outlier_net(path, conv3=True):
    """conv1's channel 0 spans a range 400 times the others'; conv2 reads only the others. One per-tensor int8
    scale at conv2's input wipes them out: neither the output head in float nor asymmetric ranges help, keeping
    conv2 float does. conv3 holds most of the weights, so conv2 and the head in float leave the model mostly
    integer (without conv3 they would make the "int8" model mostly float, which no remedy may). Global average
    pool and a fully connected layer give 10 classes."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.5, (8, 3, 3, 3)), rng.normal(0, 0.5, (16, 8, 3, 3))
    w1[0] *= 400
    w2[:, 0] = 0
    weights = {"w1": w1, "w2": w2}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    features, last = 16, "r2"
    if conv3:
        weights["w3"], features, last = rng.normal(0, 0.1, (32, 16, 3, 3)), 32, "r3"
        nodes += [helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
                  helper.make_node("Relu", ["c3"], ["r3"], name="relu3")]
    weights["wf"] = rng.normal(0, 0.5, (10, features))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="pool"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1, name="fc")]
    return _save_onnx(path, nodes, ("x", [1, 3, 16, 16]), ("logits", [1, 10]),
                      [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])


@pytest.mark.openvino
def test_an_openvino_collapse_is_repaired_by_the_layer_its_ranking_puts_first(tmp_path):
    """OpenVINO's ranking (every layer's output of NNCF's int8 IR against the float IR NNCF was given) puts
    conv2 first, by the noise power it adds, not conv1 (whose exact input made a dB difference look worst);
    the repair tries the cheap remedies, then keeps conv2 float, and the report's table says so."""
    from edgekit.pipeline.conversion import sensitivity_ranking

    model = _outlier_net(tmp_path / "outliers.onnx")
    np.save(tmp_path / "calib.npy", np.random.default_rng(2).normal(0, 1, (80, 3, 16, 16)).astype(np.float32))
    ranking = sensitivity_ranking(model, "openvino-int8", calibration=tmp_path / "calib.npy", calib_size=48,
                                  validation_size=32, work_dir=tmp_path / "rank")
    assert ranking[0]["node"] == "conv2" and ranking[0]["added_noise"] > 0.5
    assert {r["node"] for r in ranking} >= {"conv1", "conv2"}
    (result,) = edgekit.convert(model, "openvino-int8", calibration=tmp_path / "calib.npy", calib_size=48,
                                validation_size=32, output_dir=tmp_path / "out")
    repair = result.report["repair"]
    assert [a["remedy"] for a in repair["attempts"]] == [
        "default", "outputs in float", "outputs in float, mixed preset (asymmetric activations)",
        "outputs and the 1 most sensitive layer(s) in float"]
    assert all(a["collapsed"] for a in repair["attempts"][:3]) and not repair["attempts"][3]["collapsed"]
    assert result.passed and repair["chosen"] == repair["attempts"][3]["remedy"]
    assert repair["sensitivity"][0] == {**ranking[0], "kept_in_float": True}
    assert "conv2" in result.report["options"]["ignored_scope"]["names"]
    assert result.validation["outputs"]["logits"]["decision_agreement"] >= DECISION_FLOOR


@pytest.mark.openvino
def test_a_repair_never_makes_an_int8_artifact_mostly_float(tmp_path):
    """Without conv3, the remedy that keeps the outlier net's decisions (conv2 and the head in float) leaves 15 %
    of its weights in integer: an "-int8" artifact in name only. The repair rejects it, saying why; the artifact
    fails and is kept aside under failed/, nothing under the name a good one would have."""
    model = _outlier_net(tmp_path / "outliers.onnx", conv3=False)
    np.save(tmp_path / "calib.npy", np.random.default_rng(2).normal(0, 1, (80, 3, 16, 16)).astype(np.float32))
    (result,) = edgekit.convert(model, "openvino-int8", calibration=tmp_path / "calib.npy", calib_size=48,
                                validation_size=32, output_dir=tmp_path / "out")
    attempts = result.report["repair"]["attempts"]
    held = [a for a in attempts if "collapsed" in a and not a["collapsed"]]
    assert held and all(a["not_integer"] and a["integer_share"] < 0.5 for a in held)
    assert "mostly float" in held[0]["not_integer"] and "conv/matmul/fully-connected" in held[0]["not_integer"]
    assert not result.passed and result.report["repair"]["chosen"] is None
    assert result.artifact == tmp_path / "out" / "failed" / "outliers_int8.xml"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["failed"]


@pytest.mark.tensorflow
@pytest.mark.litert
def test_a_tflite_detector_collapse_is_repaired_by_keeping_its_head_in_float(tmp_path):
    """The YOLO-style head of tests/models/zoo.py: TFLite's full int8 gives boxes and scores one scale and
    detects nothing. The cheapest remedy keeps the ops computing the output (the concat, back to the sigmoid
    and the scaling) in float, int8 elsewhere; 16x8 (int16 activations, which XNNPACK runs far slower) also
    keeps the detections when asked for. Each attempt's latency is recorded."""
    import zoo

    model = zoo.build("yolo", tmp_path)
    np.savez(tmp_path / "calib.npz", **zoo.inputs_for("yolo", 48, seed=1))
    (result,) = edgekit.convert(model, "tflite-int8", calibration=tmp_path / "calib.npz", calib_size=32,
                                validation_size=16, output_dir=tmp_path / "out")
    default, repaired = result.report["repair"]["attempts"]
    assert default["collapsed"] and not repaired["collapsed"] and result.passed
    assert result.report["repair"]["chosen"] == repaired["remedy"] == "outputs in float"
    assert result.report["options"]["kept_float_outputs"], "the report lists what was kept in float"
    assert "CONCATENATION" in result.report["audit"]["float_ops"]
    assert default["latency_ms"] > 0 and repaired["latency_ms"] > 0
    assert result.validation["outputs"]["detections"]["decision_agreement"] >= DECISION_FLOOR
    (wide,) = edgekit.convert(model, "tflite-int8", calibration=tmp_path / "calib.npz", calib_size=32,
                              validation_size=16, output_dir=tmp_path / "16x8", activations="int16", repair=False)
    assert wide.passed and wide.report["options"]["activations"].startswith("int16")
    assert wide.validation["outputs"]["detections"]["decision_agreement"] >= DECISION_FLOOR


@pytest.mark.tensorflow
@pytest.mark.litert
def test_a_remedy_slower_than_float_is_not_kept(tmp_path, monkeypatch):
    """16x8 keeps the detector's detections but runs LiteRT's reference kernels, many times slower than the
    float model on this CPU: an "-int8" artifact slower than float is a bug, not a repair. With 16x8 as the only
    remedy, the repair refuses it (both times in the report), the artifact fails with the reason and the way to
    ask for that form by name, and nothing is published under the int8 name."""
    import importlib

    import zoo

    # by path: the package's own helper named _tflite shadows the module until something imports it
    tflite_converter = importlib.import_module("edgekit.converters._tflite")

    def only_16x8(first, samples):
        yield "int16 activations, int8 weights (16x8)", {"activations": "int16"}, None

    monkeypatch.setattr(tflite_converter, "remedies", only_16x8)
    model = zoo.build("yolo", tmp_path)
    np.savez(tmp_path / "calib.npz", **zoo.inputs_for("yolo", 48, seed=1))
    (result,) = edgekit.convert(model, "tflite-int8", calibration=tmp_path / "calib.npz", calib_size=32,
                                validation_size=16, output_dir=tmp_path / "out")
    default, wide = result.report["repair"]["attempts"]
    assert default["collapsed"] and not wide["collapsed"], "16x8 holds the detections"
    assert wide["slower_than_float"].startswith("runs 0.") and wide["latency_ms"] > default["latency_ms"]
    assert not result.passed and result.report["repair"]["chosen"] is None
    assert any("16x8" in f and "float sibling" in f and "tflite-int16x8" in f
               for f in result.report["failures"]), result.report["failures"]
    assert result.artifact.parent.name == "failed"
    assert not list((tmp_path / "out").glob("*.tflite"))
