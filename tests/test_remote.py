"""`edgekit profile --remote` against a real OpenSSH server on a loopback port of this machine.

The arm64 "Raspberry Pi" version of these tests is in test_pi_emulated.py; here the device is this host,
which makes every failure mode cheap to stage.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sshd import keygen, start_sshd

from edgekit.cli import cli
from edgekit.profiling.remote import RemoteError, parse_remote

pytestmark = [pytest.mark.litert, pytest.mark.slow]
FAST = ["--runs", "5", "--min-seconds", "0.05", "--warmup-seconds", "0"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sshd = start_sshd(tmp_path_factory.mktemp("ssh"))
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def server_without_sftp(tmp_path_factory):
    """An sshd configured like dropbear/BusyBox images: no SFTP subsystem, which modern scp needs."""
    sshd = start_sshd(tmp_path_factory.mktemp("ssh-nosftp"), sftp=False)
    yield sshd
    sshd.stop()


def test_profile_works_against_an_sshd_without_sftp(server_without_sftp, tmp_path, tflite_int8):
    args = _remote(server_without_sftp, tmp_path, "--accept-new-host-key")
    key, port = str(server_without_sftp.client_key), str(server_without_sftp.port)
    scp = subprocess.run(["scp", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                          f"UserKnownHostsFile={tmp_path / 'scp_known_hosts'}", "-i", key, "-P", port,
                          str(tflite_int8), "root@127.0.0.1:/tmp/"], capture_output=True, text=True, timeout=60)
    assert scp.returncode != 0, "this sshd was meant to refuse SFTP (and so scp)"
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), *FAST, "--json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "tiny_int8.tflite" and report["runs"] >= 5


def _remote(server, tmp_path, *extra: str) -> list[str]:
    return ["--remote", f"root@127.0.0.1:{server.port}", "--identity", str(server.client_key),
            "--known-hosts", str(tmp_path / "known_hosts"), "--python", sys.executable, *extra]


def test_profile_over_ssh_brings_the_report_back(server, tmp_path, tflite_int8):
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), *FAST, "--json",
                                      *_remote(server, tmp_path, "--accept-new-host-key")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["remote"] == f"root@127.0.0.1:{server.port}" and report["model"] == "tiny_int8.tflite"
    assert report["runs"] >= 5 and report["latency_ms"]["p50"] > 0 and report["system"]["arch"]
    assert "ssh-ed25519" in (tmp_path / "known_hosts").read_text()  # accepted once, then checked
    again = CliRunner().invoke(cli, ["profile", str(tflite_int8), *FAST, "--json", *_remote(server, tmp_path)])
    assert again.exit_code == 0, again.output


def test_several_devices_in_one_table(server, tmp_path, tflite_int8, tflite_fp32):
    args = _remote(server, tmp_path, "--accept-new-host-key")
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), str(tflite_fp32), *FAST, "--json", *args, *args[:2]])
    assert result.exit_code == 0, result.output
    assert [r["model"] for r in json.loads(result.stdout)] == ["tiny_int8.tflite", "tiny_fp32.tflite"] * 2


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s, t: ["--remote", f"root@127.0.0.1:{s.port + 1 if s.port < 65535 else 1}"], "cannot connect"),
        (lambda s, t: ["--identity", str(keygen(t / "stranger"))], "authentication failed"),
        (lambda s, t: ["--python", "/usr/bin/python3"], "edgekit is not installed for /usr/bin/python3"),
        (lambda s, t: ["--python", "/nowhere/python"], "'/nowhere/python' was not found on the device"),
    ],
    ids=["unreachable", "auth", "edgekit-missing", "python-missing"],
)
def test_failures_are_one_line_and_say_what_to_do(server, tmp_path, tflite_int8, change, fragment):
    args = _remote(server, tmp_path, "--accept-new-host-key")
    override = change(server, tmp_path)
    merged = args[:]
    for flag, value in zip(override[::2], override[1::2]):
        merged[merged.index(flag) + 1] = value
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), *FAST, *merged])
    assert result.exit_code == 1 and fragment in result.stderr, result.output
    assert sum(line.startswith("Error:") for line in result.stderr.splitlines()) == 1


def test_unknown_host_key_is_refused_without_consent(server, tmp_path, tflite_int8):
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), *FAST, *_remote(server, tmp_path)])
    assert result.exit_code == 1 and "host key is unknown or has changed" in result.stderr


def test_timeout(server, tmp_path, tflite_int8):
    result = CliRunner().invoke(cli, ["profile", str(tflite_int8), "--runs", "100000", "--min-seconds", "30",
                                      *_remote(server, tmp_path, "--accept-new-host-key", "--ssh-timeout", "3")])
    assert result.exit_code == 1 and "no answer within 3 s" in result.stderr


def test_parse_remote():
    assert str(parse_remote("pi@raspberrypi.local:2222")) == "pi@raspberrypi.local:2222"
    assert parse_remote("10.0.0.7").user is None
    with pytest.raises(RemoteError, match="not user@host"):
        parse_remote("pi@host:port")
