"""Converters that live in a Python environment of their own (onnx2tf, rknn-toolkit2, Sony's IMX500 tools): where
edgekit keeps the venv it makes for one, how it makes it, and which interpreter runs it (an environment variable
may name another)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


def create_env(folder: str, tool: str, pythons: tuple[tuple[int, int], tuple[int, int]],
               installs: list[tuple[str, list[str]]], python: str | None = None, *,
               log: Callable[[str], None] = print) -> Path:
    """Make the managed venv ``folder`` (or top up an existing one) with ``python``, else this interpreter or
    the newest ``python3.N`` within ``pythons`` (the tool's lowest and highest), then run ``pip install`` with
    each ``(what, arguments)`` of ``installs`` in order, from the registry pip is configured for."""
    low, high = pythons
    candidates = [python] if python else [sys.executable, *(f"python3.{m}" for m in range(high[1], low[1] - 1, -1))]
    chosen = next((p for p in candidates if low <= (python_version(p) or (0, 0)) <= high), None)
    if chosen is None:
        raise ConversionError(f"{tool} needs Python {low[0]}.{low[1]}-{high[0]}.{high[1]}; none found (tried "
                              f"{', '.join(candidates)}); pass --python PATH")
    env = venv_folder(folder)
    if not (env / "bin" / "python").is_file():
        log(f"creating {env} with {chosen}")
        subprocess.run([chosen, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
    for what, arguments in installs:
        log(f"installing {what} into {env}")
        done = subprocess.run([*pip, *arguments], capture_output=True, text=True)
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()
            raise ConversionError(f"pip could not install {what} into {env}: {(lines or ['no output'])[-1][:300]}")
    return env


def main_install_torch() -> str:
    """A requirement for the torch a tool's environment imports: the main install's own build when it has one
    (a CPU-only wheel is then reused instead of the registry's CUDA build), else any."""
    try:
        from importlib.metadata import version

        return f"torch=={version('torch')}"
    except Exception:  # noqa: BLE001 - no torch in the main install: let pip choose
        return "torch"


def write_samples(folder: Path, samples: Iterable[dict[str, Any]], names: list[str]) -> list[list[str]]:
    """One .npy per input per sample, in input order, for a tool in another environment to read (rknn-toolkit2's
    dataset file lists them per line)."""
    import numpy as np

    folder.mkdir()
    written = []
    for index, feeds in enumerate(samples):
        files = []
        for position, name in enumerate(names):
            path = folder / f"{index}_{position}.npy"
            np.save(path, np.asarray(feeds[name], np.float32))
            files.append(str(path))
        written.append(files)
    return written


def run_job(python: Path, script: str, job: dict[str, Any], work: Path, timeout_s: int,
            tool: str) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """Run ``script`` in a managed environment's ``python`` with ``job`` as its JSON argument, in ``work``; the
    last JSON line it printed (``{"ok": false, "step": null}`` when none) and the finished process."""
    import json

    try:
        done = subprocess.run([str(python), "-c", script, json.dumps(job)], capture_output=True, text=True,
                              cwd=work, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{tool} did not finish within {timeout_s} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {"ok": False, "step": None}), done
