"""``edgekit demo``: the whole product on the bundled digits CNN in under three minutes.

Convert to TFLite, ONNX and OpenVINO int8 plus their float baselines, validate
accuracy with the bundled labeled images, profile every artifact, print one
comparison table and write the full report (markdown, html with plots, json).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._files import write_atomic
from edgekit.runtimes.errors import EdgekitError

FAMILIES = ("tflite", "onnx", "openvino")
TARGETS = [f"{family}-{kind}" for family in FAMILIES for kind in ("fp32", "int8")]
MARKER = ".edgekit-demo"


def find_sample(sample: Path | None = None) -> tuple[Path, Path]:
    """The bundled model and labeled images: ``samples/digits`` of a source checkout, or ``sample``."""
    folder = sample or Path(__file__).resolve().parents[1] / "samples" / "digits"
    model, images = folder / "digits_cnn.keras", folder / "images"
    if not model.is_file() or not images.is_dir():
        raise EdgekitError(
            f"the demo sample is not at '{folder}' (it needs digits_cnn.keras and images/); run from a source "
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
    (output_dir / MARKER).write_text("written by edgekit demo\n")
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
                              output_dir=output_dir / "models", force=True, progress=progress)
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
                            base / lat["p50"] if lat["p50"] else 0.0))
    ordered = [profiles[t] for t in TARGETS]
    files = {
        "json": write_atomic(output_dir / "report.json", lambda tmp: tmp.write_text(json.dumps(
            {"rows": [r.to_dict() for r in rows], "conversions": [r.report for r in results], "profiles": ordered,
             "seconds": time.perf_counter() - started}, indent=2, default=str)), force=True),
        "md": write_atomic(output_dir / "report.md", lambda tmp: tmp.write_text(
            markdown_table(rows) + "\n" + profile_output.render(ordered, ".md")), force=True),
        "html": write_report([r.report for r in results] + ordered, output_dir / "report.html",
                             title="edgekit demo: digits CNN"),
    }
    return rows, files


HEADER = ["form", "size KB", "accuracy %", "drop vs float", "p50 ms", "p90 ms", "speed-up vs float"]


def table_cells(row: DemoRow) -> list[str]:
    return [row.target, f"{row.size_bytes / 1024:.1f}", "" if row.accuracy is None else f"{row.accuracy:.1f}",
            "" if row.drop is None else f"{row.drop:.2f}", f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}",
            f"{row.speedup:.2f}x"]


def markdown_table(rows: list[DemoRow]) -> str:
    lines = ["# edgekit demo: digits CNN", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
