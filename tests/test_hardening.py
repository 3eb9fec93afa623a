"""Hardening: hostile model files, bad feeds, interrupted and failing conversions, threads.

Model files are programs from strangers and a device app runs for weeks: every failure here must be a
typed, one-line, actionable error, with the host process alive and nothing half-written or clobbered.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tiny
from click.testing import CliRunner
from user_env import user_env

import edgekit
from edgekit import EdgekitError, InferenceError, UnsupportedModelError
from edgekit.cli import cli

pytestmark = [pytest.mark.litert, pytest.mark.onnxruntime, pytest.mark.openvino]
ROOT = Path(__file__).resolve().parents[1]


# -- a catalogue of hostile and broken files ---------------------------------------------------------


def _external(folder: Path, location: str) -> Path:
    """External data pointing at ``location``, with a symlink and a hard link to a file outside at hand."""
    path = tiny.save_with_external_data(folder, location)
    outside = folder.parent / f"secret-{folder.name}.bin"
    outside.write_bytes((folder / "weights.bin").read_bytes())
    os.symlink(outside, folder / "link.bin")
    os.link(outside, folder / "hard.bin")
    return path


def _ort_mem_addr(folder: Path) -> Path:
    """The `_ORT_MEM_ADDR_` trick: an initializer whose 'external data' is a raw memory address (offset).
    OpenVINO 2026.4 dereferences it and segfaults; ONNX Runtime reserves the form for in-memory data."""
    import onnx

    model = tiny.make_onnx()
    tensor = model.graph.initializer[0]
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "*/_ORT_MEM_ADDR_/*"), ("offset", "4096"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "memaddr.onnx"
    onnx.save(model, path)
    return path


def _terabyte_tensor(folder: Path) -> Path:
    """A float initializer declaring 1024 x 1024 x 1024 x 1024 elements while holding 16 bytes."""
    from onnx import TensorProto, helper

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1024, 1024, 1024, 1024], raw_data=b"\0" * 16)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[tensor])
    path = folder / "huge.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def _not_the_pair(folder: Path, ir: Path, other_ir: Path) -> Path:
    shutil.copyfile(ir, folder / "model.xml")
    shutil.copyfile(other_ir.with_suffix(".bin"), folder / "model.bin")  # a bigger model's weights
    return folder / "model.xml"


def _truncated(folder: Path, source: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    target = folder / source.name
    target.write_bytes(data[: int(len(data) * keep)])
    if source.suffix == ".xml":
        shutil.copyfile(source.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


def _random(folder: Path, suffix: str) -> Path:
    path = folder / f"random{suffix}"
    path.write_bytes(np.random.default_rng(len(suffix)).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _short_bin(folder: Path, ir: Path) -> Path:
    shutil.copyfile(ir, folder / "m.xml")
    (folder / "m.bin").write_bytes(ir.with_suffix(".bin").read_bytes()[:50])
    return folder / "m.xml"


HOSTILE = {
    "missing": lambda d, f: d / "nope.onnx",
    "folder": lambda d, f: d,
    "empty": lambda d, f: (d / "empty.tflite").write_bytes(b"") or d / "empty.tflite",
    "truncated-tflite": lambda d, f: _truncated(d, f["tflite_fp32"]),
    "truncated-onnx": lambda d, f: _truncated(d, f["onnx_fp32"]),
    "truncated-xml": lambda d, f: _truncated(d, f["ir_fp32"], 0.5),
    "ir-bin-shorter-than-xml-says": lambda d, f: _short_bin(d, f["ir_fp32"]),
    "ir-xml-without-bin": lambda d, f: shutil.copyfile(f["ir_fp32"], d / "lonely.xml") and d / "lonely.xml",
    "ir-xml-not-the-pair": lambda d, f: _not_the_pair(d, f["ir_fp32"], f["image_ir"]),
    "random.tflite": lambda d, f: _random(d, ".tflite"),
    "random.onnx": lambda d, f: _random(d, ".onnx"),
    "random.xml": lambda d, f: _random(d, ".xml"),
    "external-dotdot": lambda d, f: _external(d, "../secret.bin"),
    "external-absolute": lambda d, f: _external(d, "/etc/hostname"),
    "external-symlink": lambda d, f: _external(d, "link.bin"),
    "external-hardlink": lambda d, f: _external(d, "hard.bin"),
    "ort-mem-addr": lambda d, f: _ort_mem_addr(d),
    "terabyte-tensor": lambda d, f: _terabyte_tensor(d),
}


@pytest.fixture
def files(tflite_fp32, onnx_fp32, ir_fp32, model_dir, image_onnx):
    import openvino as ov

    image_ir = model_dir / "image.xml"
    if not image_ir.exists():
        ov.save_model(ov.Core().read_model(image_onnx), image_ir, compress_to_fp16=False)
    return {"tflite_fp32": tflite_fp32, "onnx_fp32": onnx_fp32, "ir_fp32": ir_fp32, "image_ir": image_ir}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_a_typed_one_line_error_everywhere(tmp_path, files, case):
    folder = tmp_path / "case"
    folder.mkdir()
    path = HOSTILE[case](folder, files)
    with pytest.raises(EdgekitError):
        edgekit.load(path)
    runner = CliRunner()
    for args in (["inspect", str(path)], ["convert", str(path), "--to", "openvino-fp32", "-o", str(tmp_path / "out")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (case, args, result.output)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_terabyte_tensor_message_names_the_tensor(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"tensor 'w' declares 4.0 TiB"):
        edgekit.load(_terabyte_tensor(tmp_path))


def test_ir_pair_mismatch_is_named(tmp_path, files):
    with pytest.raises(UnsupportedModelError, match="is not the pair of 'model.xml'"):
        edgekit.load(_not_the_pair(tmp_path, files["ir_fp32"], files["image_ir"]))


def test_sha256_is_verified_before_loading(tflite_int8):
    digest = hashlib.sha256(tflite_int8.read_bytes()).hexdigest()
    with edgekit.load(tflite_int8, sha256=digest.upper()) as rt:
        assert rt.outputs[0].name == "output"
    with pytest.raises(UnsupportedModelError, match="not the expected"):
        edgekit.load(tflite_int8, sha256="0" * 64)


# -- isolation: a native crash becomes an error -------------------------------------------------------


def test_isolated_load_and_inspect_work_on_good_files(onnx_fp32, ir_fp32):
    with edgekit.load(ir_fp32, isolated=True) as rt:
        assert rt.inputs[0].name == "input"
    result = CliRunner().invoke(cli, ["inspect", str(onnx_fp32), "--isolated", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["format"] == "onnx"


def test_isolation_turns_a_real_engine_crash_into_an_error(tmp_path, monkeypatch):
    """OpenVINO reads ORT's `_ORT_MEM_ADDR_` external-data location as a raw address and segfaults.
    edgekit refuses such files before any engine sees them; here the isolated child skips that check
    and hands the file straight to OpenVINO, so the crash is real, and must come back as an error."""
    from edgekit.runtimes import _isolation

    hostile = _ort_mem_addr(tmp_path)
    monkeypatch.setattr(_isolation, "_CHILD", "import sys, openvino as ov\nov.Core().read_model(sys.argv[1])\n")
    with pytest.raises(UnsupportedModelError, match=r"crashed \(SIG[A-Z]+\) parsing .* in isolation"):
        _isolation.probe(hostile, "openvino")


# -- fuzzing: mutated tiny models, loaded in a child process -------------------------------------------

_FUZZ_CHILD = """
import json, sys
import edgekit
for index, path in enumerate(sys.argv[1:]):
    try:
        edgekit.load(path).close()
        outcome = "loaded"
    except edgekit.EdgekitError:
        outcome = "typed"
    except Exception as exc:
        outcome = "untyped: " + type(exc).__name__ + ": " + str(exc)[:200]
    print(json.dumps({"index": index, "outcome": outcome}), flush=True)
"""


def _mutants(source: Path, folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    data = source.read_bytes()
    paths = []
    for i in range(count):
        mutant = bytearray(data)
        kind = i % 3
        if kind == 0:  # flip a few bytes anywhere
            for position in rng.integers(0, len(mutant), rng.integers(1, 12)):
                mutant[position] = int(rng.integers(0, 256))
        elif kind == 1:  # cut the tail
            mutant = mutant[: int(rng.integers(1, len(mutant)))]
        else:  # splice in random bytes
            position = int(rng.integers(0, len(mutant)))
            mutant[position:position] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        path = folder / f"m{i:03d}{source.suffix}"
        path.write_bytes(bytes(mutant))
        if source.suffix == ".xml":
            shutil.copyfile(source.with_suffix(".bin"), path.with_suffix(".bin"))
        paths.append(path)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tflite_int8", "onnx_int8_io", "ir_fp32"])
def test_fuzzed_models_never_crash_the_host_and_always_fail_typed(tmp_path, request, fixture):
    mutants = _mutants(request.getfixturevalue(fixture), tmp_path, count=150, seed=7)
    outcomes: dict[int, str] = {}
    start = 0
    while start < len(mutants):  # a child that dies is restarted after the mutant that killed it
        done = subprocess.run([sys.executable, "-c", _FUZZ_CHILD, *map(str, mutants[start:])], capture_output=True,
                              text=True, timeout=600)
        reported = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"index"')]
        for entry in reported:
            outcomes[start + entry["index"]] = entry["outcome"]
        if done.returncode == 0:
            break
        crashed = start + len(reported)
        with pytest.raises(UnsupportedModelError):  # the isolated path turns that crash into an error
            edgekit.load(mutants[crashed], isolated=True)
        outcomes[crashed] = "crash caught by isolation"
        start = crashed + 1
    untyped = {i: o for i, o in outcomes.items() if o.startswith("untyped")}
    assert not untyped, untyped
    assert len(outcomes) == len(mutants)
    assert sum(o == "typed" for o in outcomes.values()) >= len(mutants) // 3  # the fuzzer did break things


# -- bad feeds at run time ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_batch_larger_than_a_static_model_allows(image_onnx, backend):
    with edgekit.load(image_onnx, backend=backend) as rt:
        with pytest.raises(InferenceError, match=r"input 'image' expects shape \[1, 1, 8, 8\], got \[2, 1, 8, 8\]"):
            rt.run(np.zeros((2, 1, 8, 8), np.float32))


@pytest.mark.parametrize("fixture", ["tflite_int8", "onnx_fp32", "ir_fp32"])
def test_check_finite_refuses_nan_and_inf(request, fixture):
    path = request.getfixturevalue(fixture)
    bad = tiny.sample_inputs(2)
    bad[1, 3] = np.nan
    bad[0, 0] = np.inf
    with edgekit.load(path, check_finite=True) as rt:
        with pytest.raises(InferenceError, match="input 'input' holds 2 NaN/Inf value"):
            rt.run(bad)
        assert rt.run(tiny.sample_inputs(2))["output"].shape == (2, tiny.CLASSES)
    with edgekit.load(path) as rt, np.errstate(invalid="ignore"):  # off by default: it reads every element
        rt.run(bad)


# -- threads ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tflite_int8", "onnx_fp32", "ir_fp32"])
def test_eight_threads_get_exactly_the_single_thread_answers(request, fixture):
    inputs = [tiny.sample_inputs(1 + i % 3, seed=i) for i in range(16)]
    with edgekit.load(request.getfixturevalue(fixture)) as rt:
        reference = [rt.run(x)["output"] for x in inputs]
        failures: list[str] = []

        def worker(offset: int) -> None:
            for call in range(500):
                index = (offset + call) % len(inputs)
                out = rt.run(inputs[index])["output"]
                if not np.array_equal(out, reference[index]):
                    failures.append(f"thread {offset} call {call}")
                    return

        threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


# -- interrupted and failing conversions ------------------------------------------------------------


def _edgekit(*args: str) -> list[str]:
    return [sys.executable, "-c", "from edgekit.cli import main; main()", *args]


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_conversion_leaves_nothing_and_clobbers_nothing(tmp_path, digits_keras, digits_folder, sig,
                                                                      code):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "digits_int8.onnx"
    keep.write_bytes(b"yesterday's good model")
    process = subprocess.Popen(_edgekit("convert", str(digits_keras), "--to", "tflite-fp32,onnx-int8,openvino-int8",
                                        "--calib", str(digits_folder), "-o", str(out), "--force"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env())
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "digits_fp32.tflite").exists():
        time.sleep(0.05)  # wait until the first target is published: the second is then under way
    time.sleep(0.3)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-1000:]
    assert "nothing was written" in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    assert keep.read_bytes() == b"yesterday's good model"
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == ["digits_fp32.tflite", "digits_fp32.tflite.json", "digits_int8.onnx"], leftovers


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB filesystem: too small for the digits CNN's float .tflite (87 KiB)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to simulate a full disk: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.tensorflow
def test_full_disk_is_a_clear_error_with_nothing_left(tiny_disk, digits_keras):
    (tiny_disk / "notes.txt").write_text("keep")
    result = CliRunner().invoke(cli, ["convert", str(digits_keras), "--to", "tflite-fp32", "-o", str(tiny_disk),
                                      "--no-validate"])
    assert result.exit_code == 1 and "No space left on device" in result.stderr, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        result.stderr.strip().splitlines()[-1]]
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["notes.txt"]


@pytest.mark.tensorflow
def test_read_only_output_folder(tmp_path, digits_keras):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.fail("cannot mount a read-only tmpfs")
    try:
        result = CliRunner().invoke(cli, ["convert", str(digits_keras), "--to", "tflite-fp32", "-o", str(mount)])
        assert result.exit_code == 1 and "is not writable" in result.stderr, result.output
        assert sum(line.startswith("Error:") for line in result.stderr.splitlines()) == 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _declares_input(folder: Path, dims: list[int]) -> Path:
    """A valid model whose input declares ``dims`` (4 PiB with five dimensions of 1024)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "declares_4pib.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("command", [
    ["run", "--random"], ["run", "--random", "--backend", "openvino"], ["profile"],
    ["convert", "--to", "onnx-int8", "--calib", "random"]], ids=["run", "run-openvino", "profile", "convert"])
def test_a_declared_size_never_becomes_an_unbounded_allocation(tmp_path, command):
    model = _declares_input(tmp_path, [1024] * 5)
    args = [command[0], str(model), *command[1:]] + (["-o", str(tmp_path / "out")] if command[0] == "convert" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    assert "'x'" in errors[0] or "declares_4pib" in errors[0], errors[0]
