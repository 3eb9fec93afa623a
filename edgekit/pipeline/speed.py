"""Is an int8 artifact faster than its float sibling here? Measured after each int8 conversion built for this
CPU: an int8 form slower than float is a bug to show the user, not a figure to find later on the device.

Both models run through edgekit's runtime with the engine's own defaults (threads, precision), on one held-out
sample, in interleaved rounds so that a busy machine slows both alike; the fastest round of each is compared
(what the machine can do: other load only adds time). A quick check (about a second), not a profile:
``edgekit profile`` is the measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from edgekit.runtimes import open_runtime
from edgekit.runtimes.base import time_by_op_type
from edgekit.runtimes.cpu import INT8_INSTRUCTIONS, X86_WITHOUT_VNNI, describe_cpu
from edgekit.runtimes.errors import EdgekitError
from edgekit.runtimes.timing import calls_for, interleaved_rounds

#: why an engine's int8 can trail its float on a CPU, measured (benchmarks/int8_speedup.py's one-conv check)
SLOW_INT8 = {
    ("tflite", X86_WITHOUT_VNNI): "XNNPACK's int8 kernels widen to 16 bits on AVX2 without VNNI, so its int8 "
                                  "convolution runs no faster than float there (measured: one 3x3 conv, 64 channels "
                                  "at 56x56, 0.94x, where ONNX Runtime's is 2.0x); on a Raspberry Pi (NEON) or a "
                                  "VNNI/AMX x86 it runs faster than float",
}


def why_int8_is_slower(family: str, cpu: str, report: str = "the artifact's .json report",
                       causes: list[str] | tuple[str, ...] = ()) -> str:
    """The measured reason an engine's int8 trails its float on a CPU description, else the causes this model's
    own evidence shows (``measured_causes``), else a request to report it."""
    if (family, cpu) in SLOW_INT8:
        return SLOW_INT8[family, cpu]
    if causes:
        return "; ".join(causes)
    return f"not expected on this CPU: ship the float form for it, and please report it with {report}"


#: ONNX Runtime's int8 elementwise kernels: what hard-swish, SiLU and squeeze-excite arithmetic becomes in int8.
#: Float fuses that arithmetic into its convolutions; these run apart, and hardly use a second thread
#: (EfficientNet on an AMX Xeon, 1 -> 2 threads: QLinearMul 3.6 -> 3.3 ms, QLinearAdd 1.4 -> 1.7 ms)
INT8_ELEMENTWISE = ("QLinearMul", "QLinearAdd", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
                    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat")
CONVERSIONS = ("QuantizeLinear", "DequantizeLinear")
#: a share of the int8 run above which an op group is named as a cause
CAUSE_SHARE = 0.2


def measured_causes(int8_per_op_ms: dict[str, float] | None, kept_float: dict[str, str] | None,
                    float_precision: str | None) -> list[str]:
    """Why this model's int8 trails its float, from what was measured: the int8 run's time per op type from the
    engine's profiler (ONNX Runtime), the ops its placement kept float (LiteRT), the precision its float form ran
    in (OpenVINO)."""
    causes = []
    int8 = int8_per_op_ms or {}
    total = sum(int8.values())
    for group, what in ((INT8_ELEMENTWISE, "its int8 elementwise ops ({ops}: {share:.0%} of the int8 run) cost "
                                           "what float fuses into its convolutions"),
                        (CONVERSIONS, "conversions between int8 and float ({ops}: {share:.0%} of the int8 run) "
                                      "around the ops left in float")):
        found = {op: ms for op, ms in int8.items() if op in group}
        if total and sum(found.values()) >= CAUSE_SHARE * total:
            ops = ", ".join(f"{op} {ms:.2g} ms" for op, ms in found.items())
            causes.append(what.format(ops=ops, share=sum(found.values()) / total))
    if kept_float:  # why they were kept is the placement's own warning
        causes.append(f"the {', '.join(kept_float)} kept in float for its engine each add a dequantize and a "
                      "quantize")
    if float_precision == "bf16":
        causes.append("its float form runs in bf16 on this CPU, whose bf16 kernels (AMX / AVX-512 BF16) nearly "
                      "match int8")
    return causes


ROUNDS = 5
SETTLE_SECONDS = 0.01
ROUND_SECONDS = 0.02  # per model and round: enough calls that a microsecond model is not all timer overhead
#: below this ratio a warning says int8 is slower (a few percent of slack for the timing itself)
SLOWER_BELOW = 0.95
#: rounds stop early once int8's fastest round is this many times float's slowest (16x8's reference kernels:
#: 45x; five rounds of them would cost seconds for no new information)
CLEARLY_SLOWER = 2.0
#: a repair remedy below this is not kept: under half float's speed is far beyond timing noise and beyond what
#: int8's per-call costs do to a tiny or bf16-rivalled model (remedies measured 0.70-0.90x on the tests' nets
#: and PP-OCR's detector on OpenVINO, whose defaults run alike), where 16x8 runs 0.02-0.05x
REMEDY_SLOWER_BELOW = 1 / CLEARLY_SLOWER
# when int8 is slower: where each model spends its time, from the engine's profiler, for about a second each
# (fewer runs than ~100 let a new session's first, slower runs weigh in)
PROFILE_RUNS, PROFILE_SECONDS = (5, 100), 1.0
TOP_OP_TYPES = 4


def int8_against_float(int8: Any, float_: Any, feeds: dict[str, Any], f32: Any = None) -> dict[str, Any]:
    """``int8`` and ``float_`` are runtimes (or anything with ``run(feeds)``), timed on this machine; ``f32``, the
    float model compiled in f32 where the engine's default ran it in bf16, is timed in the same rounds."""
    calls = {label: partial(runtime.run, feeds) for label, runtime in
             {"int8": int8, "float": float_, "f32": f32}.items() if runtime is not None}
    for call in calls.values():
        call()  # first calls allocate and pick kernels
    per_round = calls_for(calls["float"], ROUND_SECONDS)
    times = interleaved_rounds(calls, ROUNDS, per_round, SETTLE_SECONDS, stop=lambda times: len(times["int8"]) >= 2
                               and min(times["int8"]) > CLEARLY_SLOWER * max(times["float"]))
    int8_ms, float_ms = (min(times[k]) for k in ("int8", "float"))
    here = describe_cpu("auto")
    speed = {"measured": True, "cpu": here, "int8_instructions": INT8_INSTRUCTIONS[here],
             "int8_ms": round(int8_ms, 4), "float_ms": round(float_ms, 4), "speedup": round(float_ms / int8_ms, 3),
             "float_precision": getattr(float_, "precision", None),
             "how": f"fastest of {len(times['int8'])} interleaved rounds of {per_round} call(s), engine defaults, "
                    "one sample"}
    if f32 is not None:
        f32_ms = min(times["f32"])
        speed.update(float_f32_ms=round(f32_ms, 4), speedup_vs_f32=round(f32_ms / int8_ms, 3))
    if speed["speedup"] < SLOWER_BELOW:
        per_op = {label: _time_per_op_type(runtime, feeds, ms) for label, runtime, ms
                  in (("int8", int8, int8_ms), ("float", float_, float_ms))}
        if all(per_op.values()):
            speed["per_op_type_ms"] = per_op
    return speed


def _time_per_op_type(runtime: Any, feeds: dict[str, Any], call_ms: float) -> dict[str, float] | None:
    """Milliseconds per inference by op type, from the engine's own profiler, largest first; None where the
    engine has none (LiteRT through edgekit) or it fails."""
    profile_ops = getattr(runtime, "profile_ops", None)
    if profile_ops is None:
        return None
    fewest, most = PROFILE_RUNS
    runs = max(fewest, min(most, int(PROFILE_SECONDS * 1000 / max(call_ms, 1e-3))))
    try:
        rows = profile_ops(feeds, runs=runs)
    except Exception:  # noqa: BLE001 - evidence only: an engine profiler that fails leaves the warning without it
        return None
    return {op: round(ms, 4) for op, ms in time_by_op_type(rows or ()).most_common()} or None


def describe_per_op_types(per_op: dict[str, dict[str, float]]) -> str:
    """``int8: QLinearConv 0.53, QLinearMul 0.26 ms; float: Conv 0.52 ms ...``: each run's largest op types."""
    return "; ".join(f"{label}: " + ", ".join(f"{op} {ms:.2g}" for op, ms in list(times.items())[:TOP_OP_TYPES])
                     + " ms" for label, times in per_op.items())


def speed_check(int8_path: Path, float_path: Path, feeds: dict[str, Any], for_cpu: str | None,
                adapt: Callable[[Any], Any] = lambda runtime: runtime) -> dict[str, Any]:
    """Time the int8 artifact against its float sibling (both fed through ``adapt``), or say why not: it is
    for another CPU than this one (then no model is loaded at all), or an engine cannot run one of them."""
    here = describe_cpu("auto")
    if for_cpu and for_cpu != here:
        return {"measured": False, "why": f"built for {for_cpu}; this machine is {here}"}
    try:
        with open_runtime(int8_path) as int8, open_runtime(float_path) as float_:
            if float_.precision != "bf16":
                return int8_against_float(adapt(int8), adapt(float_), feeds)
            # OpenVINO's float default on an AVX-512 BF16 / AMX CPU: int8 is judged against it, as the engine
            # runs it, and f32 is timed beside it (without AMX, bf16 can run slower than f32)
            with open_runtime(float_path, precision="f32") as f32:
                return int8_against_float(adapt(int8), adapt(float_), feeds, adapt(f32))
    except EdgekitError as exc:
        return {"measured": False, "why": f"a model did not run: {exc}"}


def _bf16_ran_slower(speed: dict[str, Any]) -> bool:
    """The engine's default bf16 ran the float form slower than f32 here (f32 was timed beside it)."""
    return bool(speed.get("float_f32_ms")) and speed["float_f32_ms"] / speed["float_ms"] < SLOWER_BELOW


def bf16_slower_warning(target: Any, speed: dict[str, Any] | None) -> str | None:
    """A warning when the engine's default bf16 ran its float form slower than f32 here, or None."""
    if not speed or not _bf16_ran_slower(speed):
        return None
    return (f"the float form's default precision on this CPU ({speed['cpu']}) is bf16, and it ran slower than f32 "
            f"({speed['float_ms']:.3g} vs {speed['float_f32_ms']:.3g} ms): {target.name} is {speed['speedup']:.2f}x "
            f"the bf16 default and {speed['speedup_vs_f32']:.2f}x f32; where float is shipped, run it in f32 "
            "(edgekit.load(..., precision=\"f32\"), edgekit profile --precision f32)")


def slower_than_float(speed: dict[str, Any] | None, below: float = SLOWER_BELOW) -> str | None:
    """``runs 0.62x the speed of its float sibling on this CPU (...; 1.5 vs 0.93 ms)``, or None when the check
    did not run or int8 is not slower than ``below`` times float's speed."""
    if not speed or not speed.get("measured") or speed["speedup"] >= below:
        return None
    return (f"runs {speed['speedup']:.2f}x the speed of its float sibling on this CPU ({speed['cpu']}; "
            f"{speed['int8_ms']:.3g} vs {speed['float_ms']:.3g} ms)")


def slower_warning(target: Any, speed: dict[str, Any], kept_float: dict[str, str] | None = None) -> str | None:
    """``kept_float``: the ops the engine placement kept float, and why (the report's ``kept_float_for_engine``)."""
    slower = slower_than_float(speed)
    if not slower:
        return None
    per_op = speed.get("per_op_type_ms")
    where = f". Where the time goes (the engine's profiler): {describe_per_op_types(per_op)}" if per_op else ""
    # a bf16 float form slower than f32 is not why int8 trails it
    precision = None if _bf16_ran_slower(speed) else speed.get("float_precision")
    causes = measured_causes((per_op or {}).get("int8"), kept_float, precision)
    why = why_int8_is_slower(target.family, speed["cpu"], causes=causes)
    return f"{target.name} {slower}: {why}" + where
