"""Converters that live in a Python environment of their own (onnx2tf, rknn-toolkit2): where edgekit keeps
the venv it makes for one, and which interpreter runs it (an environment variable may name another)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edgekit.runtimes.errors import ConversionError, MissingDependencyError


def venv_folder(name: str) -> Path:
    """``~/.cache/edgekit/<name>`` (under ``$XDG_CACHE_HOME`` when set)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgekit" / name


def find_python(variable: str, folder: str, missing: str) -> Path:
    """The interpreter ``$variable`` names (a python or a venv folder), else the managed venv's; else a
    MissingDependencyError saying ``missing`` (what the tool is and how to get it)."""
    given = os.environ.get(variable)
    if given:
        python = Path(given)
        python = python / "bin" / "python" if python.is_dir() else python
        if not python.is_file():
            raise ConversionError(f"{variable}={given} is not a python interpreter or a venv folder")
        return python
    python = venv_folder(folder) / "bin" / "python"
    if not python.is_file():
        raise MissingDependencyError(f"{missing}, or set {variable} to a python that has it", "convert")
    return python


def python_version(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)
