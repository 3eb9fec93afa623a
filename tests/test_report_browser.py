"""The HTML report as a person sees it: rendered by headless Chromium (installed by .ci/run from Debian's
packages), screenshotted, and checked for what a reader would check — no console errors, plots present and
not blank, one table row per artifact."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
from browser import chromium, console_errors, non_blank, require_chromium
from click.testing import CliRunner
from conftest import make_conv_onnx

import edgekit
from edgekit.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.onnxruntime]
require_chromium()  # skips this module where Chromium is absent (fails in CI)


class _Page(HTMLParser):
    """The rows of the comparison table and the plot images, from the DOM Chromium dumps after scripts ran."""

    def __init__(self) -> None:
        super().__init__()
        self.in_comparison = self.in_body = False
        self.rows, self.plots = 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.in_comparison = attrs.get("id") == "comparison"
        elif tag == "tbody" and self.in_comparison:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows += 1
        elif tag == "img" and "plot" in (attrs.get("class") or ""):
            self.plots.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_comparison = self.in_body = False


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    """Two converted artifacts (conversion reports) and their profiles (per-op on), as one report page."""
    folder = tmp_path_factory.mktemp("report")
    results = edgekit.convert(make_conv_onnx(folder / "conv.onnx"), "onnx-fp32,onnx-int8", calibration="random",
                              output_dir=folder / "out")
    # three thread counts each: six rows, as the demo shows (its labels once piled up at the plot's left)
    profiles = [edgekit.profile(r.artifact, runs=30, min_seconds=0.1, per_op=True, energy=False, threads=t).to_dict()
                for r in results for t in (1, 2, 3)]
    (folder / "profile.json").write_text(__import__("json").dumps(profiles))
    page = folder / "report.html"
    result = CliRunner().invoke(cli, ["report", *[str(r.report_path) for r in results], str(folder / "profile.json"),
                                      "-o", str(page)])
    assert result.exit_code == 0, result.output
    return page, len(profiles)


def test_the_report_renders_in_chromium_with_plots_and_one_row_per_artifact(report_page):
    page, artifacts = report_page
    dumped = chromium(page, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert console_errors(dumped.stderr) == []
    parsed = _Page()
    parsed.feed(dumped.stdout)
    assert parsed.rows == artifacts
    assert len(parsed.plots) == 1 + artifacts  # the comparison plot, then one strip per profiled artifact
    for source in parsed.plots:
        assert source.startswith("data:image/png;base64,") and non_blank(base64.b64decode(source.split(",", 1)[1]))
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # nothing fetched
    for name, size in (("desktop", "1200,1600"), ("phone", "390,844")):  # kept beside the page for a person
        shot = page.with_name(f"report-{name}.png")
        done = chromium(page, f"--screenshot={shot}", f"--window-size={size}")
        assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
        assert non_blank(shot.read_bytes())


def test_clicking_a_header_sorts_the_table(report_page, tmp_path):
    """The page's own sort script, driven by clicks appended to a copy of the page: p50 ascending, then
    descending (the page lists the rows in conversion order, which need not be either)."""
    page, artifacts = report_page
    row = re.compile(r'<tr><td[^>]*>[^<]*</td>(?:<td[^>]*>[^<]*</td>){2}<td[^>]*? data-value="([\d.e-]+)"')
    for clicks, descending in ((1, False), (2, True)):
        script = "<script>var th = document.querySelectorAll('#comparison th')[3];" + "th.click();" * clicks
        copy = tmp_path / f"clicked-{clicks}.html"
        copy.write_text(page.read_text().replace("</body>", script + "</script></body>"))
        dumped = chromium(copy, "--dump-dom")
        assert console_errors(dumped.stderr) == []
        p50 = [float(v) for v in row.findall(dumped.stdout)]
        assert len(p50) == artifacts and p50 == sorted(p50, reverse=descending) and len(set(p50)) > 1


def test_the_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><script>undefinedFunction();</script></body></html>")
    assert console_errors(chromium(page, "--dump-dom").stderr)


def _measured(page, tmp_path, width: int) -> dict:
    """The page at ``width`` CSS pixels, measured by a script appended to a copy: the comparison table's and the
    document's scroll width against their visible width."""
    import json

    script = ("<script>var t = document.getElementById('comparison');"
              "document.body.dataset.fit = JSON.stringify({table: [t.scrollWidth, t.clientWidth], "
              "page: [document.documentElement.scrollWidth, document.documentElement.clientWidth]});</script>")
    copy = tmp_path / f"measured-{width}.html"
    copy.write_text(page.read_text().replace("</body>", script + "</body>"))
    dumped = chromium(copy, "--dump-dom", f"--window-size={width},900")
    found = re.search(r'data-fit="([^"]+)"', dumped.stdout)
    assert found, dumped.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.parametrize("width", [1280, 390])
def test_the_table_fits_a_laptop_and_a_phone_without_scrolling_sideways(report_page, tmp_path, width):
    page, _ = report_page
    fit = _measured(page, tmp_path, width)
    assert fit["table"][0] <= fit["table"][1] + 1, fit
    assert fit["page"][0] <= fit["page"][1] + 1, fit


def test_timing_stability_is_stated_once_and_rows_say_only_their_status(report_page):
    text = report_page[0].read_text()
    assert text.count("timing: ") == 1 and "UNSTABLE" not in text
    assert re.findall(r"<summary>[^<]*</summary>", text) and all(
        s.rsplit("— ", 1)[1].startswith(("ok", "failed")) for s in re.findall(r"<summary>([^<]*)</summary>", text))
