"""Rebuild tests/models/qat_tfmot/: a SavedModel quantization-aware-trained with TensorFlow Model Optimization.

The way Keras users make one: a small digits CNN (sklearn's bundled 8x8 digits, the training quarter the
bundled image folder does not hold) trained in float, wrapped by ``tfmot.quantization.keras.quantize_model``
(FakeQuant on weights and activations, ranges learned) and fine-tuned, then saved with ``tf.saved_model.save``.
The result is committed (small), so the tests need neither tfmot nor tf_keras:

    pip install tensorflow-model-optimization tf_keras==<your TensorFlow's version>
    TF_USE_LEGACY_KERAS=1 python tests/models/build_qat_savedmodel.py
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "qat_tfmot"


def main() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot builds on Keras 2 (tf_keras)
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    sys.path.insert(0, str(HERE))
    from digits import load_split

    x_train, y_train, _, _ = load_split()
    x_train = x_train.reshape(-1, 8, 8, 1).astype(np.float32)
    tf.random.set_seed(0)
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 1), name="pixels"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    qat.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    print(f"float accuracy (train): {model.evaluate(x_train, y_train, verbose=0)[1]:.3f}; "
          f"QAT: {qat.evaluate(x_train, y_train, verbose=0)[1]:.3f}")
    shutil.rmtree(OUT, ignore_errors=True)

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
    def serve(pixels):
        return {"logits": qat(pixels, training=False)}

    # only the serving function and the variables it reads (the Keras model's own save adds its training
    # functions and optimizer state: 5x the size)
    module = tf.Module()
    module.weights = list(qat.variables)
    module.serve = serve
    tf.saved_model.save(module, str(OUT), signatures={"serving_default": serve})
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
