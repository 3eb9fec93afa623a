"""ONNX's backend node conformance cases (1,884 of them ship in the `onnx` wheel), through each engine
directly and through `edgekit.load`: edgekit must pass every case its engine passes.

The goal the suite enforces is 99.5 % of what each raw engine passes; every case that edgekit still
fails where its engine passes must be listed in KNOWN_DIFFERENCES with its reason (none today).
"""

from __future__ import annotations

import pytest
from conformance import compare, node_cases

pytestmark = pytest.mark.slow

GOAL = 0.995
KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {"onnxruntime": {}, "openvino": {}}


@pytest.fixture(scope="module")
def cases():
    return node_cases()


@pytest.mark.parametrize("engine", [pytest.param("onnxruntime", marks=pytest.mark.onnxruntime),
                                    pytest.param("openvino", marks=pytest.mark.openvino)])
def test_edgekit_passes_every_case_its_engine_passes(cases, engine, record_property):
    raw_passed, failed = compare(cases, engine)
    lost = {name: why for name, why in failed.items() if name not in KNOWN_DIFFERENCES[engine]}
    edgekit_passed = raw_passed - len(lost) - len(KNOWN_DIFFERENCES[engine])
    record_property("conformance", f"{engine}: raw {raw_passed}/{len(cases)}, edgekit {edgekit_passed}")
    assert raw_passed > 1000, f"only {raw_passed} cases pass on raw {engine}: the harness is broken"
    assert edgekit_passed >= GOAL * raw_passed, f"{edgekit_passed}/{raw_passed} through edgekit"
    assert not lost, f"{len(lost)} case(s) pass on raw {engine} but not through edgekit: " + "; ".join(
        f"{name}: {reason}" for name, reason in list(lost.items())[:20])
