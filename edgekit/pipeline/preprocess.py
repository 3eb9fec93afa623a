"""Preprocessing recipes: how an image becomes a model input.

A recipe is stored with every converted model and reused by calibration,
validation and ``edgekit run --image`` so the three cannot disagree. The keys
match the CLI flags (``--size``, ``--crop``, ``--scale``, ``--mean``, ``--std``,
``--color``, ``--layout``). Device-safe: needs numpy and, for images, Pillow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.errors import EdgekitError, MissingDependencyError

COLORS = ("rgb", "bgr", "gray")
LAYOUTS = ("nhwc", "nchw")


@dataclass(frozen=True)
class Recipe:
    """Image preprocessing, applied in this order: color, resize, center crop, scale, mean/std, layout."""

    size: tuple[int, int] | None = None  # (height, width) to resize to
    crop: tuple[int, int] | None = None  # (height, width) center crop after resizing
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color: str = "rgb"
    layout: str | None = None  # None: taken from the model's input shape
    dtype: str = "float32"
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("size", "crop", "mean", "std"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("size", "crop", "mean", "std"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)

    def for_input(self, spec: TensorSpec) -> Recipe:
        """Fill what the recipe leaves open (layout, size, color, dtype) from a model input."""
        layout = self.layout or guess_layout(spec.shape)
        height, width, channels = _hwc(spec.shape, layout)
        recipe = replace(self, layout=layout)
        if recipe.size is None and height and width:
            recipe = replace(recipe, size=(height, width))
        if channels == 1 and recipe.color != "gray":
            recipe = replace(recipe, color="gray")
        if spec.dtype.kind == "f" and recipe.dtype != spec.dtype.name:
            recipe = replace(recipe, dtype=spec.dtype.name)
        return recipe


def guess_layout(shape: tuple[int | None, ...]) -> str:
    """NCHW when dimension 1 looks like channels and the last does not; otherwise NHWC."""
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "nchw"
    return "nhwc"


def _hwc(shape: tuple[int | None, ...], layout: str) -> tuple[int | None, int | None, int | None]:
    if len(shape) != 4:
        raise EdgekitError(f"an image input needs rank 4 (NHWC or NCHW), this input has shape {list(shape)}")
    return (shape[2], shape[3], shape[1]) if layout == "nchw" else (shape[1], shape[2], shape[3])


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("Pillow (needed to read images)", "image") from exc
    return Image


def load_image(path: str, recipe: Recipe):
    """Read one image file and return it as a batch of one, preprocessed by ``recipe``."""
    try:
        with _pillow().open(path) as image:
            image.load()
            return preprocess_image(image, recipe)
    except (OSError, ValueError) as exc:
        raise EdgekitError(f"cannot read image '{path}': {exc}") from exc


def preprocess_frame(frame, recipe: Recipe):
    """A camera frame (HxWx3 uint8 RGB, or HxW gray, as picamera2 and OpenCV-after-cvtColor give it)."""
    import numpy as np

    return preprocess_image(_pillow().fromarray(np.ascontiguousarray(frame)), recipe)


def preprocess_image(image, recipe: Recipe):
    """A Pillow image, preprocessed by ``recipe`` into a batch of one."""
    import numpy as np

    Image = _pillow()
    image = image.convert("L" if recipe.color == "gray" else "RGB")
    if recipe.size is not None:
        method = getattr(Image.Resampling, recipe.interpolation.upper(), Image.Resampling.BILINEAR)
        image = image.resize((recipe.size[1], recipe.size[0]), method)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if recipe.color == "bgr":
        array = array[:, :, ::-1]
    if recipe.crop is not None:
        top = (array.shape[0] - recipe.crop[0]) // 2
        left = (array.shape[1] - recipe.crop[1]) // 2
        array = array[top : top + recipe.crop[0], left : left + recipe.crop[1]]
    array = array * np.float32(recipe.scale)
    if recipe.mean is not None:
        array = array - np.asarray(recipe.mean, np.float32)
    if recipe.std is not None:
        array = array / np.asarray(recipe.std, np.float32)
    if recipe.layout == "nchw":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array[None].astype(recipe.dtype))
