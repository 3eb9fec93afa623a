"""What ``edgekit optimize`` searches: one point is a target, the converter options that make it and the
runtime options that run it.

The space is define-by-run and conditional on the format (Optuna's idiom): format -> precision -> the
quantization knobs that precision's converter exposes -> how many of the most sensitive layers stay float
(an integer over the per-layer sensitivity ranking, never a free subset) -> runtime knobs. Parameter names
carry their condition (``onnx.int8.calib_method``), so a sampler never mixes one format's knob with another's.
Every default a knob can take is the engine's or converter's own default, so the enqueued "defaults" trials
are exactly what ``edgekit convert --to FORMAT-int8`` makes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

#: precisions each format can take, as edgekit targets name them (format-precision)
PRECISIONS: dict[str, tuple[str, ...]] = {
    "tflite": ("fp32", "fp16", "dynamic", "int8", "int16x8", "w4"),
    "onnx": ("fp32", "fp16", "int8-dynamic", "int8", "w4", "w8"),
    "openvino": ("fp32", "fp16", "int8", "w4", "w8"),
}
#: quantization knobs per target: name -> choices, the converter's default first
KNOBS: dict[str, dict[str, tuple[Any, ...]]] = {
    "tflite-int8": {"io": ("int8", "float"), "keep_output_float": (False, True), "allow_float_ops": (False, True)},
    "onnx-int8": {"calib_method": ("minmax", "entropy", "percentile"), "per_channel": (True, False),
                  "keep_output_float": (False, True)},
    "openvino-int8": {"preset": ("performance", "mixed"), "keep_output_float": (False, True)},
}
#: targets whose most sensitive layers can be kept float, and the converter option that names those layers
KEEP_FLOAT_OPTION = {"tflite-int8": "exclude_nodes", "onnx-int8": "exclude_nodes", "openvino-int8": "ignored_names"}
RANKED = tuple(KEEP_FLOAT_OPTION)
#: execution precisions a runtime can be asked for, per format or per target ("auto" = the engine's own default):
#: OpenVINO's hint for every form; XNNPACK's forced fp16 for LiteRT's float forms (integer ones have nothing to
#: run in fp16, and dynamic/w4 forms' float activations are a case not measured yet)
EXECUTION = {"openvino": ("auto", "f32"), "tflite-fp32": ("auto", "f16"), "tflite-fp16": ("auto", "f16")}
#: ONNX Runtime graph optimization levels ("all" is ONNX Runtime's default)
GRAPH_OPTIMIZATION = ("all", "basic")


@dataclass(frozen=True)
class Candidate:
    """One point of the space: what to convert and how to run it."""

    target: str
    options: dict[str, Any] = field(default_factory=dict)  # convert options (kept layers filled in later)
    kept_float: int = 0  # the k most sensitive layers kept in float
    threads: int | None = None  # None: the engine's default
    precision: str | None = None  # execution precision; None: the engine's default
    graph_optimization: str | None = None  # ONNX Runtime only; None: its default

    @property
    def format(self) -> str:
        return self.target.split("-", 1)[0]

    def runtime_options(self) -> dict[str, Any]:
        found = {"threads": self.threads, "precision": self.precision, "graph_optimization": self.graph_optimization}
        return {k: v for k, v in found.items() if v is not None}

    def describe(self) -> str:
        parts = [self.target] + [f"{k}={v}" for k, v in sorted(self.options.items())]
        parts += [f"{self.kept_float} layer(s) float"] if self.kept_float else []
        parts += [f"{k}={v}" for k, v in self.runtime_options().items()]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "options": dict(self.options), "kept_float": self.kept_float,
                **self.runtime_options()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(data["target"], dict(data.get("options", {})), data.get("kept_float", 0), data.get("threads"),
                   data.get("precision"), data.get("graph_optimization"))


@dataclass(frozen=True)
class Space:
    formats: tuple[str, ...]
    thread_choices: tuple[int, ...]  # 0 = the engine's default
    max_kept_float: int = 8

    def targets(self) -> list[str]:
        return [f"{fmt}-{p}" for fmt in self.formats for p in PRECISIONS[fmt]]

    def suggest(self, trial: Any) -> Candidate:
        """Ask ``trial`` (an Optuna trial) for one point, define-by-run."""
        fmt = trial.suggest_categorical("format", list(self.formats))
        target = f"{fmt}-{trial.suggest_categorical(f'{fmt}.precision', list(PRECISIONS[fmt]))}"
        options = {name: trial.suggest_categorical(f"{target}.{name}", list(choices))
                   for name, choices in KNOBS.get(target, {}).items()}
        kept = trial.suggest_int(f"{target}.kept_float", 0, self.max_kept_float) if target in RANKED else 0
        threads = trial.suggest_categorical("threads", list(self.thread_choices))
        execution = _execution_key(target)
        precision = trial.suggest_categorical(f"{execution}.execution", list(EXECUTION[execution])) \
            if execution else None
        graph = trial.suggest_categorical("onnx.graph_optimization", list(GRAPH_OPTIMIZATION)) \
            if fmt == "onnx" else None
        return _candidate(target, options, kept, threads, precision, graph)

    def defaults(self) -> list[dict[str, Any]]:
        """Parameters of each format's default int8 and fp32 conversion, run with the engine's defaults:
        the baselines a search must beat, evaluated first."""
        found = []
        for fmt in self.formats:
            for precision in ("int8", "fp32"):
                target = f"{fmt}-{precision}"
                params = {"format": fmt, f"{fmt}.precision": precision, "threads": 0}
                params.update({f"{target}.{name}": choices[0] for name, choices in KNOBS.get(target, {}).items()})
                params.update({f"{target}.kept_float": 0} if target in RANKED else {})
                params.update({f"{_execution_key(target)}.execution": "auto"} if _execution_key(target) else {})
                params.update({"onnx.graph_optimization": "all"} if fmt == "onnx" else {})
                found.append(params)
        return found

    def enumerate(self) -> list[dict[str, Any]]:
        """Every point's parameters (what a brute-force search visits)."""
        points = []
        for target in self.targets():
            fmt = target.split("-", 1)[0]
            axes: dict[str, list[Any]] = {"format": [fmt], f"{fmt}.precision": [target.split("-", 1)[1]]}
            axes.update({f"{target}.{n}": list(c) for n, c in KNOBS.get(target, {}).items()})
            if target in RANKED:
                axes[f"{target}.kept_float"] = list(range(self.max_kept_float + 1))
            axes["threads"] = list(self.thread_choices)
            if _execution_key(target):
                axes[f"{_execution_key(target)}.execution"] = list(EXECUTION[_execution_key(target)])
            if fmt == "onnx":
                axes["onnx.graph_optimization"] = list(GRAPH_OPTIMIZATION)
            points += [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
        return points


def _execution_key(target: str) -> str | None:
    """The EXECUTION entry that applies to ``target``: its own, else its format's."""
    return next((key for key in (target, target.split("-", 1)[0]) if key in EXECUTION), None)


def _candidate(target: str, options: dict[str, Any], kept: int, threads: int, precision: str | None,
               graph: str | None) -> Candidate:
    knobs = KNOBS.get(target, {})
    # a knob at the converter's default is left out: the artifact is then exactly what `convert` makes
    options = {k: v for k, v in options.items() if v != knobs[k][0]}
    if target == "tflite-int8" and (kept or options.get("keep_output_float")):
        options["allow_float_ops"] = True  # the layers kept float are float ops by design
    return Candidate(target, options, kept, threads or None, None if precision in (None, "auto") else precision,
                     None if graph in (None, "all") else graph)
