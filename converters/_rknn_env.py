"""rknn-toolkit2's own environment, which ``edgekit setup rknn`` makes and the rknn-int8 target runs in.

rknn-toolkit2 pins numpy 1.x, onnx <= 1.18 and protobuf 4.x, so it cannot share edgekit's main install: a venv
of its own in edgekit's cache folder (``$EDGEKIT_RKNN`` may name another python that has the toolkit).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekit.converters._managed_env import find_python as managed_python
from edgekit.converters._managed_env import python_version, venv_folder
from edgekit.runtimes.errors import ConversionError

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


def _torch_requirement() -> str:
    """The torch the toolkit imports (and runs nothing on): the main install's own build when it has one, so a
    CPU-only wheel is reused instead of the registry's default CUDA build."""
    try:
        from importlib.metadata import version

        return f"torch=={version('torch')}"
    except Exception:  # noqa: BLE001 - no torch in the main install: let pip choose
        return "torch"


def setup(python: str | None = None, *, log: Any = print) -> Path:
    """Create the managed venv with rknn-toolkit2 and what its ONNX route needs, from pip's configured registry."""
    low, high = PYTHONS
    candidates = [python] if python else [sys.executable, *(f"python3.{m}" for m in range(high[1], low[1] - 1, -1))]
    chosen = next((p for p in candidates if low <= (python_version(p) or (0, 0)) <= high), None)
    if chosen is None:
        raise ConversionError(f"rknn-toolkit2 needs Python 3.{low[1]}-3.{high[1]}; none found (tried "
                              f"{', '.join(candidates)}); pass --python PATH")
    env = managed_env()
    if not (env / "bin" / "python").is_file():
        log(f"creating {env} with {chosen}")
        subprocess.run([chosen, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
    for what, command in ((TOOLKIT, [*pip, "--no-deps", TOOLKIT]),
                          ("its requirements", [*pip, *TOOLKIT_NEEDS, _torch_requirement()])):
        log(f"installing {what} into {env}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()
            raise ConversionError(f"pip could not install {what} into {env}: {(lines or ['no output'])[-1][:300]}")
    return env
