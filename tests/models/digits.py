"""sklearn's bundled 8x8 digits (real labeled data, no download) and a small CNN trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 0


def load_split(test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images are float32 NHWC in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(SEED).permutation(len(images))
    cut = int(len(images) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return images[train], data.target[train], images[test], data.target[test]


def train_cnn(path: Path, epochs: int = 20) -> Path:
    """Train and save a small Keras CNN (about 96-98 % on the held-out digits)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(SEED)
    x_train, y_train, _, _ = load_split()
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ], name="digits_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    # Save an uncompiled copy: the optimizer's state would triple the file for nothing.
    clean = keras.models.clone_model(model)
    clean.set_weights(model.get_weights())
    clean.save(path)
    return path


def write_image_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Save images as 8-bit grayscale PNGs in class sub-folders (folder/<label>/<n>.png)."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(image[..., 0] * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(target / f"{index:04d}.png")
    return folder


MOBILENET_SIZE = 32


def _upscaled(images: np.ndarray, size: int) -> np.ndarray:
    """The 8x8 digits as edgekit reads their PNGs for a size x size model: 8-bit gray, bilinear, /255."""
    from PIL import Image

    pixels = np.clip(np.round(images[..., 0] * 255), 0, 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(p, mode="L").resize((size, size), Image.Resampling.BILINEAR),
                                np.float32) / 255.0 for p in pixels])[..., None]


def mobilenet(keras, size: int = MOBILENET_SIZE):
    """A MobileNetV2-style net (inverted residuals: 1x1 expand, depthwise 3x3, linear 1x1 project; ReLU6,
    BatchNorm) for size x size gray digits: big enough that int8 pays (about 1-2 ms in float on 2 cores)."""
    layers = keras.layers

    def conv_bn(x, filters, kernel=1, strides=1, relu=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides, padding="same", use_bias=False)(x)
        else:
            x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if relu else x

    inputs = keras.Input((size, size, 1), name="image")
    x = conv_bn(inputs, 16, 3)
    # most blocks at full resolution: compute grows with pixels, the file with channels
    for filters, strides, repeats in ((24, 1, 3), (40, 2, 3), (64, 2, 1)):
        for index in range(repeats):
            stride = strides if index == 0 else 1
            y = conv_bn(x, x.shape[-1] * 6)
            y = conv_bn(y, None, 3, stride, depthwise=True)
            y = conv_bn(y, filters, relu=False)
            x = layers.Add()([x, y]) if stride == 1 and x.shape[-1] == filters else y
    x = conv_bn(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x), name="digits_mobilenet")


def train_mobilenet(path: Path, epochs: int = 8, size: int = MOBILENET_SIZE) -> Path:
    """Train and save the MobileNet-style net on the upscaled digits, with shifts of up to 2 pixels."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import zoo

    keras.utils.set_random_seed(SEED)
    x_train, y_train, x_test, y_test = load_split()
    model = mobilenet(keras, size)
    augment = keras.Sequential([keras.layers.RandomTranslation(2 / size, 2 / size, fill_mode="constant")])
    train = keras.Sequential([keras.Input((size, size, 1)), augment, model])
    train.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    pixels = _upscaled(x_train, size)
    train.fit(pixels, y_train, epochs=epochs, batch_size=64, verbose=0)
    # A few hundred steps leave BatchNorm's moving averages far from the trained weights' statistics (seen:
    # 98 % in training mode, 12 % in inference): measure them on the whole training set, in one pass.
    zoo.measure_batchnorm(model, {"image": pixels})
    accuracy = float(np.mean(np.argmax(model.predict(_upscaled(x_test, size), verbose=0), axis=1) == y_test))
    print(f"digits_mobilenet: {accuracy:.1%} on the {len(y_test)} held-out digits")
    # saved uncompiled (the optimizer's state would double the file for nothing) and deflated: Keras stores
    # its zip uncompressed, and the HDF5 metadata of ~190 small arrays compresses to a third (745 -> 473 KB)
    model.save(path)
    keras.models.load_model(path, compile=False).save(path)
    _deflate(path)
    return path


def _deflate(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as stored:
        entries = [(info.filename, stored.read(info)) for info in stored.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as deflated:
        for name, data in entries:
            deflated.writestr(name, data)
