"""Untrusted input where it enters besides model weights: names inside model files, reports read back from
disk or from a device, the optimize cache and a shared study, and the files edgekit writes.

Each test stages what a hostile file, device or database would hold and asserts the outcome: the payload is
inert text (escaped in HTML, markdown and the terminal), the bad value is one ``Error:`` line naming it, and
nothing outside the output folder changes. (A .pt2 that runs code: test_untrusted_pt2.py.)
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_report import _conversion, _profile

from edgekit import EdgekitError
from edgekit.cli import cli

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=alert(1)>"
MARKUP = "[/][link=file:///etc/passwd]x[/link][bold red]OUT[/bold red]"
OSC8 = "\x1b]8;;file:///etc/passwd\x1b\\click\x1b]8;;\x1b\\"
MATH = "$x^{$"


def _hostile_profile() -> dict:
    report = _profile(f"m{IMG}.tflite", 1.0, threads=2)
    report["engine"] = SCRIPT
    report["device"] = IMG
    report["unstable"] = [SCRIPT]
    report["per_op"] = [{"name": f"conv{MATH}{SCRIPT}", "type": MATH, "total_ms": 0.5, "percent": 50.0, "count": 1}]
    report["system"]["cpu"] = SCRIPT
    return report


def _hostile_conversion() -> dict:
    report = _conversion(f"m{IMG}.tflite", 0.1, 1000)
    report["status"] = SCRIPT
    report["failures"] = [SCRIPT]
    report["audit"]["float_ops"] = {SCRIPT: 1}
    report["tools"] = {SCRIPT: IMG}
    return report


# -- reports: data, escaped at every edge -----------------------------------------------------------------


def test_html_report_shows_every_hostile_value_as_text():
    from edgekit.report import render_html

    page = render_html([_hostile_profile(), _hostile_conversion()])
    assert page.count("<script") == 1, "only the page's own sorting script"
    assert "<img src=x" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "threads 2 · 3 runs" in page


@pytest.mark.parametrize("field, value, fragment", [
    (("threads",), SCRIPT, "'threads' is \"<script>"),
    (("runs",), "<img>", "'runs' is '<img>', expected an integer"),
    (("latency_ms", "p50"), "fast", "'latency_ms.p50' is 'fast', expected a finite number"),
    (("latency_ms", "p90"), float("nan"), "'latency_ms.p90' is nan, expected a finite number"),
    (("latencies_ms",), [1.0, 10**400], "'latencies_ms[1]' is an integer out of range"),
    (("system",), None, "'system' is None, expected an object"),
    (("per_op",), [{"name": 1}], "'per_op[0].name' is 1, expected text"),
])
def test_a_hostile_or_broken_report_is_one_line_naming_the_field(tmp_path, field, value, fragment):
    report = _profile("m.tflite", 1.0)
    *parents, last = field
    target = report
    for key in parents:
        target = target[key]
    target[last] = value
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(report))
    for output in ("x.html", "x.md"):
        done = CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / output)])
        assert done.exit_code == 1, done.output
        assert done.stderr.startswith("Error: report '") and done.stderr.count("\n") == 1, done.stderr
        assert fragment in done.stderr and "Traceback" not in done.output
        assert not (tmp_path / output).exists()


@pytest.mark.parametrize("text, fragment", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"model": "m", "latency_ms": {', "is not JSON"),
    ("1" * 5000, "is not JSON"),
    ('{"latency_ms": {}}', "'model' is missing"),
    ('[{"target": "x", "status": "ok", "artifact": {}}]', "'artifact.path' is missing"),
])
def test_malformed_report_files_are_one_line(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    done = CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "x.html")])
    assert done.exit_code == 1 and fragment in done.stderr and done.stderr.count("\n") == 1, done.output


def test_an_oversized_report_is_refused_without_reading_it_whole(tmp_path):
    from edgekit.report.schema import MAX_REPORT_BYTES

    path = tmp_path / "huge.json"
    with open(path, "w") as handle:
        handle.write('{"model": "' + "x" * (MAX_REPORT_BYTES + 10) + '"}')
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) pytest process that forked us
    code = ("import re, sys; from edgekit.report import load_reports\n"
            "try: load_reports([sys.argv[1]])\nexcept Exception as e: print(e)\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    message, peak_kib = done.stdout.strip().splitlines()
    assert "is over 16 MiB" in message
    assert int(peak_kib) < 200 * 1024, "read into memory at most once (the cap plus one byte)"


def test_plots_take_names_as_text_not_matplotlib_math():
    pytest.importorskip("matplotlib")
    from edgekit.report import render_html

    page = render_html([_profile(f"a{MATH}.tflite", 1.0), {**_conversion(f"a{MATH}.tflite", 0.0, 10)}])
    assert page.count("data:image/png;base64,") == 2  # the comparison plot and the profile's plots drew


def test_markdown_cells_cannot_split_the_table_or_embed_html():
    from edgekit.report import render_markdown

    name = f"a|b\n# heading\n{IMG}`tick`.tflite"
    text = render_markdown([_profile(name, 1.0), _conversion("c.tflite", 0.0, 10)])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and all(row.count(" | ") == rows[0].count(" | ") for row in rows)
    assert not any(line.startswith("#") for line in text.splitlines())
    # one code span (HTML inside it is literal text), its '|' escaped, a fence longer than its backticks
    assert "| ``a\\|b\\n# heading\\n<img src=x onerror=alert(1)>`tick`.tflite`` |" in text


def test_profile_markdown_escapes_names(tmp_path):
    from edgekit.profiling.output import render

    report = _hostile_profile()
    text = render([report], ".md")
    outside_code = re.sub(r"(`+).+?\1", "", text)  # inside a code span HTML is literal text
    assert "`conv$x^{$<script>" in text
    assert re.search(r"(?<!\\)<", outside_code) is None, "every other '<' is backslash-escaped"
    header, row, op_header, op_row = [line for line in text.splitlines() if line.startswith("| ")]
    assert row.count(" | ") == header.count(" | ") and op_row.count(" | ") == op_header.count(" | ")


# -- the terminal: names are text, control characters visible ---------------------------------------------


def _named_onnx(path: Path, output_name: str, node_name: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], [output_name], name=node_name)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.onnxruntime
@pytest.mark.parametrize("name", [MARKUP, OSC8, "[bold red]OUT[/bold red]", "\u202eevil"])
def test_names_reach_the_terminal_as_text(tmp_path, name):
    model = _named_onnx(tmp_path / "m.onnx", name, name)
    for args in (["inspect", str(model)], ["run", str(model), "--random"],
                 ["profile", str(model), "--per-op", "--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0"]):
        done = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "FORCE_COLOR": "1", "COLUMNS": "400"})
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert "\x1b]8;" not in done.stdout, "no hyperlink escape sequence reaches the terminal"
        assert "\u202e" not in done.stdout
        shown = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # rich's own colours
        if name == OSC8:
            assert "\\x1b]8;;file:///etc/passwd" in shown
        elif name.startswith("\u202e"):
            assert "\\u202eevil" in shown
        else:
            assert name in shown, (args, shown)


def test_an_error_line_shows_control_characters():
    done = CliRunner().invoke(cli, ["inspect", "/nowhere/\x1b[2Jx.onnx"])
    assert done.exit_code == 1 and "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr


# -- a remote device's reply is untrusted --------------------------------------------------------------------


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An ``ssh`` on PATH that records its argv and answers what the test puts in ``reply``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "ssh"
    script.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                      f"pathlib.Path({str(tmp_path / 'argv')!r}).open('a').write(repr(sys.argv[1:]) + '\\n')\n"
                      "command = sys.argv[-1]\n"
                      "if command.startswith('mktemp'): print('/tmp/edgekit-profile-x'); sys.exit(0)\n"
                      "if command.startswith('cat >') or command.startswith('rm '): sys.stdin.buffer.read(); "
                      "sys.exit(0)\n"
                      f"sys.stdout.buffer.write(pathlib.Path({str(tmp_path / 'reply')!r}).read_bytes())\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _profile_remote(model: Path):
    from edgekit.profiling.remote import SshOptions, parse_remote, profile_remote

    return profile_remote(model, parse_remote("pi@device"), SshOptions(timeout_s=60), [])


def test_a_device_reply_is_checked_and_capped(fake_ssh, tflite_fp32):
    from edgekit.profiling.remote import MAX_REPLY_BYTES, RemoteError

    (fake_ssh / "reply").write_text(json.dumps(_profile("m.tflite", 1.0)))
    assert _profile_remote(tflite_fp32)["remote"] == "pi@device"
    argv = [eval(line) for line in (fake_ssh / "argv").read_text().splitlines()]  # noqa: S307 - our own repr
    assert all(args[args.index("--") + 1] == "pi@device" for args in argv), "ssh options end before the host"

    broken = _profile("m.tflite", 1.0)
    broken["latency_ms"]["p50"] = "fast"
    (fake_ssh / "reply").write_text(json.dumps(broken))
    with pytest.raises(RemoteError, match=r"pi@device's answer: 'latency_ms.p50' is 'fast'"):
        _profile_remote(tflite_fp32)

    (fake_ssh / "reply").write_bytes(b" " * (MAX_REPLY_BYTES + 1024))
    with pytest.raises(RemoteError, match="more than 16 MiB"):
        _profile_remote(tflite_fp32)


@pytest.mark.parametrize("text", ["-oProxyCommand=touch", "pi@-oProxyCommand=x", "-p2222"])
def test_a_remote_that_would_be_an_ssh_option_is_refused(text):
    from edgekit.profiling.remote import RemoteError, parse_remote

    with pytest.raises(RemoteError, match="is not user@host"):
        parse_remote(text)


# -- files: names, symlinks, --force --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "a\\b"])
def test_a_name_that_leaves_the_output_folder_is_refused(tmp_path, onnx_fp32, name):
    done = CliRunner().invoke(cli, ["convert", str(onnx_fp32), "--to", "onnx-fp32", "--name", name,
                                    "-o", str(tmp_path / "out")])
    assert done.exit_code == 1 and "cannot be a file stem" in done.stderr, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_optimize_writes_replace_planted_symlinks_instead_of_following_them(tmp_path):
    from edgekit.optimizing.cache import Cache
    from edgekit.optimizing.result import _write_tables

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    out = tmp_path / "out"
    (out / "cache" / "kind" / "key").mkdir(parents=True)
    planted = [out / name for name in (".trials.json.part", ".trials.csv.part", "trials.json", "trials.csv")]
    planted += [out / "cache" / "kind" / "key" / name for name in (f".entry.{os.getpid()}.part", "entry.json")]
    for link in planted:
        os.symlink(outside, link)
    _write_tables([{"trial": 0, "candidate": {}, "state": "COMPLETE"}], out)
    Cache(out / "cache").put("kind", "key", {"value": 1})
    assert outside.read_text() == "keep me"
    for name in ("trials.json", "trials.csv", "cache/kind/key/entry.json"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0


def test_profile_save_does_not_overwrite_without_force(tmp_path, onnx_fp32):
    pytest.importorskip("onnxruntime")
    saved = tmp_path / "base.json"
    saved.write_text("precious")
    args = ["profile", str(onnx_fp32), "--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--save",
            str(saved)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 1 and "already exists; pass --force" in done.stderr and saved.read_text() == "precious"
    assert "profiling" not in done.stderr, "refused before measuring"
    done = CliRunner().invoke(cli, [*args, "--force"])
    assert done.exit_code == 0, done.output
    assert json.loads(saved.read_text())["runs"] >= 3


# -- the optimize cache and a shared study --------------------------------------------------------------------


def test_a_study_cannot_hand_a_worker_trust(tmp_path):
    from edgekit.optimizing.evaluate import Settings

    stored = Settings(model="/m/evil.pt2", calibration="/data", trust_pickle=True,
                      ssh={"python": "python3; touch /tmp/pwned", "known_hosts": "/dev/null"}).to_dict()
    stored = json.loads(json.dumps(stored))  # what the storage holds
    settings = Settings.from_study(stored)
    assert settings.trust_pickle is False and settings.ssh == {}
    mine = Settings.from_study(stored, trust_pickle=True, ssh={"python": "/opt/venv/bin/python"})
    assert mine.trust_pickle is True and mine.ssh == {"python": "/opt/venv/bin/python"}
    assert "trust_pickle" not in Settings(model="m", calibration="c", trust_pickle=True).shared()
    for key, value, fragment in [("name", "../../x", "cannot be a file stem"),
                                 ("remote", "-oProxyCommand=touch /tmp/x", "is not user@host"),
                                 ("budget", "1; DROP", "'budget' is '1; DROP', expected a finite number"),
                                 ("formats", "onnx", "'formats' is 'onnx', expected a list"),
                                 ("shell", "x", "unknown field(s) ['shell']")]:
        with pytest.raises(EdgekitError, match=re.escape(fragment)):
            Settings.from_study({**stored, key: value})


def test_a_spawned_worker_gets_the_storage_url_outside_argv(monkeypatch, tmp_path):
    from edgekit.optimizing import study
    from edgekit.optimizing.evaluate import Settings

    seen = {}

    class Recorder:
        def __init__(self, command, env, stdout):
            seen.update(command=command, env=env)

    monkeypatch.setattr(study.subprocess, "Popen", Recorder)
    url = "postgresql://edgekit:s3cret@db.local/studies"
    settings = Settings(model="m", calibration="c", trust_pickle=True, ssh={"identity": "/k", "python": "py3"})
    study._spawn_worker(url, "s", tmp_path, "run1", settings)
    assert not any("s3cret" in part for part in seen["command"])
    assert seen["env"][study.STORAGE_ENV] == url
    assert {"--trust-pickle", "--identity", "/k", "--python", "py3"} <= set(seen["command"])


def test_storage_passwords_never_reach_a_message(tmp_path):
    pytest.importorskip("optuna")
    for url in ("postgresql//u:s3cret@host/db", "postgresql://u:s3cret@host:notaport/db"):
        done = CliRunner().invoke(cli, ["optimize", "--worker", "--storage", url, "--study", "s", "-o", str(tmp_path)])
        assert done.exit_code == 1 and "cannot open the study storage" in done.stderr, done.output
        assert "s3cret" not in done.output and "***" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.onnxruntime
@pytest.mark.optuna
def test_the_cache_is_verified_not_believed(tmp_path, onnx_fp32, caplog):
    import onnx
    from onnx import numpy_helper

    from edgekit.optimizing.cache import Cache
    from edgekit.optimizing.evaluate import Evaluator, Settings
    from edgekit.optimizing.result import Point, _copy_best
    from edgekit.optimizing.space import Candidate

    data = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", data)
    settings = Settings(model=str(onnx_fp32), calibration=str(tmp_path / "calib.npy"), calib_size=20)
    cache = Cache(tmp_path / "cache")
    evaluator = Evaluator(settings, cache)
    candidate = Candidate("onnx-fp32")
    first = evaluator.convert(candidate)
    assert first["cached"] is False and evaluator.convert(candidate)["cached"] is True

    # another model under the cached name (weights x -7): not reused, converted again
    model = onnx.load(first["path"])
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * -7, tensor.name))
    onnx.save(model, first["path"])
    again = evaluator.convert(candidate)
    assert again["cached"] is False and again["sha256"] == first["sha256"]
    assert "is not what was cached" in caplog.text

    # an entry naming a file outside the cache is never followed
    entry = next((tmp_path / "cache" / "artifacts").glob("*/entry.json"))
    for outside in (str(onnx_fp32), "../../../outside.onnx"):
        stored = json.loads(entry.read_text())
        entry.write_text(json.dumps({**stored, "path": outside, "sha256": first["sha256"]}))
        found = evaluator.convert(candidate)
        assert found["cached"] is False and Path(found["path"]).is_relative_to(tmp_path / "cache")

    # the final copy to best/ checks the sha256 the search measured
    point = Point(0, "onnx-fp32", candidate.to_dict(), found["path"], 1.0, 1.0, 0.0, 0.0, 1, True,
                  sha256="0" * 64)
    with pytest.raises(EdgekitError, match="changed on disk after it was measured"):
        _copy_best(point, tmp_path / "best")
    assert not (tmp_path / "best").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, tmp_path / "best")
    copied = _copy_best(Point(**{**point.to_dict(), "sha256": first["sha256"]}), tmp_path / "best")
    assert copied.is_file() and not (tmp_path / "best").is_symlink() and not any(outside.iterdir())


@pytest.mark.litert
@pytest.mark.parametrize("text, fragment", [
    ('{"recipe": {"size": "abc", "mean": 5}}', "'size' is 'abc', expected a list"),
    ('{"calibration": {"recipe": {"mean": [1, "x"]}}}', "'mean[1]' is 'x', expected a finite number"),
    ("[" * 100_000, "cannot read the recipe"),
])
def test_the_recipe_beside_a_model_is_checked_like_the_model(tmp_path, tflite_fp32, text, fragment):
    pytest.importorskip("PIL")
    from PIL import Image

    model = tmp_path / "m.tflite"
    model.write_bytes(tflite_fp32.read_bytes())
    Path(f"{model}.json").write_text(text)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    done = CliRunner().invoke(cli, ["run", str(model), "--image", str(tmp_path / "x.png")])
    assert done.exit_code == 1 and fragment in done.stderr and done.stderr.count("\n") == 1, done.output
