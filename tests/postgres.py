"""A throwaway PostgreSQL server for the shared-study tests: the distribution's binaries, a cluster in a temp
folder, trust authentication, listening on a loopback port only.

    python3 tests/postgres.py start FOLDER   # prints the URL (what .ci/run exports as EDGEKIT_TEST_POSTGRES)
    python3 tests/postgres.py stop FOLDER
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def binaries() -> Path | None:
    """The folder of initdb/pg_ctl (Debian keeps them under /usr/lib/postgresql/N/bin), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the distribution's postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(folder: Path) -> str:
    """Start a server whose files live in ``folder`` (created; its parents must let the postgres user in,
    which /tmp does and pytest's 0700 tmp_path does not)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()

    def run(tool: str, *args: str) -> None:
        done = subprocess.run(_as_owner([str(bin_dir / tool), *args]), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")
    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "edgekit")
    (folder / "url").write_text(f"postgresql://postgres@127.0.0.1:{port}/edgekit")
    return (folder / "url").read_text()


def stop(folder: Path) -> None:
    bin_dir = binaries()
    if bin_dir is not None and (folder / "data").is_dir():
        subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop"]),
                       capture_output=True)


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    print(start(where)) if action == "start" else stop(where)
