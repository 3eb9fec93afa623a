"""rknn-toolkit2's own environment, which ``edgekit setup rknn`` makes and the rknn-int8 target runs in.

rknn-toolkit2 pins numpy 1.x, onnx <= 1.18 and protobuf 4.x, so it cannot share edgekit's main install: a venv
of its own in edgekit's cache folder (``$EDGEKIT_RKNN`` may name another python that has the toolkit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.converters._managed_env import create_env, main_install_torch, venv_folder
from edgekit.converters._managed_env import find_python as managed_python

ENV_VARIABLE = "EDGEKIT_RKNN"
VENV = "rknn-venv"
TOOLKIT = "rknn-toolkit2==2.5.0"
#: what the toolkit really needs (its own metadata asks for torch <= 2.4 and ~2.5 GB of CUDA libraries, which
#: its ONNX route never uses): installed beside it with --no-deps; setuptools for its pkg_resources import
TOOLKIT_NEEDS = ("protobuf>=4.21.6,<=4.25.4", "psutil", "ruamel.yaml", "scipy", "tqdm", "opencv-python-headless",
                 "fast-histogram", "numpy<=1.26.4", "onnx>=1.16.1,<=1.18.0", "onnxruntime>=1.17", "setuptools<81")
PYTHONS = ((3, 8), (3, 12))  # the toolkit's wheels


def managed_env() -> Path:
    return venv_folder(VENV)


def find_python() -> Path:
    """The interpreter that has rknn-toolkit2, or a MissingDependencyError naming ``edgekit setup rknn``."""
    return managed_python(ENV_VARIABLE, VENV, "rknn-toolkit2 (rknn-int8 builds with it, in its own environment: "
                          "numpy 1.x, onnx <= 1.18): run `edgekit setup rknn`")


def setup(python: str | None = None, *, log: Any = print) -> Path:
    """Create the managed venv with rknn-toolkit2 and what its ONNX route needs, from pip's configured registry."""
    return create_env(VENV, "rknn-toolkit2", PYTHONS, [(TOOLKIT, ["--no-deps", TOOLKIT]),
                                                        ("its requirements", [*TOOLKIT_NEEDS, main_install_torch()])],
                      python, log=log)
