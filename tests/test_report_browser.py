"""The HTML report in a real browser: headless Chromium renders it without console errors, the
screenshot shows the page and its plots, and the DOM holds the tables and every image.

Chromium is a test dependency here (``scripts/setup.sh`` installs Debian's ``chromium``); when
it is missing these tests fail rather than skip, so that CI cannot pass without them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from report_helpers import EVAL_ALGORITHMS, EVAL_TRACES, make_eval_output

from streambed.reports.html import write_html_report
from streambed.reports.style import algorithm_color

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_S = 90
WINDOW = (1280, 2400)
# Chromium prints a page's console messages on stderr as ``CONSOLE(line)`` (older builds) or
# ``INFO:CONSOLE:line]`` (newer); uncaught exceptions as ``Uncaught ...``.
CONSOLE = re.compile(r"CONSOLE[(:]|Uncaught")
# BBA's colour in every plot: its CDF line, its scatter points and its timelines' bitrate.
C0_BLUE = np.array(to_rgb(algorithm_color("bba"))) * 255


def chromium() -> Path:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} not found: the report's browser tests need Chromium; "
            "scripts/setup.sh installs it (Debian package chromium)"
        )
    return CHROMIUM


def run_chromium(tmp: Path, page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    argv = [
        str(chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--enable-logging=stderr",
        "--v=0",
        *options,
        page.resolve().as_uri(),
    ]
    # HOME too, so that nothing lands in the real home directory.
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    out, traces_dir = make_eval_output(root)
    return write_html_report([out], root / "report.html", traces=traces_dir)


def test_screenshot(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = run_chromium(tmp_path, page, f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert console_errors(result.stderr) == []
    assert shot.is_file(), result.stderr[-4000:]
    image = imread(shot)  # floats in [0, 1]
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    rgb = np.round(image[..., :3] * 255).astype(np.int16)
    ink = np.any(rgb < 235, axis=-1).mean()
    assert ink > 0.05, f"the page looks blank ({ink:.1%} non-white pixels)"
    blue = np.all(np.abs(rgb - C0_BLUE) <= 30, axis=-1).sum()
    assert blue > 500, f"no plot colours on the page ({blue} pixels near BBA's colour)"


def test_dom(page: Path, tmp_path: Path) -> None:
    result = run_chromium(tmp_path, page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-4000:]
    assert console_errors(result.stderr) == []
    dom = result.stdout
    assert '<table id="summary">' in dom and '<table id="paired">' in dom
    for algorithm in EVAL_ALGORITHMS:
        assert f'data-label="{algorithm}"' in dom
    images = re.findall(r"<img\b[^>]*>", dom)
    assert len(images) == 2 + len(EVAL_ALGORITHMS) * EVAL_TRACES
    assert all('src="data:image/png;base64,' in tag for tag in images)


def test_console_errors_are_seen(tmp_path: Path) -> None:
    """The check above can fail: a page with a script error shows up on stderr."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>undefined_function();</script>")
    result = run_chromium(tmp_path, bad, "--dump-dom")
    assert result.returncode == 0, result.stderr[-4000:]
    assert any("undefined_function" in line for line in console_errors(result.stderr))
