"""Content-addressed results, so a rerun, a resumed study or a second worker never redoes finished work.

A key hashes everything the result depends on (model and data digests, target, options, tool versions; for a
measurement also the artifact's sha256 and the runtime options). Entries are files written atomically
(temporary name, then rename), and a per-key lock lets two workers on one machine wait for each other instead
of converting the same thing twice. Hits and misses are counted per kind for the trial table and benchmark.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit._files import write_atomic


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def folder(self, kind: str, key: str) -> Path:
        folder = self.root / kind / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        entry = self.root / kind / key / "entry.json"
        try:
            value = json.loads(entry.read_text())
        except (OSError, ValueError):
            return None
        self.hits[kind] += 1
        return value

    def put(self, kind: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
        self.misses[kind] += 1
        text = json.dumps(value, indent=1, default=str)
        write_atomic(self.folder(kind, key) / "entry.json", lambda tmp: tmp.write_text(text), force=True)
        return value

    def inside(self, relative: str) -> Path | None:
        """The file an entry names, or None when the name is absolute or leaves the cache: entries are files
        that anyone who can write the folder can edit, and are never followed out of it."""
        path = Path(relative)
        if path.is_absolute() or ".." in path.parts:
            return None
        return self.root / path

    def locked(self, kind: str, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold ``kind/key`` against other processes on this machine."""
        return _flock(self.folder(kind, key) / ".lock")

    def counts(self) -> dict[str, dict[str, int]]:
        kinds = sorted(set(self.hits) | set(self.misses))
        return {kind: {"hits": self.hits[kind], "misses": self.misses[kind]} for kind in kinds}


def device_lease(name: str, engine: Any = None) -> contextlib.AbstractContextManager[None]:
    """One measurement at a time per device: two timings sharing cores would each measure the other. Workers
    sharing a PostgreSQL study (``engine``: its SQLAlchemy engine) lease the device through the database, so
    workers on other machines wait too; otherwise every worker process on this machine takes a file lock."""
    if engine is not None and engine.dialect.name == "postgresql":
        return _advisory_lock(engine, name)
    folder = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "leases"
    folder.mkdir(parents=True, exist_ok=True)
    return _flock(folder / f"{digest(name)}.lock")


@contextlib.contextmanager
def _advisory_lock(engine: Any, name: str) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock (released by the server if the worker's connection drops)."""
    import sqlalchemy

    key = int(digest(name)[:15], 16)  # 60 bits: fits PostgreSQL's bigint
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock the kernel releases if its holder dies (no stale lock files to clean)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def matches_sha256(path: Path, sha256: str) -> bool:
    """Whether the model at ``path`` (an IR: its .xml and .bin) still has the hash recorded for it."""
    from edgekit.runtimes import EdgekitError
    from edgekit.runtimes.formats import open_model_file

    try:
        return open_model_file(path).sha256() == sha256
    except (EdgekitError, OSError):
        return False
