"""Atomic, no-clobber file writing: every artifact edgekit writes goes through here."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runtimes.errors import EdgekitError


def ensure_writable(path: Path, *, force: bool) -> None:
    """Refuse to clobber an existing file unless ``force``; check the folder exists."""
    if path.exists() and not force:
        raise EdgekitError(f"'{path}' already exists; pass --force (force=True) to overwrite it")
    if not path.parent.is_dir():
        raise EdgekitError(f"output folder '{path.parent}' does not exist; create it first")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; on success rename it over ``path``.

    On any failure (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left exactly as it was.
    """
    path = Path(path)
    ensure_writable(path, force=force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None], *, force: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, force=force) as tmp:
        write(tmp)
    return Path(path)
