"""ONNX's own backend node conformance cases (shipped in the ``onnx`` wheel), run through an engine
directly and through ``edgekit.load``, so a test can show that edgekit passes what the engine passes.

A case passes when every output of every data set matches ONNX's expected values within the case's
tolerances. Both sides run the same file with the same settings (OpenVINO at f32 on both). ``compare`` splits
the cases over two processes where there are two cores (each case is a model compiled twice, single-threaded).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def node_cases() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if c.kind == "node"]


def input_names(model: Any) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def matches(expected: Any, actual: Any, rtol: float, atol: float) -> bool:
    """ONNX's own comparison: same shape and dtype kind, values within tolerance (NaN equals NaN)."""
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a, rtol, atol) for e, a in zip(expected, actual))
    if expected is None:
        return actual is None
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        return False
    if expected.dtype.kind in "OSU" or actual.dtype.kind in "OSU":
        return expected.astype(str).tolist() == actual.astype(str).tolist()
    if expected.dtype.kind == "b" or actual.dtype.kind == "b":
        return np.array_equal(expected.astype(bool), actual.astype(bool))
    try:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol)
    except AssertionError:
        return False
    return True


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str = ""


def _judge(case: Any, run) -> Outcome:
    """Run every data set with ``run(feeds) -> list of outputs``; any exception is a failure with its text."""
    try:
        for inputs, expected in case.data_sets:
            outputs = run(inputs)
            if len(outputs) != len(expected):
                return Outcome(False, f"{len(outputs)} outputs, expected {len(expected)}")
            for index, (e, a) in enumerate(zip(expected, outputs)):
                if not matches(e, a, case.rtol, case.atol):
                    return Outcome(False, f"output {index} differs")
    except Exception as exc:  # noqa: BLE001 - any failure of a case is an outcome to count, not to stop on
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return Outcome(False, f"{type(exc).__name__}: {first}")
    return Outcome(True)


def run_raw(case: Any, path: Path, engine: str) -> Outcome:
    names = input_names(case.model)
    if engine == "onnxruntime":
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            return Outcome(False, f"load: {type(exc).__name__}")
        outputs = [o.name for o in session.get_outputs()]
        return _judge(case, lambda inputs: session.run(outputs, dict(zip(names, inputs))))
    import openvino as ov

    try:
        compiled = ov.Core().compile_model(str(path), "CPU", OV_CONFIG)
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, f"load: {type(exc).__name__}")

    def run(inputs: list[Any]) -> list[Any]:
        request = compiled.create_infer_request()
        request.infer(list(inputs))
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return _judge(case, run)


def run_edgekit(case: Any, path: Path, engine: str) -> Outcome:
    import edgekit

    names = input_names(case.model)
    options = {"config": OV_CONFIG} if engine == "openvino" else {}
    try:
        runtime = edgekit.load(path, backend=engine, **options)
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, f"load: {type(exc).__name__}: {str(exc)[:200]}")
    with runtime:
        return _judge(case, lambda inputs: list(runtime.run(dict(zip(names, inputs))).values()))


def write_model(case: Any, folder: Path) -> Path:
    import onnx

    path = folder / f"{case.name}.onnx"
    onnx.save(case.model, path)
    return path


def _compare_share(cases: list[Any], engine: str) -> tuple[int, dict[str, str]]:
    """(cases the raw engine passes, {case: reason} for those edgekit then fails) over ``cases``."""
    raw_passed, lost = 0, {}
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            path = write_model(case, Path(folder))
            if run_raw(case, path, engine).passed:
                raw_passed += 1
                outcome = run_edgekit(case, path, engine)
                if not outcome.passed:
                    lost[case.name] = outcome.reason
            path.unlink()
    return raw_passed, lost


def compare(cases: list[Any], engine: str) -> tuple[int, dict[str, str]]:
    """``_compare_share`` over all ``cases``, split across two fresh (spawned) processes where there are two
    cores or more (more would mostly add each worker's engine imports and memory on this suite's machines)."""
    workers = max(1, min(2, os.cpu_count() or 1))
    if workers == 1:
        return _compare_share(cases, engine)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        shares = list(pool.map(_compare_share, [cases[i::workers] for i in range(workers)], [engine] * workers))
    return sum(n for n, _ in shares), {name: why for _, lost in shares for name, why in lost.items()}
