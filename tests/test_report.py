"""The report's data: conversion and profile reports joined per file, the Pareto front, markdown verdicts,
and bad input named in one line."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from edgekit import EdgekitError
from edgekit.cli import cli
from edgekit.pareto import non_dominated
from edgekit.report import collect, load_reports, render_markdown


def _conversion(name: str, drop: float, size: int) -> dict:
    return {"target": "tflite-int8", "status": "ok", "failures": [], "artifact": {"path": f"/work/out/{name}",
            "size_bytes": size}, "validation": {"drop": drop, "accuracy_converted": 97.0, "outputs": {}},
            "audit": {"integer_ops": 9, "compute_ops": 10, "float_ops": {"HARD_SWISH": 1}, "input_dtypes": ["int8"],
                      "output_dtypes": ["int8"]}, "tools": {"edgekit": "0.1.0"}}


def _profile(name: str, p50: float, threads: int | None = None) -> dict:
    """A complete profile report, as ``ProfileReport.to_dict`` writes it (reports read back are checked)."""
    latency = {"mean": p50, "std": 0.0, "cv": 0.0, "min": p50, "p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.2,
               "p99": p50 * 1.3, "max": p50 * 1.3}
    return {"model": f"/home/pi/models/{name}", "backend": "litert", "engine": "ai_edge_litert 2.3.0",
            "device": "cpu", "threads": threads, "precision": "f32", "latency_ms": latency, "runs": 3,
            "latencies_ms": [p50, p50, p50 * 1.3], "throughput_ips": 1000 / p50, "load_ms": 1.0,
            "first_inference_ms": p50, "peak_rss_mb": 50.0, "model_size_bytes": 1000, "per_op": [],
            "per_op_note": "not measured", "unstable": [], "energy": {"energy_mj_per_inference": None},
            "system": {"os": "Debian 12", "arch": "aarch64", "cpu": "Cortex-A76", "cores": 4, "board": None,
                       "governor": "performance", "frequencies_mhz": [2400.0],
                       "temperatures": {"before_c": {"cpu": 45.0}, "after_c": {"cpu": 47.0}}}}


def test_reports_join_per_file_name_across_machines():
    rows = collect([_conversion("m_int8.tflite", 0.4, 3000), _conversion("m_fp32.tflite", 0.0, 12000),
                    _profile("m_int8.tflite", 1.0, threads=1), _profile("m_int8.tflite", 0.6, threads=2)])
    assert [(r.label, r.latency("p50"), r.drop) for r in rows] == [
        ("m_int8.tflite (1 threads)", 1.0, 0.4), ("m_int8.tflite (2 threads)", 0.6, 0.4),
        ("m_fp32.tflite", None, 0.0)]  # converted, never profiled: still a row
    assert rows[2].size_bytes == 12000 and rows[0].status == "ok · stable"


def test_pareto_front_keeps_what_nothing_beats_on_every_axis():
    points = [(1.0, 0.5), (2.0, 0.1), (1.5, 0.6), (3.0, 0.0), (2.5, 0.1)]  # (latency, drop)
    assert non_dominated(points) == [0, 1, 3]
    sized = [(1.0, 0.5, 9), (2.0, 0.5, 1), (1.0, 0.5, 9), (1.5, 0.6, 9)]  # (latency, drop, size): ties both stay
    assert non_dominated(sized) == [0, 2, 1]


def test_markdown_gives_each_row_a_regression_verdict():
    now = [_profile("a.tflite", 1.25), _profile("b.tflite", 2.0), _profile("c.tflite", 1.0)]
    then = [_profile("a.tflite", 1.0), _profile("b.tflite", 2.0)]
    text = render_markdown(now, baseline=then, max_regression=0.10)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert "+25.0%" in lines["`a.tflite`"] and "**regressed**" in lines["`a.tflite`"]
    assert "+0.0%" in lines["`b.tflite`"] and lines["`b.tflite`"].rstrip(" |").endswith("ok")
    assert "no baseline" in lines["`c.tflite`"]
    assert "1 regression(s) over 10% in p50 latency." in text


def test_the_report_command_fails_on_a_regression_and_names_bad_files(tmp_path):
    (tmp_path / "now.json").write_text(json.dumps([_profile("a.tflite", 1.25)]))
    (tmp_path / "then.json").write_text(json.dumps([_profile("a.tflite", 1.0)]))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "now.json"), "--baseline", str(tmp_path / "then.json"),
                                      "--max-regression", "10%", "-o", str(tmp_path / "c.md")])
    assert result.exit_code == 1 and "regressed more than 10%" in result.output
    assert "**regressed**" in (tmp_path / "c.md").read_text()
    (tmp_path / "other.json").write_text('{"name": "not a report"}')
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "other.json"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "holds no edgekit conversion or profile report" in result.output
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(EdgekitError, match="cannot read report"):
        load_reports([tmp_path / "missing.json"])


def test_rows_without_profiles_or_validation_still_render():
    from edgekit.report import render_html

    unvalidated = copy.deepcopy(_conversion("m.onnx", 0.0, 100))
    unvalidated["validation"] = None
    page = render_html([unvalidated])
    assert page.count("<tr>") == 2 and "m.onnx" in page  # header row + one artifact, no plot to draw


@pytest.mark.onnxruntime
def test_convert_writes_its_report_page(tmp_path):
    from conftest import make_conv_onnx

    result = CliRunner().invoke(cli, ["convert", str(make_conv_onnx(tmp_path / "conv.onnx")), "--to",
                                      "onnx-fp32,onnx-fp16", "-o", str(tmp_path / "out"), "--report",
                                      str(tmp_path / "out" / "report.md")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "out" / "report.md").read_text()
    assert "`conv_fp32.onnx`" in table and "`conv_fp16.onnx`" in table
