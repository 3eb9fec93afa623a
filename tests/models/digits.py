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
