"""The documentation site (mkdocs.yml, docs/) builds in strict mode — a broken link, a missing page or a
docstring the API reference cannot read fails — and every code block marked runnable runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = re.compile(r"<!-- runnable -->\n```(python|bash)\n(.*?)\n```", re.S)


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    from edgekit.cli import cli

    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    commands = cli.list_commands(None)
    assert "convert" in commands and "run" in commands
    missing = [name for name in commands if f"edgekit {name} [OPTIONS]" not in reference]
    assert not missing, f"commands without their generated reference: {missing}"
    assert "def convert" not in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        found += [(str(page.relative_to(ROOT)), kind, code) for kind, code in RUNNABLE.findall(page.read_text())]
    return found


def test_the_docs_hold_runnable_blocks():
    assert len(_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.onnxruntime
def test_every_runnable_block_runs_as_written(tmp_path):
    """Run in order in one folder that holds the repository's samples, as a reader at the root would."""
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    for page, kind, code in _blocks():
        command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, f"{page}: {code}\n{done.stderr[-2000:]}"
