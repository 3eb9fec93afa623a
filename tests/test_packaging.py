"""The distribution installs one import namespace: `edgekit`, with `edgekit.runtimes` and
`edgekit.converters` mapped from the repository's top-level runtimes/ and converters/ folders. Generic
top-level names (`runtimes`, `converters`) would collide with other distributions in site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_only_the_edgekit_namespace(tmp_path):
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgekit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"edgekit"}, top_level
    for module in ("edgekit/runtimes/_litert.py", "edgekit/runtimes/base.py", "edgekit/converters/_onnx.py",
                   "edgekit/cli/__init__.py", "edgekit/pipeline/conversion.py", "edgekit/profiling/profiler.py"):
        assert module in names, module
    (top_level_txt,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    if top_level_txt:
        assert zipfile.ZipFile(wheel).read(top_level_txt).decode().split() == ["edgekit"]


def test_the_bottom_layers_import_under_edgekit_only():
    code = ("import importlib.util, edgekit.runtimes, edgekit.converters\n"
            "print(importlib.util.find_spec('runtimes') is None and importlib.util.find_spec('converters') is None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert done.stdout.strip() == "True"


def test_every_public_name_resolves_and_the_api_reference_documents_it():
    """``edgekit.__all__`` is the public API: each name resolves (most lazily, PEP 562), and each function and
    class is in the generated API reference (docs/reference/api.md), under the module that defines it."""
    import edgekit

    reference = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "api.md").read_text()
    assert sorted(edgekit.__all__, key=str.lower) == sorted(set(edgekit.__all__), key=str.lower)
    for name in edgekit.__all__:
        value = getattr(edgekit, name)
        if name == "__version__":
            continue
        module = value.__module__.replace("edgekit.runtimes", "runtimes").replace("edgekit.errors", "runtimes.errors")
        assert f"::: {module}.{name}\n" in reference, f"{name} ({module}) is not in docs/reference/api.md"
