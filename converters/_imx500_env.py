"""What the imx500 target needs before any work: Sony's IMX500 tools' own environment (which ``edgekit setup
imx500`` makes and the target runs in), the Java they convert with, and a model the camera can feed.

The IMX500 route needs Sony's Model Compression Toolkit (MCT) and ``imx500-converter[pt]`` (``uni-pytorch``, which
pins onnx ~1.17, onnxruntime ~1.21 and protobuf 4.25, and ``sdspconv``, a Java 17 program), so it cannot share
edgekit's main install. Their custom layers import torchvision at import time, and the registry's torchvision
runs only on the registry's full (CUDA) torch build: the environment is ~6.3 GB, installed in ~1.5 min from a
local mirror. ``$EDGEKIT_IMX500`` may name another python that has the tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgekit.converters._managed_env import create_env, venv_folder
from edgekit.converters._managed_env import find_python as managed_python
from edgekit.runtimes.errors import ConversionError, MissingDependencyError

ENV_VARIABLE = "EDGEKIT_IMX500"
VENV = "imx500-venv"
#: the versions tested together: MCT 2.5.1 with the IMX500 target platform (TPC v1), the converter that reads its
#: export, onnx2torch (ONNX -> torch.nn for MCT) and the torch/torchvision pair the custom layers import
PACKAGES = ("imx500-converter[pt]==3.19.2", "model-compression-toolkit==2.5.1", "onnx2torch==1.5.15",
            "torch==2.14.1", "torchvision==0.29.1")
PYTHONS = ((3, 10), (3, 12))  # uni-pytorch's
JAVA = 17  # sdspconv's runtime
JAVA_ADVICE = f"install Java {JAVA} (Debian/Ubuntu: apt-get install openjdk-{JAVA}-jre-headless; or set JAVA_HOME)"


def check_image_input(source: Any) -> None:
    """The sensor feeds one image to the network: ``source`` (a ``_source.Source``) must have one 4-D input of
    batch 1 with 1 or 3 channels (NCHW)."""
    specs = list(source.inputs)
    shapes = ", ".join(f"'{s.name}' {list(s.shape)}" for s in specs)
    if len(specs) != 1:
        raise ConversionError(f"imx500: the IMX500 feeds one camera image to the network, and this model has "
                              f"{len(specs)} inputs ({shapes})")
    shape = specs[0].shape
    if len(shape) != 4 or shape[0] not in (1, None) or shape[1] not in (1, 3):
        raise ConversionError(f"imx500: the IMX500 feeds the network a camera image, [1, 3 or 1, height, width] "
                              f"(NCHW); input {shapes} is not one")


def managed_env() -> Path:
    return venv_folder(VENV)


def find_python() -> Path:
    """The interpreter that has MCT and imx500-converter, or a MissingDependencyError naming the setup command."""
    return managed_python(ENV_VARIABLE, VENV, "Sony's IMX500 tools (imx500 converts with MCT and imx500-converter, "
                          "in their own environment): run `edgekit setup imx500`")


def converter_command(python: Path) -> Path:
    """``imxconv-pt`` beside the environment's python."""
    command = python.parent / "imxconv-pt"
    if not command.is_file():
        raise MissingDependencyError(f"imxconv-pt (imx500-converter[pt]) beside {python}: run `edgekit setup "
                                     "imx500`", "convert")
    return command


def check_java() -> str:
    """The Java the converter's back end will run (``$JAVA_HOME/bin/java``, else ``java`` on PATH), as its version
    line; a MissingDependencyError when there is none or it is older than 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise MissingDependencyError(f"Java {JAVA} (the IMX500 converter's sdspconv runs on it): {JAVA_ADVICE}",
                                     "convert")
    try:
        said = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        raise MissingDependencyError(f"a working Java {JAVA} ({java} did not run: {exc}): {JAVA_ADVICE}",
                                     "convert") from exc
    found = re.search(r'version "(\d+)', said)
    if found is None or int(found.group(1)) < JAVA:
        raise MissingDependencyError(f"Java {JAVA} or newer ({java} is {found.group(1) if found else 'unknown'}): "
                                     f"{JAVA_ADVICE}", "convert")
    return said.splitlines()[0].strip()


def setup(python: str | None = None, *, log: Any = print) -> Path:
    """Create the managed venv with MCT, imx500-converter and onnx2torch, from pip's configured registry."""
    try:
        check_java()
    except MissingDependencyError as exc:
        raise ConversionError(f"the IMX500 converter needs Java {JAVA}: {JAVA_ADVICE}") from exc
    return create_env(VENV, "imx500-converter", PYTHONS, [("MCT, imx500-converter and onnx2torch (~6.3 GB)",
                                                           list(PACKAGES))], python, log=log)
