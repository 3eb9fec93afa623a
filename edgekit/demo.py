"""``edgekit demo``: the whole product on the bundled digits MobileNet in under a minute.

Convert to TFLite, ONNX and OpenVINO int8 plus their float baselines, validate
accuracy with the bundled labeled images, profile every artifact, print one
comparison table and write the full report (markdown, html with plots, json).

The model is a MobileNetV2-style net (inverted residuals, depthwise, ReLU6) trained on
sklearn's handwritten digits read at 32x32 (samples/digits/build_sample.py): about a
millisecond in float on 2 cores, big enough that int8's gain and the timings are real.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._files import write_atomic
from edgekit.pipeline.speed import measured_causes, why_int8_is_slower
from edgekit.runtimes.errors import EdgekitError

FAMILIES = ("tflite", "onnx", "openvino")
TARGETS = [f"{family}-{kind}" for family in FAMILIES for kind in ("fp32", "int8")]
MARKER = ".edgekit-demo"
MODEL = "digits_mobilenet.keras"
TITLE = "edgekit demo: digits MobileNet (32x32 gray, 123k parameters)"


def find_sample(sample: Path | None = None) -> tuple[Path, Path]:
    """The bundled model and labeled images: ``samples/digits`` of a source checkout, or ``sample``."""
    folder = sample or Path(__file__).resolve().parents[1] / "samples" / "digits"
    model, images = folder / MODEL, folder / "images"
    if not model.is_file() or not images.is_dir():
        raise EdgekitError(
            f"the demo sample is not at '{folder}' (it needs {MODEL} and images/); run from a source "
            "checkout of edgekit, or pass --sample DIR (rebuild it with samples/digits/build_sample.py)"
        )
    return model, images


@dataclass(frozen=True)
class DemoRow:
    target: str
    artifact: Path
    size_bytes: int
    accuracy: float | None
    drop: float | None
    p50_ms: float
    p90_ms: float
    speedup: float
    model_mb: float  # the model's own memory: peak while loading and running minus the process before it

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["artifact"] = str(self.artifact)
        return data


def prepare_output(output_dir: Path, *, force: bool) -> Path:
    """The demo writes only into a folder it made (marked) or an empty one, unless forced."""
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / MARKER).exists() and not force:
        raise EdgekitError(f"'{output_dir}' exists and is not an edgekit demo folder; pick another --output-dir "
                           "or pass --force")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / MARKER, lambda tmp: tmp.write_text("written by edgekit demo\n"), force=True)
    return output_dir


def run_demo(output_dir: Path, *, sample: Path | None = None, force: bool = False, progress=None,
             say=lambda text: None, profile_seconds: float = 1.0) -> tuple[list[DemoRow], dict[str, Path]]:
    """Run the demo; return the comparison rows and the report files written."""
    import edgekit
    from edgekit.profiling import output as profile_output
    from edgekit.report import write_report

    model, images = find_sample(sample)
    output_dir = prepare_output(output_dir, force=force)
    started = time.perf_counter()
    say(f"converting {model.name} to {', '.join(TARGETS)} (calibration and validation: {images})")
    results = edgekit.convert(model, TARGETS, calibration=images, calib_size=200, validation_size=100,
                              output_dir=output_dir / "models", force=True, progress=progress,
                              check_speed=False)  # profiled below, properly
    profiles: dict[str, dict[str, Any]] = {}
    for result in results:
        say(f"profiling {result.artifact.name}")
        profiles[result.target] = edgekit.profile(result.artifact, runs=50, min_seconds=profile_seconds,
                                                  threads=None).to_dict()
    rows = []
    for result in results:
        family = result.target.split("-")[0]
        base = profiles[f"{family}-fp32"]["latency_ms"]["p50"]
        lat = profiles[result.target]["latency_ms"]
        validation = result.validation or {}
        rows.append(DemoRow(result.target, result.artifact, result.report["artifact"]["size_bytes"],
                            validation.get("accuracy_converted"), validation.get("drop"), lat["p50"], lat["p90"],
                            base / lat["p50"] if lat["p50"] else 0.0, model_memory_mb(profiles[result.target])))
    ordered = [profiles[t] for t in TARGETS]
    # the evidence a slower int8 form has here: the ops its placement kept float, the precision float ran in
    evidence = {r.target: measured_causes(None, r.report["options"].get("kept_float_for_engine"),
                                          profiles[r.target.split("-")[0] + "-fp32"]["precision"])
                for r in results if r.target.endswith("int8")}
    notes = cpu_notes(rows, causes=evidence)
    files = {
        "json": write_atomic(output_dir / "report.json", lambda tmp: tmp.write_text(json.dumps(
            {"rows": [r.to_dict() for r in rows], "notes": notes, "conversions": [r.report for r in results],
             "profiles": ordered, "seconds": time.perf_counter() - started}, indent=2, default=str)), force=True),
        "md": write_atomic(output_dir / "report.md", lambda tmp: tmp.write_text(
            markdown_table(rows) + "\n" + "".join(f"- {note}\n" for note in notes) + "\n"
            + profile_output.render(ordered, ".md")), force=True),
        "html": write_report([r.report for r in results] + ordered, output_dir / "report.html",
                             title=TITLE),
    }
    return rows, files


def cpu_notes(rows: list[DemoRow], cpu: str | None = None, causes: dict[str, list[str]] | None = None) -> list[str]:
    """This CPU (or ``cpu``, a ``describe_cpu`` description) by its int8 instructions, and for every int8 form
    slower than its float, the reason: the CPU's, else the ``causes`` its evidence shows (per target)."""
    from edgekit.devices import read_cpu_name
    from edgekit.runtimes.cpu import INT8_INSTRUCTIONS, describe_cpu

    cpu = cpu or describe_cpu("auto")
    notes = [f"CPU: {read_cpu_name()} = {cpu}: int8 dot products by {INT8_INSTRUCTIONS[cpu]}"]
    for row in rows:
        if row.target.endswith("int8") and row.speedup < 1.0:
            family = row.target.split("-")[0]
            why = why_int8_is_slower(family, cpu, "report.json", (causes or {}).get(row.target, ()))
            notes.append(f"{row.target} is {row.speedup:.2f}x its float form here: {why}")
    return notes


def model_memory_mb(profile: dict[str, Any]) -> float:
    """What loading and running the model added to the process (the demo's process also holds TensorFlow
    and three engines, so its own peak says nothing about the model)."""
    memory = profile["memory"]
    return max(memory["peak_load_mb"], memory["peak_run_mb"]) - memory["rss_before_mb"]


HEADER = ["form", "size KB", "accuracy %", "drop vs float", "p50 ms", "p90 ms", "speed-up vs float", "model MB"]


def table_cells(row: DemoRow) -> list[str]:
    return [row.target, f"{row.size_bytes / 1024:.1f}", "" if row.accuracy is None else f"{row.accuracy:.1f}",
            "" if row.drop is None else f"{row.drop:.2f}", f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}",
            f"{row.speedup:.2f}x", f"{row.model_mb:.1f}"]


def markdown_table(rows: list[DemoRow]) -> str:
    lines = [f"# {TITLE}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
