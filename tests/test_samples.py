"""Every sample runs: the demo, the device app, convert.sh, custom_calibration.py, pytorch_to_edge.py,
prune_and_convert.py and profile_on_pi.md."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from user_env import user_env

from edgekit.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
pytestmark = [pytest.mark.slow, pytest.mark.tensorflow, pytest.mark.litert, pytest.mark.onnxruntime,
              pytest.mark.openvino]


def _env() -> dict[str, str]:
    """The test interpreter's bin folder first on PATH, so scripts find this install's `edgekit`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`edgekit demo` as a user runs it (no CI markers in the environment), with no network: in a network
    namespace of its own where the machine allows one, and with every connection attempt of the process
    and its children recorded (tests/netwatch)."""
    folder = tmp_path_factory.mktemp("demo")
    out, log = folder / "edgekit-demo", folder / "network.log"
    command = [sys.executable, "-c", "from edgekit.cli import main; main()", "demo", "-o", str(out),
               "--profile-seconds", "0.1", "--json"]
    if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "--net", *command]
    (folder / "home").mkdir()
    watch = os.pathsep.join([str(ROOT / "tests" / "netwatch"), os.environ.get("PYTHONPATH", "")])
    env = user_env(HOME=str(folder / "home"), PYTHONPATH=watch, EDGEKIT_NETWATCH_LOG=str(log))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout), done.stderr, log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def demo_output(demo_run):
    out, data, _, _ = demo_run
    return out, data


def test_demo_sends_nothing_anywhere_and_prints_no_traceback(demo_run):
    _, _, stderr, network = demo_run
    assert network == "", f"connection attempts during the demo:\n{network[:2000]}"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    home = demo_run[0].parent / "home"
    # OpenVINO's telemetry, when it runs, writes a client id and a usage counter under ~/intel
    assert not (home / "intel").exists(), sorted(p.name for p in (home / "intel").iterdir())


def test_demo_converts_validates_and_profiles_every_form(demo_output):
    out, data = demo_output
    rows = {r["target"]: r for r in data["rows"]}
    assert set(rows) == {f"{f}-{k}" for f in ("tflite", "onnx", "openvino") for k in ("fp32", "int8")}
    for target, row in rows.items():
        assert Path(row["artifact"]).is_file() and row["p50_ms"] > 0 and row["size_bytes"] > 0
        assert row["accuracy"] > 95, target
        # the model's own memory, not the demo process's (TensorFlow alone holds ~900 MB)
        assert 0 <= row["model_mb"] < 100, (target, row["model_mb"])
        if target.endswith("int8"):
            float_row = rows[target.replace("int8", "fp32")]
            assert row["drop"] <= 1.0 and row["size_bytes"] < 0.6 * float_row["size_bytes"], target
    assert json.loads((out / "report.json").read_text())["notes"][0].startswith("CPU: ")
    assert (out / "report.md").read_text().startswith("# edgekit demo")
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert len(json.loads((out / "report.json").read_text())["profiles"]) == 6


def test_demo_explains_an_int8_form_slower_than_float_per_cpu():
    """Where the CPU is the reason (LiteRT's int8 on x86 without VNNI), the demo says so with the measured
    kernel ratio; anywhere else a slower int8 form is a bug, and the demo asks for the report."""
    from edgekit.runtimes.cpu import X86_VNNI, X86_WITHOUT_VNNI

    from edgekit.demo import DemoRow, cpu_notes

    rows = [DemoRow("tflite-int8", Path("m_int8.tflite"), 1, 99.0, 0.0, 1.5, 1.6, 0.78, 1.0),
            DemoRow("onnx-int8", Path("m_int8.onnx"), 1, 99.0, 0.0, 0.6, 0.7, 1.33, 1.0)]
    on_avx2 = cpu_notes(rows, X86_WITHOUT_VNNI)
    assert "vpmaddubsw" in on_avx2[0] and len(on_avx2) == 2
    assert on_avx2[1].startswith("tflite-int8 is 0.78x") and "widen to 16 bits" in on_avx2[1]
    assert "please report" in cpu_notes(rows, X86_VNNI)[1]
    explained = cpu_notes(rows, X86_VNNI, {"tflite-int8": ["the HARD_SWISH kept in float for its engine each add "
                                                           "a dequantize and a quantize"]})
    assert explained[1].endswith("its float form here: the HARD_SWISH kept in float for its engine each add a "
                                 "dequantize and a quantize")


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "is not an edgekit demo folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1


def test_device_app_runs_on_the_image_folder_without_tensorflow(demo_output):
    out, _ = demo_output
    model = out / "models" / "digits_mobilenet_int8.tflite"
    wrapper = (
        "import runpy, sys\n"
        f"sys.argv = ['app.py', '--model', {str(model)!r}, '--images', {str(SAMPLES / 'digits' / 'images')!r},"
        " '--limit', '40']\n"
        f"try:\n    runpy.run_path({str(SAMPLES / 'device_app' / 'app.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = ('tensorflow', 'nncf', 'edgekit.converters', 'tf2onnx')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.endswith(" ms")]
    assert len(lines) == 40
    parsed = [re.match(r"^(\d)/\S+: (\d) \(([\d.]+)\) ([\d.]+) ms$", line) for line in lines]
    assert all(parsed), lines[:3]
    accuracy = sum(m.group(1) == m.group(2) for m in parsed) / len(parsed)
    assert accuracy >= 0.9
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert "no camera: reading images" in done.stderr


def test_convert_sh(tmp_path):
    done = subprocess.run(["bash", str(SAMPLES / "convert.sh"), str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    made = {p.name for p in tmp_path.rglob("*") if p.suffix in (".tflite", ".onnx", ".xml")}
    assert {"digits_cnn_int8.tflite", "digits_cnn_fp32.tflite", "digits_cnn_int8.onnx", "digits_cnn_fp16.xml",
            "digits_cnn_int8.xml", "digits_cnn_int16x8.tflite", "digits_cnn_dynamic.tflite",
            "digits_cnn_int8-dynamic.onnx", "digits_cnn_fp16.onnx"} <= made
    arm = json.loads((tmp_path / "arm64" / "digits_cnn_int8.onnx.json").read_text())
    assert arm["options"]["activation_type"] == "int8" and arm["options"]["calib_method"] == "entropy"


def test_custom_calibration_sample(tmp_path):
    done = subprocess.run([sys.executable, str(SAMPLES / "custom_calibration.py"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all("calibration iterable" in line for line in lines)
    for line in lines:
        converted, original = (float(v) for v in re.findall(r"([\d.]+)%", line))
        assert original - converted <= 1.5


@pytest.mark.torch
def test_pytorch_sample_converts_the_module_and_its_pt2_file(tmp_path):
    done = subprocess.run([sys.executable, str(SAMPLES / "pytorch_to_edge.py"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["tflite-int8", "onnx-int8", "openvino-int8"]
    for line in lines:  # on the held-out image folder, against the PyTorch model's own accuracy
        converted, original = (float(v) for v in re.findall(r"([\d.]+)%", line))
        assert original >= 90 and original - converted <= 2, line
    command = shlex.split(done.stderr.strip().splitlines()[-1].split(": ", 1)[1])  # the CLI line it prints
    again = subprocess.run(command + ["-o", str(tmp_path / "cli"), "--json"], capture_output=True, text=True,
                           env=_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    (report,) = json.loads(again.stdout)
    assert report["status"] == "ok" and report["source"]["kind"] == "pytorch"
    assert report["validation"]["accuracy_float"] >= 90


@pytest.mark.torch
def test_pruning_sample_removes_channels_and_keeps_accuracy_on_every_engine(tmp_path):
    done = subprocess.run([sys.executable, str(SAMPLES / "prune_and_convert.py"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary, *forms = done.stdout.strip().splitlines()
    kept, total = (int(v.replace(",", "")) for v in re.findall(r"([\d,]+) of ([\d,]+) parameters", summary)[0])
    pruned, unpruned = (float(v) for v in re.findall(r"([\d.]+)%\)?", summary)[-2:])
    assert kept <= 0.3 * total, summary  # half the channels of each layer: about a quarter of the weights
    assert pruned >= 90 and unpruned - pruned <= 3, summary
    assert [line.split(":")[0] for line in forms] == ["tflite-int8", "onnx-int8", "openvino-int8"]
    for line in forms:
        converted, original = (float(v) for v in re.findall(r"([\d.]+)%", line))
        assert original - converted <= 2, line


def test_profile_on_pi_commands_are_valid(tmp_path):
    text = (SAMPLES / "profile_on_pi.md").read_text()
    commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.strip().startswith("edgekit ")]
    assert len(commands) >= 5
    for command in commands:
        args = shlex.split(command.split("#")[0])[1:]
        name, rest = args[0], args[1:]
        sub = cli.get_command(None, name)
        assert sub is not None, command
        sub.make_context(name, rest)  # raises click.UsageError on an unknown flag or bad value
