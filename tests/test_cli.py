"""The CLI: results on stdout, one-line errors with exit 1, usage errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny
from click.testing import CliRunner

from edgekit.cli import cli

pytestmark = [pytest.mark.litert, pytest.mark.onnxruntime, pytest.mark.openvino]


@pytest.fixture
def invoke():
    runner = CliRunner()

    def call(*args: str):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return call


@pytest.mark.parametrize(
    ("fixture", "fmt", "fully_integer"),
    [("tflite_int8", "tflite", True), ("tflite_fp32", "tflite", False), ("onnx_fp32", "onnx", False),
     ("ir_fp32", "openvino", False)],
)
def test_inspect_json(invoke, request, fixture, fmt, fully_integer):
    path = request.getfixturevalue(fixture)
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == fmt
    assert [i["name"] for i in info["inputs"]] == ["input"] and info["inputs"][0]["shape"] == [None, 16]
    assert info["audit"]["fully_integer"] is fully_integer
    assert len(info["sha256"]) == 64 and info["size_bytes"] == path.stat().st_size + (
        path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)


def test_inspect_int8_tflite_audit(invoke, tflite_int8):
    info = json.loads(invoke("inspect", tflite_int8, "--json").stdout)
    audit = info["audit"]
    assert audit["op_types"] == {"FULLY_CONNECTED": 2, "SOFTMAX": 1}
    assert audit["integer_ops"] == 3 and audit["float_ops"] == {} and audit["input_dtypes"] == ["int8"]
    assert info["inputs"][0]["scale"] == pytest.approx(2 / 255, rel=1e-3)


def test_inspect_text(invoke, tflite_int8):
    result = invoke("inspect", tflite_int8)
    assert result.exit_code == 0
    assert "fully integer: yes" in result.stdout and "FULLY_CONNECTED×2" in result.stdout


@pytest.mark.parametrize("fixture", ["tflite_fp32", "onnx_fp32", "ir_fp32"])
def test_run_from_npy_matches_reference(invoke, request, tmp_path, fixture):
    x = tiny.sample_inputs(1, seed=4)
    np.save(tmp_path / "x.npy", x)
    # compared with the float reference at 1e-5, so at f32 (OpenVINO would pick bf16 on a bf16-capable CPU)
    result = invoke("run", request.getfixturevalue(fixture), "--input", f"input={tmp_path / 'x.npy'}", "--json",
                    "--precision", "f32")
    assert result.exit_code == 0, result.output
    (out,) = json.loads(result.stdout)["outputs"]
    expected = tiny.reference_output(x)[0]
    assert out["name"] == "output" and out["shape"] == [1, 4]
    assert out["top5"][0]["index"] == int(expected.argmax())
    assert out["top5"][0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_run_random_is_seeded_and_saves_npz_without_clobbering(invoke, onnx_fp32, tmp_path):
    target = tmp_path / "out.npz"
    first = invoke("run", onnx_fp32, "--random", "--seed", "5", "--output", target)
    assert first.exit_code == 0
    saved = np.load(target)["output"]
    again = invoke("run", onnx_fp32, "--random", "--seed", "5", "--output", target)
    assert again.exit_code == 1 and "already exists" in again.stderr and "--force" in again.stderr
    forced = invoke("run", onnx_fp32, "--random", "--seed", "5", "--output", target, "--force")
    assert forced.exit_code == 0
    np.testing.assert_array_equal(np.load(target)["output"], saved)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temporary leftovers


def test_run_image_uses_the_recipe(invoke, image_onnx, tmp_path):
    from PIL import Image

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(pixels, mode="L").save(tmp_path / "digit.png")
    result = invoke("run", image_onnx, "--image", tmp_path / "digit.png", "--json")
    assert result.exit_code == 0, result.output
    import onnx
    from onnx import numpy_helper

    weights = numpy_helper.to_array(onnx.load(image_onnx).graph.initializer[0])
    expected = (pixels.reshape(1, 64).astype(np.float32) / 255) @ weights
    (out,) = json.loads(result.stdout)["outputs"]
    assert out["top5"][0]["index"] == int(expected.argmax())
    assert out["max"] == pytest.approx(float(expected.max()), rel=1e-5)


def test_run_int8_raw_prints_integers(invoke, tflite_int8):
    result = invoke("run", tflite_int8, "--random", "--raw", "--json")
    (out,) = json.loads(result.stdout)["outputs"]
    assert out["dtype"] == "int8" and -128 <= out["min"] <= out["max"] <= 127


def test_devices_lists_every_engine(invoke):
    result = invoke("devices", "--json")
    data = json.loads(result.stdout)
    engines = {e["backend"]: e for e in data["engines"]}
    assert set(engines) == {"litert", "onnxruntime", "openvino"}
    assert all(e["installed"] for e in engines.values())
    assert "CPUExecutionProvider" in engines["onnxruntime"]["accelerators"]
    assert "CPU" in engines["openvino"]["accelerators"]
    assert data["system"]["cores"] >= 1 and data["system"]["arch"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["run", "missing.onnx", "--random"], 1, "Error: model file 'missing.onnx' does not exist"),
        (["inspect", "."], 1, "Error: '.' is a folder"),
        (["run", "MODEL"], 2, "give exactly one of --input"),
        (["run", "MODEL", "--random", "--device", "tpu"], 2, "Invalid value for '--device'"),
        (["run", "MODEL", "--random", "--device", "gpu"], 1, "Error: LiteRT has no usable GPU accelerator"),
        (["run", "MODEL", "--input", "input=nothere.npy"], 1, "Error: cannot read input file 'nothere.npy'"),
    ],
)
def test_errors_are_one_line(invoke, tflite_fp32, args, code, fragment):
    result = invoke(*[str(tflite_fp32) if a == "MODEL" else a for a in args])
    assert result.exit_code == code
    assert fragment in result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    from edgekit import UnsupportedModelError

    with pytest.raises(UnsupportedModelError):
        CliRunner().invoke(cli, ["--debug", "inspect", str(tmp_path / "nope.onnx")], catch_exceptions=False)


def test_run_text_output(invoke, tflite_fp32):
    result = invoke("run", tflite_fp32, "--random")
    assert result.exit_code == 0, result.output
    assert "output [1, 4] float32" in result.stdout and "top1: class" in result.stdout


def test_devices_text_output(invoke):
    result = invoke("devices")
    assert result.exit_code == 0 and "onnxruntime" in result.stdout and "cores" in result.stdout


def test_convert_judges_with_the_users_decide_function(invoke, onnx_fp32, tmp_path):
    script = tmp_path / "app.py"
    script.write_text("def decide(outputs):\n    (y,) = outputs.values()\n"
                      "    return y.reshape(len(y), -1).argmax(1)\n\n"
                      "def broken(outputs):\n    raise KeyError('logits')\n")
    result = invoke("convert", onnx_fp32, "--to", "onnx-int8", "--calib", "random", "--calib-size", "16",
                    "--val-size", "12", "--decide", f"{script}:decide", "-o", tmp_path / "out", "--json")
    (report,) = json.loads(result.stdout)
    decisions = report["validation"]["decisions"]
    assert decisions["by"] == "decide() decide" and decisions["count"] == 12 and 0 <= decisions["agreement"] <= 1
    assert report["validation"]["drop_basis"] == "decisions changed, % (decide() decide)"
    usage = [(f"{script}", "write FILE.py:FUNCTION"), (f"{tmp_path / 'none.py'}:decide", "does not exist"),
             (f"{script}:missing", "has no function 'missing'")]
    for spec, fragment in usage:
        refused = invoke("convert", onnx_fp32, "--to", "onnx-int8", "--calib", "random", "--decide", spec,
                         "-o", tmp_path / "refused")
        assert refused.exit_code == 2 and fragment in refused.stderr and "--decide" in refused.stderr
        assert not (tmp_path / "refused").exists()
    failing = invoke("convert", onnx_fp32, "--to", "onnx-int8", "--calib", "random", "--decide", f"{script}:broken",
                     "-o", tmp_path / "failing")
    errors = [line for line in failing.stderr.splitlines() if line.startswith("Error")]
    assert failing.exit_code == 1 and "Traceback" not in failing.stderr
    assert errors == ["Error: decide() broken failed on the validation outputs: KeyError: 'logits'"]
    assert not any((tmp_path / "failing").glob("*.onnx")), "a failed conversion leaves no artifact"


def test_finalizer_noise_after_an_interrupt_stays_quiet(monkeypatch, capsys):
    """A finalizer failing on what SIGINT left half-built (TensorFlow's ApiDefMap) printed a traceback after
    'nothing was written'; before any stop, such errors still show."""
    import sys

    from edgekit import _progress
    from edgekit.cli import _ignore_interrupts

    class HalfBuilt:
        def __del__(self):
            raise AttributeError("'ApiDefMap' object has no attribute '_api_def_map'")

    monkeypatch.setattr(sys, "unraisablehook", _ignore_interrupts)
    monkeypatch.setattr(_progress, "stop_requested", False)
    HalfBuilt()  # collected at once: its finalizer's error goes to the hook
    assert "_api_def_map" in capsys.readouterr().err
    monkeypatch.setattr(_progress, "stop_requested", True)
    HalfBuilt()
    assert capsys.readouterr().err == ""


@pytest.mark.onnxruntime
def test_errors_name_options_in_the_readers_words(invoke, onnx_fp32, tmp_path):
    """The command line reads flags (--calib PATH), a Python caller keywords (calibration=PATH); after a command
    has run in this process, Python callers get keywords again."""
    import edgekit

    done = invoke("convert", onnx_fp32, "--to", "onnx-int8", "-o", tmp_path / "cli")
    assert done.exit_code == 1
    assert done.stderr.strip() == ("Error: onnx-int8 need(s) calibration data: pass --calib PATH (or --calib "
                                   "random)"), done.stderr
    with pytest.raises(edgekit.ConversionError) as raised:
        edgekit.convert(onnx_fp32, "onnx-int8", output_dir=tmp_path / "api")
    assert str(raised.value) == "onnx-int8 need(s) calibration data: pass calibration=PATH (or calibration='random')"


@pytest.mark.onnxruntime
def test_json_on_stdout_parses_when_a_native_library_prints_there(onnx_fp32):
    """A native library writing to file descriptor 1 (LiteRT's GPU accelerator: "INFO: Loaded OpenCL library
    with dlopen.") lands on stderr; stdout holds only the JSON — in the real console entry point, a subprocess."""
    import os
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "import edgekit._api as api\n"
        "real = api.load\n"
        "def noisy(*args, **kwargs):\n"
        "    os.write(1, b'INFO: Loaded OpenCL library with dlopen.\\n')\n"
        "    return real(*args, **kwargs)\n"
        "api.load = noisy\n"
        "from edgekit.cli import main\n"
        f"sys.argv = ['edgekit', 'profile', {str(onnx_fp32)!r}, '--json', '--runs', '3', '--min-seconds', '0']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"].endswith("tiny_fp32.onnx") and report["latency_ms"]["p50"] > 0
    assert "INFO: Loaded OpenCL library with dlopen." in done.stderr
