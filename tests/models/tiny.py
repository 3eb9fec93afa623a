"""The tiny model every runtime test runs, in each of its forms.

One two-layer classifier (16 features -> 8 hidden ReLU -> 4-way softmax) with
seeded weights. The ONNX forms are built here with ``onnx.helper``; the
TFLite forms are made from the same weights by ``build_tflite.py`` (TensorFlow)
and checked in, so the runtime tests need no TensorFlow. All forms name their
input ``input`` and their output ``output`` and take a dynamic batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FEATURES, HIDDEN, CLASSES = 16, 8, 4
INPUT_NAME, OUTPUT_NAME = "input", "output"

# Quantization of the int8-I/O ONNX form: inputs live in [-1, 1], the softmax
# output in [0, 1) (the TFLite converter picks the same output scale).
INPUT_SCALE, INPUT_ZERO_POINT = 1.0 / 127.0, 0
OUTPUT_SCALE, OUTPUT_ZERO_POINT = 1.0 / 256.0, -128


def weights() -> dict[str, np.ndarray]:
    """The model's parameters; seeded so every form gets the same numbers."""
    rng = np.random.default_rng(20261123)
    return {
        "w1": rng.normal(0, 0.5, (FEATURES, HIDDEN)).astype(np.float32),
        "b1": rng.normal(0, 0.1, (HIDDEN,)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (HIDDEN, CLASSES)).astype(np.float32),
        "b2": rng.normal(0, 0.1, (CLASSES,)).astype(np.float32),
    }


def sample_inputs(count: int, seed: int = 0) -> np.ndarray:
    """Inputs in the range the model was calibrated for, [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (count, FEATURES)).astype(np.float32)


def reference_output(x: np.ndarray) -> np.ndarray:
    """The float model computed in numpy: the ground truth for every form."""
    w = weights()
    hidden = np.maximum(x @ w["w1"] + w["b1"], 0)
    logits = hidden @ w["w2"] + w["b2"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def save_with_external_data(folder: Path, location: str | None = None) -> Path:
    """Save the float ONNX form with its weights in 'weights.bin' beside it, then (to stage hostile
    files) point every external-data reference at ``location`` instead."""
    import onnx

    path = folder / "ext.onnx"
    onnx.save(make_onnx(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    if location is not None:
        model = onnx.load(path, load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, path)
    return path


def make_onnx(*, int8_io: bool = False, opset: int = 17):
    """Build the ONNX form; with ``int8_io`` the input and output are int8 tensors
    wrapped in DequantizeLinear / QuantizeLinear, the way a fully quantized
    export looks to a runtime."""
    from onnx import TensorProto, helper, numpy_helper

    w = weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = []
    first = INPUT_NAME
    if int8_io:
        inits += [
            numpy_helper.from_array(np.array(INPUT_SCALE, np.float32), "in_scale"),
            numpy_helper.from_array(np.array(INPUT_ZERO_POINT, np.int8), "in_zp"),
            numpy_helper.from_array(np.array(OUTPUT_SCALE, np.float32), "out_scale"),
            numpy_helper.from_array(np.array(OUTPUT_ZERO_POINT, np.int8), "out_zp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", [INPUT_NAME, "in_scale", "in_zp"], ["x_f"]))
        first = "x_f"
    nodes += [
        helper.make_node("MatMul", [first, "w1"], ["mm1"]),
        helper.make_node("Add", ["mm1", "b1"], ["add1"]),
        helper.make_node("Relu", ["add1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["mm2"]),
        helper.make_node("Add", ["mm2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs" if int8_io else OUTPUT_NAME], axis=-1),
    ]
    io_type = TensorProto.FLOAT
    if int8_io:
        nodes.append(helper.make_node("QuantizeLinear", ["probs", "out_scale", "out_zp"], [OUTPUT_NAME]))
        io_type = TensorProto.INT8
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, io_type, ["batch", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, io_type, ["batch", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def make_typed_onnx():
    """Inputs of every kind a real model has besides float batches: a 0-d scalar (like silero VAD's ``sr``),
    int64 token ids, a bool mask and float16 values (strings: see the ONNX conformance cases);
    ``y = where(mask, ids * scale, 0) + h``."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "scale"], ["scaled"]),
        helper.make_node("Cast", ["h"], ["h_f"], to=TensorProto.FLOAT),
        helper.make_node("Where", ["mask", "scaled", "zero"], ["masked"]),
        helper.make_node("Add", ["masked", "h_f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "typed",
        [helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["n"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def typed_feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"scale": np.array(0.5, np.float32), "ids": rng.integers(0, 30000, n, dtype=np.int64),
            "mask": rng.random(n) < 0.5, "h": rng.normal(size=n).astype(np.float16)}


def typed_reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
    scaled = feeds["ids"].astype(np.float32) * feeds["scale"]
    return np.where(feeds["mask"], scaled, 0).astype(np.float32) + feeds["h"].astype(np.float32)
