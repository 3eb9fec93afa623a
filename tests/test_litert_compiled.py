"""ai-edge-litert's CompiledModel: the LiteRT route to GPUs and NPUs (vendor dispatch libraries).

No accelerator is attached here, so the path is exercised on its CPU accelerator (same answers as the
Interpreter) and the absent-NPU case must be a clear error naming what to pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny

import edgekit
from edgekit import DeviceError, InferenceError

pytest.importorskip("ai_edge_litert", reason="the CompiledModel API is ai-edge-litert's")
pytestmark = pytest.mark.litert


@pytest.mark.parametrize("fixture", ["tflite_fp32", "tflite_int8"])
def test_compiled_model_gives_the_interpreter_answers(request, fixture):
    path = request.getfixturevalue(fixture)
    x = tiny.sample_inputs(1, seed=5)
    with edgekit.load(path, api="compiled") as compiled, edgekit.load(path) as interpreter:
        assert compiled.engine.endswith("CompiledModel") and compiled.inputs == interpreter.inputs
        np.testing.assert_allclose(compiled.run(x)["output"], interpreter.run(x)["output"], atol=1e-6)
        raw = np.zeros((1, tiny.FEATURES), compiled.inputs[0].dtype)
        np.testing.assert_array_equal(compiled.run(raw, raw=True)["output"], interpreter.run(raw, raw=True)["output"])


def test_compiled_model_resizes_a_dynamic_batch_like_the_interpreter(tflite_fp32):
    x = tiny.sample_inputs(3)
    with edgekit.load(tflite_fp32, api="compiled") as compiled, edgekit.load(tflite_fp32) as interpreter:
        np.testing.assert_allclose(compiled.run(x)["output"], interpreter.run(x)["output"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(compiled.run(x[:1])["output"], interpreter.run(x[:1])["output"], rtol=1e-6,
                                   atol=1e-6)
        with pytest.raises(InferenceError, match=r"input 'input' expects shape \[\?, 16\], got \[3, 15\]"):
            compiled.run(x[:, :15])


def test_npu_without_an_npu_says_what_to_pass(tflite_fp32):
    with pytest.raises(DeviceError, match="no usable NPU accelerator.*dispatch_library=.*delegate="):
        edgekit.load(tflite_fp32, device="npu")


def test_unknown_api_is_refused(tflite_fp32):
    with pytest.raises(edgekit.UnsupportedModelError, match="unknown LiteRT api 'fast'"):
        edgekit.load(tflite_fp32, api="fast")


@pytest.mark.parametrize("options", [[], ["--precision", "f16"]], ids=["interpreter", "compiled"])
def test_litert_native_log_stays_off_the_terminal_unless_verbose(tflite_fp32, options):
    """LiteRT writes its INFO lines (delegate creation, accelerator probing, teardown at exit) to fd 2 from C++:
    a real process, not CliRunner, shows whether any reach the terminal."""
    command = [str(Path(sys.executable).with_name("edgekit")), "run", str(tflite_fp32), "--random", *options]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = subprocess.run([command[0], "-v", *command[1:]], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 0 and "INFO: " in verbose.stderr


@pytest.mark.parametrize(("logged", "named"), [
    (["ERROR: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file",
      "ERROR: No adapters found"], "the Vulkan loader (libvulkan.so.1) is missing; present: cpu (XNNPACK). To use the "
                                  "GPU, install it (Debian/Ubuntu: apt-get install libvulkan1)"),
    (["ERROR: No adapters found"], "no GPU adapter is visible to Vulkan/WebGPU"),
    (["ERROR: something new went wrong"], "(ERROR: something new went wrong)"),
], ids=["no-vulkan-loader", "no-adapter", "unknown"])
def test_a_gpu_that_cannot_start_is_named_by_its_cause(tflite_fp32, monkeypatch, logged, named):
    """LiteRT's exception names a source line only ("ERROR: [litert/runtime/compiled_model.cc:1036]"); the cause
    is in what it logs to fd 2 while it tries: the error says that, and the fix, never NPU advice."""
    import os

    from ai_edge_litert import compiled_model

    class Failing:
        @staticmethod
        def from_file(*args, **kwargs):
            for line in logged:
                os.write(2, f"{line}\n".encode())
            raise RuntimeError("ERROR: [litert/runtime/compiled_model.cc:1036]")

    monkeypatch.setattr(compiled_model, "CompiledModel", Failing)
    with pytest.raises(DeviceError) as raised:
        edgekit.load(tflite_fp32, device="gpu")
    message = str(raised.value)
    assert message.startswith("LiteRT has no usable GPU accelerator here") and named in message, message
    assert "dispatch_library" not in message and "compiled_model.cc" not in message


@pytest.mark.parametrize(("precision", "enforce_f32"), [(None, False), ("auto", False), ("f16", False), ("f32", True)])
def test_the_gpu_runs_its_own_fp16_unless_f32_is_asked(tflite_fp32, monkeypatch, precision, enforce_f32):
    """LiteRT's GPU accelerator computes in fp16 by default (its outputs differed from the CPU's by 0.42 % of the
    largest logit on a real GPU): edgekit reports f16 for it, and precision='f32' becomes the accelerator's own
    enforce_f32. Checked at the point LiteRT receives its options (no GPU here)."""
    from ai_edge_litert import compiled_model
    from edgekit.runtimes._litert import _gpu_precision

    received = []

    class Recording:
        @staticmethod
        def from_file(path, *, environment, options):
            received.append(options.gpu_options)
            raise RuntimeError("ERROR: No adapters found")

    monkeypatch.setattr(compiled_model, "CompiledModel", Recording)
    with pytest.raises(DeviceError, match="no GPU adapter"):
        edgekit.load(tflite_fp32, device="gpu", precision=precision)
    (gpu_options,) = received  # LiteRT's default GpuOptions when none is passed
    assert bool(getattr(gpu_options, "enforce_f32", False)) is enforce_f32
    assert _gpu_precision(precision) == ("f32" if precision == "f32" else "f16")
    with pytest.raises(edgekit.UnsupportedModelError, match="f16 \\(its default\\) or f32, not 'bf16'"):
        _gpu_precision("bf16")
