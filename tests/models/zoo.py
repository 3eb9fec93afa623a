"""Architectures built the way their users build them (Keras), with BatchNorm statistics measured on data.

Random initialisation makes a deep net's outputs vanish (~1e-11) so that any artifact "agrees" with it;
``measure_batchnorm`` runs one batch of real inputs through the model in training mode with momentum 0,
so every BatchNormalization layer holds that data's statistics and the outputs carry signal.

- ``resnet``: stem + residual basic blocks (torchvision ResNet's BasicBlock, in Keras)
- ``mobilenet_v3``: keras.applications.MobileNetV3Small (depthwise, squeeze-excite, hard-swish)
- ``efficientnet``: keras.applications.EfficientNetB0 (MBConv, SE, swish, a Normalization layer)
- ``yolo``: a YOLO-style detector whose head concatenates boxes (pixels, 0-640) and class scores (0-1)
- ``encoder``: a small transformer encoder with int64 token ids and an attention mask
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE = 64
TOKENS, VOCAB, CLASSES = 16, 500, 7


def _keras():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def images(count: int, seed: int = 0) -> np.ndarray:
    """Rendered document pages at IMAGE x IMAGE, RGB in 0-255 (what Keras applications take)."""
    import task_data

    return np.stack([task_data.render_page(IMAGE * 3, IMAGE * 3, seed=seed * 1000 + i)[::3, ::3]
                     for i in range(count)]).astype(np.float32)


def token_batches(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (count, TOKENS), dtype=np.int64)
    lengths = rng.integers(4, TOKENS + 1, count)
    mask = (np.arange(TOKENS)[None, :] < lengths[:, None]).astype(np.int64)
    return {"ids": ids * mask, "mask": mask}


def _conv_bn(keras, x, filters, kernel=3, strides=1, activation="relu"):
    x = keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation(activation)(x) if activation else x


def resnet(keras):
    inputs = keras.Input((IMAGE, IMAGE, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = _conv_bn(keras, x, 32, 3, 2)
    for filters, strides in ((32, 1), (64, 2), (64, 1), (128, 2)):
        shortcut = x
        y = _conv_bn(keras, x, filters, 3, strides)
        y = _conv_bn(keras, y, filters, 3, 1, activation=None)
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = _conv_bn(keras, shortcut, filters, 1, strides, activation=None)
        x = keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="resnet")


def mobilenet_v3(keras):
    return keras.applications.MobileNetV3Small(weights=None, input_tensor=keras.Input((IMAGE, IMAGE, 3), name="pixels"),
                                               classes=10, include_preprocessing=True)


def efficientnet(keras):
    return keras.applications.EfficientNetB0(weights=None, input_tensor=keras.Input((IMAGE, IMAGE, 3), name="pixels"),
                                             classes=10)


def yolo(keras):
    """Three stride-2 stages, then per cell: box (cx, cy, w, h in input pixels, 0-640) and class scores,
    concatenated into one [N, cells, 4 + classes] tensor, as YOLOv5/v8 exports do."""
    inputs = keras.Input((IMAGE, IMAGE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 32, 64):
        x = _conv_bn(keras, x, filters, 3, 2, activation="swish")
        x = _conv_bn(keras, x, filters, 3, 1, activation="swish")
    cells = (IMAGE // 8) ** 2
    boxes = keras.layers.Conv2D(4, 1, activation="sigmoid")(x)
    boxes = keras.layers.Rescaling(640.0)(keras.layers.Reshape((cells, 4))(boxes))
    scores = keras.layers.Reshape((cells, CLASSES))(keras.layers.Conv2D(CLASSES, 1, activation="sigmoid")(x))
    return keras.Model(inputs, keras.layers.Concatenate(name="detections")([boxes, scores]), name="yolo")


def encoder(keras):
    """Embedding + learned positions, two pre-norm attention blocks honouring the padding mask, per-token logits."""
    ids = keras.Input((TOKENS,), dtype="int64", name="ids")
    mask = keras.Input((TOKENS,), dtype="int64", name="mask")
    x = keras.layers.Embedding(VOCAB, 64)(ids)
    positions = keras.layers.Embedding(TOKENS, 64)(keras.ops.arange(TOKENS)[None, :])
    x = x + positions
    attention_mask = keras.ops.cast(mask[:, None, :], "bool")
    for _ in range(2):
        y = keras.layers.LayerNormalization()(x)
        y = keras.layers.MultiHeadAttention(4, 16)(y, y, attention_mask=attention_mask)
        x = x + y
        y = keras.layers.LayerNormalization()(x)
        y = keras.layers.Dense(128, activation="gelu")(y)
        x = x + keras.layers.Dense(64)(y)
    logits = keras.layers.Dense(CLASSES, name="tags")(keras.layers.LayerNormalization()(x))
    return keras.Model([ids, mask], logits, name="encoder")


BUILDERS = {"resnet": resnet, "mobilenet_v3": mobilenet_v3, "efficientnet": efficientnet, "yolo": yolo,
            "encoder": encoder}


def inputs_for(name: str, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    if name == "encoder":
        return token_batches(count, seed)
    return {"images" if name == "yolo" else "pixels": images(count, seed)}


def measure_batchnorm(model, data: dict[str, np.ndarray]) -> None:
    """Set every BatchNormalization layer's moving statistics to those of ``data`` (one training-mode pass)."""
    keras = _keras()
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    model(data if len(data) > 1 else next(iter(data.values())), training=True)


def build(name: str, folder: Path, seed: int = 0) -> Path:
    """Build, measure BatchNorm statistics on 64 samples, save as .keras; return the path."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = BUILDERS[name](keras)
    measure_batchnorm(model, inputs_for(name, 64, seed=1000 + seed))
    path = folder / f"{name}.keras"
    model.save(path)
    return path


def predict(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    model = _keras().models.load_model(path, compile=False)
    return np.asarray(model(data if len(data) > 1 else next(iter(data.values())), training=False))
