"""A real OpenSSH server on a loopback port, for the remote-profiling tests (host or inside a chroot)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Sshd:
    port: int
    process: subprocess.Popen
    client_key: Path
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sshd(work: Path, *, root: Path | None = None, sftp: bool = True,
               session_env: dict[str, str] | None = None) -> Sshd:
    """Start sshd on 127.0.0.1:<free port>, accepting ``work/client`` for root; ``root`` runs it in that chroot.
    ``sftp=False`` leaves out the SFTP subsystem, as dropbear and many embedded images do. ``session_env``
    is set in sshd's own environment and in every session it starts (sshd clears the environment)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("sshd is not installed (openssh-server); .ci/run installs it")
    client = keygen(work / "client")
    base = root / "tmp" / f"sshd-{work.name}" if root else work / "server"
    shutil.rmtree(base, ignore_errors=True)  # a root is reused across runs: start clean
    base.mkdir(parents=True)
    inside = Path("/tmp") / f"sshd-{work.name}" if root else base  # the same folder as sshd sees it
    keygen(base / "host_key")
    shutil.copyfile(client.with_suffix(".pub"), base / "authorized_keys")
    port = free_port()
    (base / "config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {inside}/host_key\n"
        f"AuthorizedKeysFile {inside}/authorized_keys\n"
        f"PidFile {inside}/sshd.pid\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        + ("Subsystem sftp internal-sftp\n" if sftp else "")
        + "".join(f"SetEnv {name}={value}\n" for name, value in (session_env or {}).items())
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    if root:
        (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    log = work / "sshd.log"
    command = [sshd, "-D", "-f", f"{inside}/config", "-E", f"{inside}/sshd.log"]
    if root:
        command = ["chroot", str(root), "/usr/sbin/sshd", *command[1:]]
        log = base / "sshd.log"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **(session_env or {})})
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Sshd(port, process, client, log)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("sshd did not start listening within 60 s")
