"""Atomic, no-clobber file writing: every artifact edgekit writes goes through here.

Artifacts are built in a hidden staging folder inside the destination folder
(same filesystem, so the final move is an atomic rename) and published only
when complete. The staging folder is removed on every exit, including Ctrl-C,
so a failed or interrupted run leaves nothing behind and no existing file is
touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.runtimes.errors import EdgekitError, spelled


def check_stem(name: str) -> str:
    """``name`` as the stem of files edgekit writes, refused when it could leave the output folder or hide.

    Raises:
        EdgekitError: A path separator, ``..``, a leading dot, a control character or an empty name.
    """
    if (not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name
            or not name.isprintable()):
        from edgekit._escape import visible

        raise EdgekitError(f"name '{visible(name)}' cannot be a file stem: use letters, digits, '-' and '_' "
                           "(no '/', '\\', '..', leading '.' or control characters)")
    return name


def ensure_writable(path: Path, *, force: bool) -> None:
    """Refuse to clobber an existing file unless ``force``; check the folder exists and is writable."""
    if path.exists() and not force:
        raise EdgekitError(f"'{path}' already exists; pass {spelled('--force', 'force=True')} to overwrite it")
    if not path.parent.is_dir():
        raise EdgekitError(f"output folder '{path.parent}' does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise EdgekitError(f"output folder '{path.parent}' is not writable")


@contextmanager
def staging_dir(output_dir: Path) -> Iterator[Path]:
    """A private folder inside ``output_dir`` for building artifacts; always removed afterwards."""
    staging = Path(tempfile.mkdtemp(prefix=".edgekit-staging-", dir=output_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staged: Path, final: Path, *, force: bool) -> Path:
    """Move a finished file from staging to its final name (atomic rename, same filesystem)."""
    ensure_writable(final, force=force)
    os.replace(staged, final)
    return final


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    ensure_writable(path, force=force)
    with staging_dir(path.parent) as staging:
        tmp = staging / path.name
        yield tmp
        os.replace(tmp, path)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None], *, force: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, force=force) as tmp:
        write(tmp)
    return Path(path)
