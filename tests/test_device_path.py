"""The device path stays light: no TensorFlow, NNCF or converters, and a cheap ``import edgekit``.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["tensorflow", "nncf", "tf2onnx", "edgekit.converters", "keras", "torch", "litert_torch", "ai_edge_quantizer",
         "onnxscript", "jax"]
ENGINES = ["onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "onnx"]


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_edgekit_imports_no_engine_and_no_numpy():
    loaded = _modules_after("import edgekit; edgekit.EdgekitError")
    assert not loaded & set(HEAVY + ENGINES + ["numpy"])


@pytest.mark.litert
def test_loading_and_running_tflite_never_touches_the_converter_side(tflite_int8):
    loaded = _modules_after(
        "import numpy as np, edgekit\n"
        f"rt = edgekit.load({str(tflite_int8)!r})\n"
        "rt.run(np.zeros((1, 16), np.float32))"
    )
    assert "edgekit._api" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.onnxruntime
def test_devices_command_imports_no_converter(tmp_path):
    loaded = _modules_after("from click.testing import CliRunner\nfrom edgekit.cli import cli\n"
                            "CliRunner().invoke(cli, ['devices', '--json'])")
    assert not loaded & set(HEAVY)


@pytest.mark.litert
def test_run_and_profile_commands_import_no_converter(tflite_int8):
    loaded = _modules_after(
        "from click.testing import CliRunner\nfrom edgekit.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['run', {str(tflite_int8)!r}, '--random'])\nassert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(cli, ['profile', {str(tflite_int8)!r}, '--runs', '3', '--min-seconds', '0'])\n"
        "assert r.exit_code == 0, r.output"
    )
    assert "edgekit.profiling.profiler" in loaded and not loaded & set(HEAVY), loaded & set(HEAVY)
