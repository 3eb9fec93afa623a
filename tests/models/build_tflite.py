"""Rebuild the checked-in TFLite forms of the tiny model with TensorFlow.

Run from the repo root: ``python tests/models/build_tflite.py``. Writes
``tiny_fp32.tflite`` (float) and ``tiny_int8.tflite`` (full integer, int8 I/O)
beside this file. Both keep the signature names ``input`` / ``output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny  # noqa: E402


def main() -> None:
    import tensorflow as tf

    w = tiny.weights()

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, tiny.FEATURES], tf.float32, name=tiny.INPUT_NAME)])
        def serve(self, input):  # noqa: A002 - the argument name becomes the signature's input name
            hidden = tf.nn.relu(tf.matmul(input, w["w1"]) + w["b1"])
            return {tiny.OUTPUT_NAME: tf.nn.softmax(tf.matmul(hidden, w["w2"]) + w["b2"])}

    module = Tiny()
    concrete = module.serve.get_concrete_function()

    def convert(quantize: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
        if quantize:
            calib = tiny.sample_inputs(200, seed=1)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()

    (tiny.HERE / "tiny_fp32.tflite").write_bytes(convert(False))
    (tiny.HERE / "tiny_int8.tflite").write_bytes(convert(True))


if __name__ == "__main__":
    main()
