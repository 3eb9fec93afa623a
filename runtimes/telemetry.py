"""Keep the engines' telemetry off: nothing edgekit runs sends anything anywhere on its own.

OpenVINO's model converter and NNCF report usage through the ``openvino_telemetry`` package, which
(without a consent file) posts analytics from forked child processes and writes a client id and usage
counter under ``~/intel``. Both tools are written to run without that package: when it cannot be
imported they fall back to their own no-op stubs. edgekit makes it unimportable *in its own process
only*, before it imports OpenVINO or NNCF. The user's consent file and global settings are left as they
are; other programs on the machine are not affected.
"""

from __future__ import annotations

import sys

_PACKAGE = "openvino_telemetry"
_SENDERS = ("send_event", "start_session", "end_session", "send_error", "send_stack_trace")


def keep_engine_telemetry_off() -> None:
    """Call before importing openvino or nncf. Idempotent and cheap."""
    module = sys.modules.get(_PACKAGE, ...)
    if module is ...:
        # A None entry makes `import openvino_telemetry` raise ImportError: OpenVINO's converter then uses
        # openvino.tools.ovc.telemetry_stub and NNCF its NNCFTelemetryStub (their documented fallbacks).
        sys.modules[_PACKAGE] = None  # type: ignore[assignment]
        sys.modules[f"{_PACKAGE}.backend"] = None  # type: ignore[assignment]
    elif module is not None:
        # Imported before edgekit ran (by the user's own code): silence the singleton's senders instead.
        telemetry = getattr(module, "Telemetry", None)
        for name in _SENDERS:
            if telemetry is not None and hasattr(telemetry, name):
                setattr(telemetry, name, _silent)


def _silent(*args: object, **kwargs: object) -> None:
    return None
