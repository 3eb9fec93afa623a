"""Reports read back — from disk (``edgekit report``, ``--baseline``) or from a device (``profile --remote``) —
are checked before anything renders them: at most ``MAX_REPORT_BYTES``, JSON, and every field the renderers
read of the type they expect (numbers finite, text as text). A hostile or truncated file is one error line
naming the field, never a traceback or a gigabyte of memory. Unknown fields are kept (newer edgekits add
some); paths in a report are only ever shown as names, never opened.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgekit.runtimes.errors import EdgekitError

MAX_REPORT_BYTES = 16 * 1024 * 1024  # a profile with per-op times and 10,000 latencies is well under 2 MB

NUMBER, INFINITE_OK, INTEGER, TEXT, FLAG = "a finite number", "a number", "an integer", "text", "true or false"


class Optional:
    def __init__(self, kind: Any) -> None:
        self.kind = kind


class ListOf:
    def __init__(self, kind: Any) -> None:
        self.kind = kind


class MapOf:
    def __init__(self, kind: Any) -> None:
        self.kind = kind


def optional(kind: Any) -> Optional:
    """The key may be absent or null."""
    return Optional(kind)


#: preprocessing as reports and studies store it (``Recipe.to_dict``)
RECIPE = {"size": optional(ListOf(INTEGER)), "crop": optional(ListOf(INTEGER)), "scale": optional(NUMBER),
          "mean": optional(ListOf(NUMBER)), "std": optional(ListOf(NUMBER)), "color": optional(TEXT),
          "layout": optional(TEXT), "dtype": optional(TEXT), "interpolation": optional(TEXT)}
_STATS = {key: NUMBER for key in ("mean", "std", "cv", "min", "p50", "p90", "p95", "p99", "max")}
PROFILE = {
    "model": TEXT, "backend": TEXT, "engine": TEXT, "device": TEXT, "precision": optional(TEXT),
    "threads": optional(INTEGER), "runs": INTEGER, "concurrency": optional(INTEGER), "latency_ms": _STATS,
    "latencies_ms": optional(ListOf(NUMBER)), "throughput_ips": NUMBER, "load_ms": NUMBER,
    "first_inference_ms": optional(NUMBER), "peak_rss_mb": NUMBER, "model_size_bytes": INTEGER,
    "per_op": ListOf({"name": TEXT, "type": TEXT, "total_ms": NUMBER, "percent": NUMBER, "count": INTEGER}),
    "per_op_note": TEXT, "unstable": ListOf(TEXT), "estimated": optional(FLAG), "simulated": optional(TEXT),
    "energy": optional({"energy_mj_per_inference": optional(NUMBER), "source": optional(TEXT),
                        "method": optional(TEXT), "note": optional(TEXT)}),
    "system": {"os": TEXT, "arch": TEXT, "cpu": TEXT, "cores": INTEGER, "board": optional(TEXT),
               "governor": optional(TEXT), "frequencies_mhz": optional(ListOf(NUMBER)),
               "temperatures": {"before_c": MapOf(NUMBER), "after_c": MapOf(NUMBER)}},
}
CONVERSION = {
    "target": TEXT, "status": TEXT, "artifact": {"path": TEXT, "size_bytes": INTEGER},
    "audit": optional({"integer_ops": INTEGER, "compute_ops": INTEGER, "float_ops": MapOf(INTEGER),
                       "integer_share": optional(NUMBER), "integer_share_basis": optional(TEXT),
                       "input_dtypes": ListOf(TEXT), "output_dtypes": ListOf(TEXT)}),
    "validation": optional({"drop": optional(NUMBER), "accuracy_converted": optional(NUMBER),
                            "outputs": optional(MapOf({"judged_by": optional(TEXT),
                                                      "decision_agreement": optional(NUMBER),
                                                      "cosine": INFINITE_OK, "sqnr_db": INFINITE_OK,
                                                      "sqnr_db_median_sample": optional(INFINITE_OK),
                                                      "max_abs_error": INFINITE_OK}))}),
    "failures": optional(ListOf(TEXT)), "tools": optional(MapOf(TEXT)),
}


def read_reports(path: Path) -> list[dict[str, Any]]:
    """``parse_reports`` of a file, refusing an oversized one before reading it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise EdgekitError(f"cannot read report '{path}': {exc.strerror or exc}") from exc
    return parse_reports(data, f"report '{path}'")


def parse_reports(text: str | bytes, origin: str) -> list[dict[str, Any]]:
    """The conversion and profile reports in ``text`` (one report or a list), each checked against its schema.

    Raises:
        EdgekitError: Too large, not JSON, not a report, or a field of the wrong type (named, with its value).
    """
    if len(text) > MAX_REPORT_BYTES:
        raise EdgekitError(f"{origin} is over {MAX_REPORT_BYTES // 2**20} MiB, more than a report can be; pass "
                           "the .json edgekit wrote")
    try:
        data = json.loads(text)
    except RecursionError:
        raise EdgekitError(f"{origin} is nested too deeply to be a report") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise EdgekitError(f"{origin} is not JSON ({str(exc)[:120]}); pass the .json edgekit wrote") from None
    reports = data if isinstance(data, list) else [data]
    for index, report in enumerate(reports):
        where = origin if len(reports) == 1 else f"{origin} (report {index + 1})"
        if isinstance(report, dict) and {"target", "artifact"} <= set(report):
            check(report, CONVERSION, where)
        elif isinstance(report, dict) and "latency_ms" in report:
            check(report, PROFILE, where)
        else:
            raise EdgekitError(f"{where} holds no edgekit conversion or profile report")
    return reports


def check(value: Any, kind: Any, origin: str, path: str = "") -> None:
    """Raise an EdgekitError naming ``path`` when ``value`` is not of ``kind``."""
    if isinstance(kind, Optional):
        if value is not None:
            check(value, kind.kind, origin, path)
    elif isinstance(kind, dict):
        _expect(isinstance(value, dict), value, "an object", origin, path)
        for key, inner in kind.items():
            if key not in value and not isinstance(inner, Optional):
                raise EdgekitError(f"{origin}: '{_join(path, key)}' is missing; is this a report edgekit wrote?")
            check(value.get(key), inner, origin, _join(path, key))
    elif isinstance(kind, (ListOf, MapOf)):
        _expect(isinstance(value, list if isinstance(kind, ListOf) else dict), value,
                "a list" if isinstance(kind, ListOf) else "an object", origin, path)
        items = enumerate(value) if isinstance(value, list) else value.items()
        for key, inner in items:
            check(inner, kind.kind, origin, f"{path}[{key!r}]" if isinstance(key, str) else f"{path}[{key}]")
    else:
        _expect(_is(value, kind), value, kind, origin, path)


def _is(value: Any, kind: str) -> bool:
    if kind == TEXT:
        return isinstance(value, str)
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == INTEGER:
        return isinstance(value, int) and abs(value) < 2**63
    try:
        number = float(value)
    except OverflowError:  # an integer like 10**400
        return False
    return math.isfinite(number) or (kind == INFINITE_OK and not math.isnan(number))


def _expect(ok: bool, value: Any, kind: str, origin: str, path: str) -> None:
    if not ok:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            shown = "an integer out of range"
        elif isinstance(value, (str, int, float, bool)) or value is None:
            shown = repr(value)
        else:
            shown = type(value).__name__
        raise EdgekitError(f"{origin}: '{path or 'the report'}' is {shown[:60]}, expected {kind}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
