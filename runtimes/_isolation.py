"""Parse an untrusted model in a throwaway process first, so a native engine crash cannot take this one down.

The child loads the model with the same backend under CPU-time and address-space
limits and reports its inputs and outputs; a signal, a timeout or an exhausted
limit becomes an ``UnsupportedModelError`` in the parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgekit.runtimes.errors import UnsupportedModelError

DEFAULT_TIMEOUT_S = 120.0
#: set in the child's environment: the load there is the isolated one
CHILD_VARIABLE = "EDGEKIT_ISOLATED_CHILD"
# Engines reserve several GiB of address space at start-up; the cap stops runaway allocations, not those.
DEFAULT_MEMORY_BYTES = 16 * 2**30

_CHILD = """
import json, sys
from edgekit.runtimes import open_runtime
from edgekit.runtimes.errors import EdgekitError
try:
    with open_runtime(sys.argv[1], backend=sys.argv[2]) as rt:
        print(json.dumps({"ok": True, "inputs": [s.name for s in rt.inputs]}))
except EdgekitError as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
"""


def _limits(cpu_seconds: int, memory_bytes: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def probe(path: Path, backend: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
          memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
    """Load ``path`` with ``backend`` in a limited subprocess; raise if that fails in any way."""
    # the same interpreter and environment: the child imports this installed edgekit
    env = {**os.environ, CHILD_VARIABLE: "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(path), backend], capture_output=True, text=True,
                              timeout=timeout_s, env=env,
                              preexec_fn=_limits(int(timeout_s) + 1, memory_bytes) if os.name == "posix" else None)
    except subprocess.TimeoutExpired as exc:
        raise UnsupportedModelError(f"parsing '{path}' did not finish within {timeout_s:.0f} s in isolation; "
                                    "refusing it") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise UnsupportedModelError(f"the {backend} engine crashed ({name}) parsing '{path}' in isolation; "
                                    "the file is malformed or hostile")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnsupportedModelError(f"the {backend} engine failed parsing '{path}' in isolation: {last[:300]}")
    result = json.loads(lines[-1])
    if not result["ok"]:
        raise UnsupportedModelError(result["error"])
