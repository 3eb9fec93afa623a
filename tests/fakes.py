"""Stand-ins for tests: a Runtime whose every run takes a scripted time on a clock the test controls, for
measuring code (the profiler, optimize's latency) without an engine or a noisy machine in the way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgekit.runtimes.base import Runtime, TensorSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRuntime(Runtime):
    """Each run takes the next scripted latency on a fake clock; ``on_run`` can change the world meanwhile."""

    backend, engine = "fake", "fake 1.0"

    def __init__(self, path: Path, clock: FakeClock, latencies_ms, on_run=None) -> None:
        super().__init__()
        self.path, self._clock, self._script, self._on_run = str(path), clock, iter(latencies_ms), on_run
        self.calls = 0
        self._set_specs((TensorSpec("x", (1, 4), np.dtype("float32")),),
                        (TensorSpec("y", (1, 2), np.dtype("float32")),))

    def _invoke(self, arrays):
        self.calls += 1
        self._clock.now += next(self._script) / 1e3
        if self._on_run:
            self._on_run(self.calls)
        return [np.zeros((1, 2), np.float32)]

    def _release(self) -> None:
        pass
