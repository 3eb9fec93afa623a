"""``edgekit profile --remote``: profile on a device over SSH and bring the report home.

Uses the system ``ssh`` rather than an SSH library (files travel through it too: no ``scp``/SFTP needed):
nothing more to install on the workstation,
and the user's keys, agent, ``~/.ssh/config`` (ProxyJump, ports, users) and known_hosts all apply as
they do in their shell. Host keys are checked (``StrictHostKeyChecking=yes``); a first connection to a
new device needs ``--accept-new-host-key`` (``accept-new``), never a silent trust.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._escape import visible
from edgekit.report.schema import MAX_REPORT_BYTES, parse_reports
from edgekit.runtimes.errors import EdgekitError

MAX_REPLY_BYTES = MAX_REPORT_BYTES
_REMOTE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d+))?$")


class RemoteError(EdgekitError):
    """Profiling on a remote device failed: unreachable, refused, misconfigured or timed out."""


@dataclass(frozen=True)
class Remote:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.target + (f":{self.port}" if self.port else "")


def parse_remote(text: str) -> Remote:
    match = _REMOTE.match(text.strip())
    if not match or text.strip().startswith("-") or (match.group("host") or "").startswith("-"):
        raise RemoteError(f"--remote '{visible(text)}' is not user@host[:port]")  # '-o…' would be an ssh option
    port = int(match.group("port")) if match.group("port") else None
    return Remote(match.group("host").strip("[]"), match.group("user"), port)


@dataclass(frozen=True)
class SshOptions:
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: int = 10
    timeout_s: float = 900.0
    python: str = "python3"

    def common(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                   "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            options += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return options


class _Session:
    def __init__(self, remote: Remote, options: SshOptions) -> None:
        self.remote, self.options = remote, options

    def ssh(self, command: str, *, timeout: float | None = None, stdin: Any = None) -> subprocess.CompletedProcess:
        args = ["ssh", *self.options.common()] + (["-p", str(self.remote.port)] if self.remote.port else [])
        return self._run([*args, "--", self.remote.target, command], timeout, stdin)

    def copy(self, files: list[Path], folder: str) -> None:
        """Stream each file through the ssh connection into ``cat``: modern ``scp`` speaks SFTP, which
        dropbear and BusyBox-based images often lack; a shell and ``cat`` are on every device."""
        for file in files:
            target = shlex.quote(f"{folder}/{file.name}")
            with open(file, "rb") as handle:
                done = self.ssh(f"cat > {target}", stdin=handle)
            if done.returncode != 0:
                raise self._explain(done, f"copying {file.name}")

    def _run(self, command: list[str], timeout: float | None, stdin: Any = None) -> subprocess.CompletedProcess:
        """Run ssh, keeping at most ``MAX_REPLY_BYTES`` of each stream: a device's answer is untrusted, and an
        endless one is stopped rather than read into memory."""
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=stdin if stdin is not None else subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise RemoteError(f"the '{command[0]}' command is not installed here; install OpenSSH's client") from exc
        streams = {"stdout": bytearray(), "stderr": bytearray()}
        readers = [threading.Thread(target=_read_capped, args=(getattr(process, name), streams[name], process),
                                    daemon=True) for name in streams]
        for reader in readers:
            reader.start()
        limit = timeout or self.options.timeout_s
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RemoteError(f"{self.remote}: no answer within {limit:.0f} s") from None
        finally:
            for reader in readers:
                reader.join(timeout=5)
        if any(len(data) > MAX_REPLY_BYTES for data in streams.values()):
            raise RemoteError(f"{self.remote}: the device answered with more than {MAX_REPLY_BYTES // 2**20} MiB; "
                              "a profile report is far smaller (is something else printing on the device?)")
        text = {name: data.decode("utf-8", "replace") for name, data in streams.items()}
        return subprocess.CompletedProcess(command, process.returncode, text["stdout"], text["stderr"])

    def _explain(self, done: subprocess.CompletedProcess, doing: str) -> RemoteError:
        """Turn ssh's exit 255 and its stderr into a reason and what to do."""
        text = done.stderr.strip()
        last = text.splitlines()[-1] if text else f"exit code {done.returncode}"
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return RemoteError(f"{self.remote}: the host key is unknown or has changed; check it and add it to "
                               "known_hosts, or pass --accept-new-host-key for a first connection")
        if "Permission denied" in text or "Too many authentication failures" in text:
            return RemoteError(f"{self.remote}: authentication failed ({last}); pass --identity KEY or load the key "
                               "into ssh-agent")
        if any(s in text for s in ("Connection refused", "No route to host", "timed out", "Could not resolve",
                                   "Network is unreachable", "Connection closed")):
            return RemoteError(f"{self.remote}: cannot connect ({last}); check the host, the port and that sshd runs")
        return RemoteError(f"{self.remote}: {doing} failed: {last}")


def _read_capped(stream: Any, into: bytearray, process: subprocess.Popen) -> None:
    """Read ``stream`` into ``into`` until it ends, or kill the process once it passes the cap."""
    while chunk := stream.read(65536):
        into.extend(chunk)
        if len(into) > MAX_REPLY_BYTES:
            process.kill()
            break
    stream.close()


def _companions(model: Path) -> list[Path]:
    files = [model]
    if model.suffix.lower() == ".xml" and model.with_suffix(".bin").is_file():
        files.append(model.with_suffix(".bin"))
    report = Path(f"{model}.json")
    if report.is_file():  # the preprocessing recipe travels with the model
        files.append(report)
    return files


def profile_remote(model: Path, remote: Remote, options: SshOptions, profile_args: list[str],
                   extra_files: list[Path] = ()) -> dict[str, Any]:
    """Copy ``model`` to a temporary folder on ``remote``, run ``edgekit profile --json`` there with
    ``profile_args``, bring the report back and remove the folder."""
    if not model.is_file():
        raise EdgekitError(f"model file '{model}' does not exist; check the path")
    session = _Session(remote, options)
    made = session.ssh("mktemp -d /tmp/edgekit-profile-XXXXXX")
    if made.returncode != 0:
        raise session._explain(made, "creating a temporary folder")
    folder = made.stdout.strip().splitlines()[-1]
    try:
        session.copy(_companions(model) + list(extra_files), folder)
        python = shlex.quote(options.python)
        command = (f"cd {shlex.quote(folder)} && {python} -c 'from edgekit.cli import main; main()' "
                   f"profile {shlex.quote(model.name)} --json " + " ".join(map(shlex.quote, profile_args)))
        done = session.ssh(command)
        return _report(done, session, python, remote)
    finally:
        session.ssh(f"rm -rf {shlex.quote(folder)}", timeout=60)


def _report(done: subprocess.CompletedProcess, session: _Session, python: str, remote: Remote) -> dict[str, Any]:
    if "No module named 'edgekit'" in done.stderr or "No module named edgekit" in done.stderr:
        raise RemoteError(f"{remote}: edgekit is not installed for {python}; on the device run "
                          "pip install 'edgekit[litert]' (and [onnx]/[openvino] as needed), or pass --python "
                          "/path/to/venv/bin/python")
    if done.returncode == 127 or "not found" in done.stderr and python in done.stderr:
        raise RemoteError(f"{remote}: '{python}' was not found on the device; pass --python /path/to/python")
    if done.returncode == 255:
        raise session._explain(done, "running edgekit")
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        reason = errors[-1][len("Error: "):] if errors else (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise RemoteError(f"{remote}: {reason[:300]}")
    try:
        reports = parse_reports(done.stdout, f"{remote}'s answer")
    except EdgekitError as exc:
        raise RemoteError(str(exc)) from None
    for entry in reports:
        entry["remote"] = str(remote)
    return reports if len(reports) > 1 else reports[0]
