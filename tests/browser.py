"""Headless Chromium for the report tests (installed by .ci/run from Debian's packages): render a page, catch its
console errors, tell a drawn plot from a blank one."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def require_chromium() -> str:
    """Chromium's path; fails in CI (which installs it) and skips the calling module elsewhere."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
    return found


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def non_blank(png: bytes) -> bool:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    return pixels.std() > 5 and (pixels < 128).mean() > 0.002  # ink on the page, not one flat colour
