"""An emulated Raspberry Pi: an arm64 Debian root under qemu-user with edgekit installed as a Pi user would.

tests/pi/build_root.sh builds it (.ci/run calls it; in CI a missing root is a failure, not a skip).
Emulated timings mean nothing, so these tests check what must hold on a Pi: the device path works
with aarch64 wheels and no TensorFlow, outputs match x86, and profiling over SSH reaches an "aarch64
device" end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest
import tiny
from click.testing import CliRunner
from sshd import start_sshd

import edgekit
from edgekit.cli import cli

ROOT = Path(os.environ.get("EDGEKIT_PI_ROOT", "/var/cache/edgekit-pi/root"))
READY = ROOT / ".edgekit-ready"
# The CPU qemu emulates: a Raspberry Pi 5's Cortex-A76 (fp16 arithmetic and dot product, no SVE/i8mm/SME).
# qemu's default "max" CPU advertises extensions no Pi has, and XNNPACK's int8 kernels chosen for them
# gave wrong outputs under qemu 7.2 (cosine -0.02 against x86), so the board is named, as a user's is.
BOARD_CPU = {"QEMU_CPU": "cortex-a76"}
pytestmark = [pytest.mark.slow, pytest.mark.litert, pytest.mark.onnxruntime, pytest.mark.openvino]

if not READY.exists():
    if os.environ.get("CI"):
        pytest.fail(f"the emulated arm64 root is not ready at {ROOT}: .ci/run must run tests/pi/build_root.sh "
                    "first (it says why it failed)", pytrace=False)
    pytest.skip(f"no emulated arm64 root at {ROOT}; build it with: sudo bash tests/pi/build_root.sh",
                allow_module_level=True)


def chroot(*args: str, timeout: float = 600, venv: str = "/opt/venv") -> subprocess.CompletedProcess:
    """Run a command inside the arm64 root (under qemu, as a Pi 5's CPU), with /proc but without the host's
    /sys (build_root.sh writes the two sysfs files XNNPACK's CPU detection reads)."""
    if subprocess.run(["mountpoint", "-q", str(ROOT / "proc")]).returncode != 0:
        subprocess.run(["mount", "-t", "proc", "proc", str(ROOT / "proc")], check=True)
    board = [f"{name}={value}" for name, value in BOARD_CPU.items()]
    return subprocess.run(["chroot", str(ROOT), "/usr/bin/env", "-i", f"PATH={venv}/bin:/usr/bin:/bin",
                           "HOME=/root", *board, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def device_dir(tflite_int8, tflite_fp32, onnx_int8_io, ir_fp32):
    """The test models copied into the device's /tmp."""
    folder = ROOT / "tmp" / "edgekit-models"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for source in (tflite_int8, tflite_fp32, onnx_int8_io, ir_fp32, ir_fp32.with_suffix(".bin")):
        shutil.copyfile(source, folder / source.name)
    return folder


def test_devices_reports_aarch64_and_its_engines():
    done = chroot("edgekit", "devices", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["system"]["arch"] == "aarch64" and data["system"]["warnings"] == []
    engines = {e["backend"]: e for e in data["engines"]}
    assert all(engines[name]["installed"] for name in ("litert", "onnxruntime", "openvino"))
    assert engines["litert"]["implementation"] == "ai_edge_litert"


def test_no_tensorflow_on_the_device():
    done = chroot("python", "-c", "import importlib.util as u; print(u.find_spec('tensorflow'), u.find_spec('nncf'))")
    assert done.stdout.strip() == "None None", done.stdout + done.stderr


_RUN = """
import json, sys
import numpy as np
import edgekit
x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
with edgekit.load(sys.argv[1]) as rt:
    out = rt.run(x)
print(json.dumps({"output": next(iter(out.values())).tolist(), "engine": rt.engine,
                  "heavy": sorted(m for m in ("tensorflow", "edgekit.converters", "nncf") if m in sys.modules)}))
"""

# the same, with the input read from an .npy file (a 64x64 image is too long for a command line)
_RUN_FROM_FILE = _RUN.replace("np.asarray(json.loads(sys.argv[2]), dtype=np.float32)", "np.load(sys.argv[2])")


@contextmanager
def host_sysfs():
    """OpenVINO's ARM CPU plugin needs the sysfs CPU topology (hwloc) and segfaults under qemu-user
    without it, while onnxruntime's CPU detection segfaults *with* the host's /sys. So the host's
    /sys is bound into the root only while OpenVINO runs."""
    subprocess.run(["mount", "--bind", "/sys", str(ROOT / "sys")], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(ROOT / "sys")], check=True)


@pytest.mark.parametrize("name", ["tiny_int8.tflite", "tiny_int8io.onnx", "tiny_fp32.xml"])
def test_outputs_on_arm64_match_x86(device_dir, name):
    x = tiny.sample_inputs(4, seed=42)
    with host_sysfs() if name.endswith(".xml") else nullcontext():
        done = chroot("python", "-c", _RUN, f"/tmp/edgekit-models/{name}", json.dumps(x.tolist()))
    assert done.returncode == 0, done.stderr[-2000:]
    device = json.loads(done.stdout.strip().splitlines()[-1])
    with edgekit.load(device_dir / name) as rt:
        here = rt.run(x)["output"]
    # int8 kernels can round differently between x86 and ARM: at most one quantization step apart
    np.testing.assert_allclose(np.asarray(device["output"]), here, atol=1.01 / 256)
    assert np.array_equal(np.asarray(device["output"]).argmax(1), here.argmax(1))
    assert device["heavy"] == []


@pytest.mark.torch
def test_a_pytorch_models_tflite_forms_run_on_arm64_as_on_x86(tmp_path):
    """litert-torch + ai-edge-quantizer output (op versions included) loads in the Pi's ai-edge-litert."""
    import torch_zoo

    from edgekit.pipeline.validation import cosine

    model, example = torch_zoo.build("mobilenet_v3")
    data = torch_zoo.inputs_for("mobilenet_v3", 40, seed=1)
    results = edgekit.convert(model, "tflite-int8,tflite-int16x8", example_inputs=example, calib_size=32,
                              calibration=[{"images": x[None]} for x in data["images"]], output_dir=tmp_path)
    folder = ROOT / "tmp" / "edgekit-torch"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    x = torch_zoo.inputs_for("mobilenet_v3", 1, seed=99)["images"]
    np.save(folder / "x.npy", x)  # 12,288 floats: too long for a command line
    try:
        for result in results:
            shutil.copyfile(result.artifact, folder / result.artifact.name)
            done = chroot("python", "-c", _RUN_FROM_FILE, f"/tmp/edgekit-torch/{result.artifact.name}",
                          "/tmp/edgekit-torch/x.npy")
            assert done.returncode == 0, done.stderr[-2000:]
            device = np.asarray(json.loads(done.stdout.strip().splitlines()[-1])["output"])
            with edgekit.load(result.artifact) as rt:
                here = rt.run(x)["output_0"]
            assert cosine(here, device) >= 0.999 and device.argmax() == here.argmax(), result.target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_RUN_AT_PRECISION = """
import json, sys
import numpy as np
import edgekit
with edgekit.load(sys.argv[1], precision=sys.argv[3]) as rt:
    out = rt.run(np.asarray(json.loads(sys.argv[2]), dtype=np.float32))["output"]
print(json.dumps({"output": out.tolist(), "precision": rt.precision}))
"""


def test_a_pi5_computes_in_fp16_where_the_model_allows_it(tmp_path, tflite_fp32):
    """A Cortex-A76 has fp16 arithmetic: a model marked for it (tflite-fp16's default) and precision="f16" run
    in fp16 there (results move, within fp16's precision), an unmarked model in f32 (as on x86)."""
    from edgekit.converters._tflite import _mark_fp16_arithmetic

    folder = ROOT / "tmp" / "edgekit-fp16"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(tflite_fp32, folder / "plain.tflite")
    shutil.copyfile(tflite_fp32, folder / "marked.tflite")
    _mark_fp16_arithmetic(folder / "marked.tflite", True)
    x = np.random.default_rng(1).random((8, 16), dtype=np.float32)
    with edgekit.load(tflite_fp32) as rt:
        exact = rt.run(x)["output"]
    try:
        for name, asked, ran in [("plain", "auto", "f32"), ("marked", "auto", "f16"), ("plain", "f16", "f16")]:
            done = chroot("python", "-c", _RUN_AT_PRECISION, f"/tmp/edgekit-fp16/{name}.tflite",
                          json.dumps(x.tolist()), asked)
            assert done.returncode == 0, done.stderr[-2000:]
            device = json.loads(done.stdout.strip().splitlines()[-1])
            assert device["precision"] == ran, (name, asked)
            output = np.asarray(device["output"])
            np.testing.assert_allclose(output, exact, atol=(2e-3 if ran == "f16" else 1e-5) * np.abs(exact).max())
            if ran == "f16":  # fp16 arithmetic really ran: the results moved
                assert not np.array_equal(output.astype(np.float32), exact), (name, asked)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.torch
def test_a_sparse_encoded_tflite_runs_on_arm64_as_its_dense_form_on_x86(tmp_path):
    """tflite-sparse's DENSIFY and CSR weights load in the Pi's ai-edge-litert, where XNNPACK's sparse kernels
    live: the answers are the dense model's (float summation order aside)."""
    from test_sparsity import _pruned_mobilenet

    model, example = _pruned_mobilenet(0.85)
    dense, sparse = edgekit.convert(model, "tflite-fp32,tflite-sparse", example_inputs=example, output_dir=tmp_path,
                                    validate_outputs=False)
    folder = ROOT / "tmp" / "edgekit-sparse"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    x = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
    np.save(folder / "x.npy", x)
    try:
        shutil.copyfile(sparse.artifact, folder / "sparse.tflite")
        done = chroot("python", "-c", _RUN_FROM_FILE, "/tmp/edgekit-sparse/sparse.tflite", "/tmp/edgekit-sparse/x.npy")
        assert done.returncode == 0, done.stderr[-2000:]
        device = np.asarray(json.loads(done.stdout.strip().splitlines()[-1])["output"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with edgekit.load(dense.artifact) as rt:
        here = rt.run(x)["output_0"]
    np.testing.assert_allclose(device, here, atol=1e-5 * np.abs(here).max())


def test_a_cpu_xnnpack_cannot_read_gives_one_error_line_saying_why(device_dir):
    """A container without sysfs: XNNPACK cannot detect the CPU, so fp16 cannot be forced; the reason is
    LiteRT's logged error, not the source line its exception names, and its teardown stays off the terminal."""
    cpu = ROOT / "sys" / "devices"
    cpu.rename(ROOT / "sys" / "devices-hidden")
    try:
        done = chroot("edgekit", "run", "/tmp/edgekit-models/tiny_fp32.tflite", "--random", "--precision", "f16")
    finally:
        (ROOT / "sys" / "devices-hidden").rename(cpu)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: LiteRT cannot compile '/tmp/edgekit-models/tiny_fp32.tflite': Error in cpuinfo: failed to parse "
        "both lists of possible and present processors"], done.stderr


def test_a_device_without_an_engine_says_what_to_install(device_dir):
    done = chroot("edgekit", "run", "/tmp/edgekit-models/tiny_int8.tflite", "--random", venv="/opt/bare")
    assert done.returncode == 1
    assert "pip install 'edgekit[litert]'" in done.stderr and done.stderr.count("Error:") == 1


@pytest.fixture(scope="module")
def pi_sshd(tmp_path_factory):
    sshd = start_sshd(tmp_path_factory.mktemp("pi-ssh"), root=ROOT, session_env=BOARD_CPU)
    yield sshd
    sshd.stop()


def test_profile_remote_on_the_emulated_pi(pi_sshd, tmp_path, tflite_int8, tflite_fp32):
    result = CliRunner().invoke(cli, [
        "profile", str(tflite_int8), str(tflite_fp32), "--runs", "5", "--min-seconds", "0.1", "--warmup-seconds", "0",
        "--remote", f"root@127.0.0.1:{pi_sshd.port}", "--identity", str(pi_sshd.client_key),
        "--known-hosts", str(tmp_path / "known_hosts"), "--accept-new-host-key", "--python", "/opt/venv/bin/python",
        "--json"])
    assert result.exit_code == 0, result.output
    int8, fp32 = json.loads(result.stdout)
    for report in (int8, fp32):
        assert report["system"]["arch"] == "aarch64" and report["remote"].endswith(f":{pi_sshd.port}")
        assert report["engine"].startswith("ai_edge_litert") and report["runs"] >= 5
        assert {"governor", "temperatures", "throttling", "board"} <= set(report["system"])
    assert (int8["model"], fp32["model"]) == ("tiny_int8.tflite", "tiny_fp32.tflite")


def test_engine_missing_on_the_remote_device(pi_sshd, tmp_path, tflite_int8):
    result = CliRunner().invoke(cli, [
        "profile", str(tflite_int8), "--runs", "2", "--min-seconds", "0",
        "--remote", f"root@127.0.0.1:{pi_sshd.port}", "--identity", str(pi_sshd.client_key),
        "--known-hosts", str(tmp_path / "known_hosts"), "--accept-new-host-key", "--python", "/opt/bare/bin/python"])
    assert result.exit_code == 1 and "pip install 'edgekit[litert]'" in result.stderr, result.output


def test_sys_is_not_mounted_in_the_root():
    """With the host's /sys visible, onnxruntime's CPU detection segfaults under qemu: keep it out."""
    assert subprocess.run(["mountpoint", "-q", str(ROOT / "sys")]).returncode != 0


@pytest.mark.optuna
def test_optimize_measures_its_trials_on_the_emulated_pi(pi_sshd, tmp_path, digits_torch_onnx):
    """One trial round with latency measured on the arm64 device over SSH (the baselines: ONNX int8 and fp32)."""
    images = Path(__file__).resolve().parent.parent / "samples" / "digits" / "images"
    result = CliRunner().invoke(cli, [
        "optimize", str(digits_torch_onnx), "--calib", str(images), "--color", "gray", "--layout", "nchw",
        "--calib-size", "100", "--val-size", "100", "--formats", "onnx", "--trials", "2", "--settle-rounds", "1",
        "--remote", f"root@127.0.0.1:{pi_sshd.port}", "--identity", str(pi_sshd.client_key),
        "--known-hosts", str(tmp_path / "known_hosts"), "--accept-new-host-key", "--python", "/opt/venv/bin/python",
        "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["baseline"] for r in rows] == ["onnx-int8 default", "onnx-fp32 default"]
    assert all(r["device"] == f"root@127.0.0.1:{pi_sshd.port}" and r["latency_ms"] > 0 for r in rows)
    assert data["best"]["artifact"].endswith(".onnx") and f"--remote root@127.0.0.1:{pi_sshd.port}" in \
        data["best"]["command"]


@pytest.mark.rknn
def test_a_rockchip_model_on_a_pi_without_its_npu_says_what_is_missing(onnx_fp32, tmp_path):
    """rknn-toolkit-lite2 installs from the registry's aarch64 wheel (`edgekit[rknn]`); the RKNPU driver cannot be
    emulated, so loading a .rknn names the driver paths it looked for, and `edgekit devices` lists what is there."""
    (result,) = edgekit.convert(onnx_fp32, "rknn-int8", calibration="random", input_shapes={"input": (1, 16)},
                                output_dir=tmp_path)
    folder = ROOT / "tmp" / "edgekit-rknn"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for made in (result.artifact, Path(f"{result.artifact}.json")):
        shutil.copyfile(made, folder / made.name)
    done = chroot("edgekit", "run", f"/tmp/edgekit-rknn/{result.artifact.name}", "--random")
    assert done.returncode == 1 and done.stderr.count("Error:") == 1, done.stderr
    assert "no RKNPU here" in done.stderr and "/sys/kernel/debug/rknpu" in done.stderr, done.stderr
    listed = chroot("edgekit", "devices", "--json")
    assert listed.returncode == 0, listed.stderr
    (rknpu,) = [n for n in json.loads(listed.stdout)["npus"] if n["name"] == "Rockchip RKNPU"]
    assert not rknpu["present"] and any(f.startswith("rknn-toolkit-lite2") for f in rknpu["found"]), rknpu
    assert any(m.startswith("RKNPU kernel driver") for m in rknpu["missing"]), rknpu
