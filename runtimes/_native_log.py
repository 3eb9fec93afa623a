"""Keep an engine's native log lines (written straight to file descriptor 2, past Python's logging) off the
user's terminal: they are captured while the engine loads and handed to the ``edgekit.runtimes`` logger at
debug level, or shown as they come when that logger is verbose (the CLI's ``-v``)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("edgekit.runtimes")
# fd 2 is one per process: two threads' overlapping captures would restore each other's temporary file
_fd2 = threading.RLock()


@contextmanager
def native_log_captured(engine: str, *, stdout_too: bool = False) -> Iterator[list[str]]:
    """Capture fd 2 (and fd 1 with ``stdout_too``: Qualcomm's libraries print there) for the duration; the
    yielded list holds the captured lines afterwards (for an error message that wants the engine's last words)."""
    lines: list[str] = []
    if log.isEnabledFor(logging.INFO):
        yield lines
        return
    fds = (1, 2) if stdout_too else (2,)
    with _fd2, tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in fds]
        for fd in fds:
            os.dup2(capture.fileno(), fd)
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
                os.close(copy)
            capture.seek(0)
            lines.extend(line for line in capture.read().decode("utf-8", "replace").splitlines() if line.strip())
            for line in lines:
                log.debug("%s: %s", engine, line)
                if line.lower().startswith("error"):
                    _last_error[engine] = line


#: the last error line each engine logged in this process: some are logged once per process (XNNPACK's cpuinfo
#: reports a failed CPU detection at its first use) and explain later failures that log nothing new
_last_error: dict[str, str] = {}


def last_error_logged(engine: str) -> str | None:
    return _last_error.get(engine)


_exit_silencer_registered = False


def silence_native_log_at_exit() -> None:
    """Send fd 2 to /dev/null once Python has finished, unless verbose: engines with process-wide state (LiteRT's
    environment) log its teardown from C++ static destructors, which run after every Python-level handler."""
    global _exit_silencer_registered
    if _exit_silencer_registered or log.isEnabledFor(logging.INFO):
        return
    _exit_silencer_registered = True

    def silence() -> None:
        sys.stderr.flush()
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)

    atexit.register(silence)  # registered after the engine loaded, so it runs before earlier handlers
