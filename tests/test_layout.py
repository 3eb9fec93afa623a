"""The code's shape, read from its own imports (every import statement, inside functions too): converters
are a row — source-side modules make what targets consume, target modules consume it and never each other —
and no edgekit module imports another package's private functions."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"edgekit": ROOT / "edgekit", "edgekit.converters": ROOT / "converters",
           "edgekit.runtimes": ROOT / "runtimes"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if package == "edgekit" and path.relative_to(folder).parts[0] in ("converters", "runtimes"):
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from X import a, b`` and ``import X`` the file runs (those under ``if
    TYPE_CHECKING:`` are for type checkers only)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def _target_modules() -> set[str]:
    from edgekit.converters import TARGETS

    return {target.converter.split(":")[0] for target in TARGETS.values()}


def test_target_modules_consume_sources_and_never_each_other():
    targets = _target_modules()
    assert targets == {f"edgekit.converters._{n}" for n in ("tflite", "onnx", "openvino", "ethosu", "qnn", "rknn",
                                                                "imx500")}
    modules = _modules()
    crossing = []
    for name in targets:
        for imported, _ in _imports(modules[name]):
            # Ethos-U compiles the int8 .tflite the TFLite target makes: the one target built on another
            if imported in targets and imported != name and (name, imported) != ("edgekit.converters._ethosu",
                                                                                     "edgekit.converters._tflite"):
                crossing.append(f"{name} imports {imported}")
    assert not crossing


def test_only_the_converter_registry_reaches_a_target_module():
    """Source-side modules, the pipeline and the job (its float reference, the channels-last feeds) use what
    the source side makes; a target module is reached through ``Target.function()`` alone."""
    targets = _target_modules()
    modules = _modules()
    reaching = [f"{name} imports {imported}" for name, path in modules.items() if name not in targets
                for imported, _ in _imports(path) if imported in targets]
    assert not reaching


def test_no_module_imports_a_private_function_of_another_package():
    """``from edgekit.pipeline.conversion import _source_info`` from the optimizer was how the prepared job's work
    got done twice; a private name is its own package's business."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        for imported, names in _imports(path):
            if not imported.startswith("edgekit"):
                continue
            other = imported.rsplit(".", 1)[0] if imported in modules and modules[imported].name != "__init__.py" \
                else imported
            private = [n for n in names
                       if n.startswith("_") and n != "__version__" and f"{imported}.{n}" not in modules]
            if private and other != package:
                found.append(f"{name}: from {imported} import {', '.join(private)}")
    assert not found


@pytest.mark.parametrize("name", sorted({t for t in __import__("edgekit.converters").converters.TARGETS}))
def test_every_target_converter_has_the_converter_signature(name):
    from edgekit.converters import PIPELINE_ARGUMENTS, TARGETS

    target = TARGETS[name]
    parameters = list(inspect.signature(target.function()).parameters.values())
    assert [p.name for p in parameters[:3]] == ["source", "target", "output"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[:3])
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters[3:]), name
    assert "calibration" in target.parameters() and target.options().isdisjoint(PIPELINE_ARGUMENTS)


def test_no_import_circle():
    """Modules import downward only: a circle (``optimizing.result`` <-> ``study``, ``runtimes._litert`` <->
    ``audit`` before) means neither can be read, tested or moved without the other."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, names in _imports(path):
            for target in [f"{imported}.{n}" for n in names if f"{imported}.{n}" in modules] or [imported]:
                if target in modules and target != name:
                    graph[name].add(target)
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def circle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path[path.index(target):] + [name, target] if target in path else [name, target]
            if target not in state:
                found = circle_from(target, path + [name])
                if found:
                    return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            assert circle_from(name, []) is None


#: an engine's private backend module, shared only with that engine's converter and the device listing
ENGINE_INTERNALS = {
    "edgekit.converters._onnx": {"edgekit.runtimes._ort"},  # ONNX Runtime's errors, as the backend reads them
    # the stem placement reads ORT's profiler through the runtime's own parser of its per-node events
    "edgekit.converters._ort_placement": {"edgekit.runtimes._ort"},
    "edgekit.converters._openvino": {"edgekit.runtimes._openvino"},  # OpenVINO's messages, likewise
    # the QNN provider's session options (CPU fallback off) compile the context the runtime then loads
    "edgekit.converters._qnn": {"edgekit.runtimes._qnn"},
    "edgekit.devices": {"edgekit.runtimes._litert", "edgekit.runtimes._ort", "edgekit.runtimes._openvino"},
}


def test_outside_runtimes_only_engine_internals_are_shared_and_only_with_their_engine():
    """What several layers use is a public module of ``edgekit.runtimes`` (formats, cpu, quantization, audit,
    vela, telemetry, litert_interpreter); a private one is an engine's backend, reached from outside only by
    the code that speaks to that same engine."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        if name.startswith("edgekit.runtimes"):
            continue
        for imported, names in _imports(path):
            private = [m for m in [imported, *(f"{imported}.{n}" for n in names)]
                       if m in modules and m.startswith("edgekit.runtimes._")]
            found += [f"{name} imports {m}" for m in private if m not in ENGINE_INTERNALS.get(name, ())]
    assert not found
