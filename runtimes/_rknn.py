"""Rockchip RKNPU backend: a .rknn on the board's NPU through rknn-toolkit-lite2 and the board's librknnrt.so.

Only a Rockchip board runs a .rknn: rknn-toolkit2's simulator refuses an exported file (it simulates a model
built in the same session, which is where ``rknn-int8`` checked it), so on any other machine this backend
says so instead of pretending. rknn-toolkit-lite2 does not report a model's tensors, so the input names and
shapes come from the conversion report edgekit wrote beside the file (``<model>.rknn.json``), matched to the
file by its sha256. Nothing here imports a converter or the full toolkit.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import numpy as np
from edgekit.runtimes.base import Runtime, TensorSpec
from edgekit.runtimes.errors import DeviceError, InferenceError, MissingDependencyError, UnsupportedModelError
from edgekit.runtimes.formats import ModelFile
from edgekit.runtimes.npu import RKNPU_DRIVER_PATHS

log = logging.getLogger("edgekit.runtimes")


def rknpu_driver(root: Path = Path("/")) -> Path | None:
    """Where this machine's kernel shows the RKNPU driver, or None."""
    return next((root / p for p in RKNPU_DRIVER_PATHS if (root / p).exists()), None)


def _specs(model: ModelFile) -> tuple[tuple[TensorSpec, ...], list[str], str]:
    """Inputs, output names and the platform from the conversion report beside the file."""
    sidecar = Path(f"{model.path}.json")
    try:
        report = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(
            f"'{model.path}' needs the conversion report edgekit wrote beside it ('{sidecar.name}'): "
            "rknn-toolkit-lite2 does not tell a model's input names and shapes; copy both files to the board"
        ) from exc
    if (report.get("artifact") or {}).get("sha256") != model.sha256():
        raise UnsupportedModelError(f"'{sidecar.name}' describes another file than '{model.path.name}' (sha256 "
                                    "differs); copy the report that was written with this .rknn")
    source = report.get("source") or {}
    inputs = tuple(TensorSpec(i["name"], tuple(i["shape"]), np.dtype(i.get("dtype", "float32")))
                   for i in source.get("inputs", []))
    return inputs, list(source.get("outputs", [])), (report.get("options") or {}).get("platform", "?")


class RknnRuntime(Runtime):
    backend = "rknn"

    def __init__(self, model: ModelFile, *, device: str = "npu", threads: int | None = None,
                 core_mask: str = "auto") -> None:
        super().__init__()
        self.path = str(model.path)
        inputs, outputs, chip = _specs(model)
        self.compiled_for = f"Rockchip RKNPU ({chip})"
        self.device, self.precision = "npu", "int8 (RKNPU)"
        if device == "gpu":
            raise DeviceError(f"'{self.path}' is compiled for the {self.compiled_for}; it runs on that NPU only")
        try:
            from rknnlite.api import RKNNLite
        except ImportError as exc:
            if platform.machine().lower() not in ("aarch64", "arm64", "armv7l"):
                raise DeviceError(
                    f"'{self.path}' runs only on a Rockchip board's NPU ({chip}); this is "
                    f"{platform.machine()}: rknn-toolkit2's simulator cannot run an exported .rknn (edgekit "
                    "checked it in the simulator while converting, see its report's validation); copy it with "
                    "its .json to the board and load it there, or profile it there with --remote") from exc
            raise MissingDependencyError("rknn-toolkit-lite2 (runs .rknn files on the board's NPU)", "rknn") from exc
        driver = rknpu_driver()
        if driver is None:
            raise DeviceError(f"no RKNPU here: the kernel shows no RKNPU driver (looked for "
                              f"{', '.join('/' + p for p in RKNPU_DRIVER_PATHS)}); '{self.path}' runs on a "
                              f"Rockchip {chip} board image with the NPU driver and librknnrt.so")
        self.engine = "rknn-toolkit-lite2"
        self._rknn = RKNNLite(verbose=False)
        if self._rknn.load_rknn(self.path) != 0:
            raise UnsupportedModelError(f"rknn-toolkit-lite2 cannot load '{self.path}'")
        masks = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
                 "all": "NPU_CORE_0_1_2"}
        if core_mask not in masks:
            raise DeviceError(f"core_mask must be one of {', '.join(masks)}, got '{core_mask}'")
        mask = getattr(RKNNLite, masks[core_mask], None)
        if self._rknn.init_runtime(**({"core_mask": mask} if mask is not None else {})) != 0:
            raise DeviceError(f"the RKNPU runtime did not start for '{self.path}' (driver at {driver}): is "
                              f"librknnrt.so in /usr/lib and does it match the board ({chip})?")
        self._output_count = len(outputs)
        self._set_specs(inputs, tuple(TensorSpec(name, (), np.dtype(np.float32)) for name in outputs))

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        # edgekit feeds the ONNX model's layout (the format applies to 4-D inputs only; None is refused)
        got = self._rknn.inference(inputs=arrays, data_format=["nchw"] * len(arrays))
        if got is None:
            raise InferenceError(f"the RKNPU returned nothing for '{self.path}'")
        return [np.asarray(v, np.float32) for v in got]

    def _release(self) -> None:
        self._rknn.release()
