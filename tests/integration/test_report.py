"""``fld report``: one self-contained HTML file, loaded in headless Chromium (Debian's
``chromium`` package) without console errors, and a screenshot of it taken."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import run_fld
from tests.fixtures.export_helpers import demo_corpus

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = (
    "Rows per table and iteration",
    "Per-iteration changes",
    "Kept object labels",
    "Score distributions per source",
    "Kept vs dropped, by reason",
    "Texts: objects, attributes and actions per granularity",
    "Gallery",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    corpus = demo_corpus(tmp_path_factory)
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run_fld("report", str(corpus), "--out", str(out), "--samples", "3")
    assert f"wrote {out}" in result.stdout
    return out


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={user_data}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_is_one_self_contained_file(report):
    page = report.read_text()
    for section in SECTIONS:
        assert section in page, section
    # nothing to fetch: no script, no stylesheet or image from anywhere but the page itself
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    plots = [s for s in sources if s.startswith("data:image/png")]
    photos = [s for s in sources if s.startswith("data:image/jpeg")]
    assert len(plots) >= 5 and len(photos) >= 3  # the plots; three drawn gallery images
    assert "bus.jpg" in page and "sign.png" in page and "zidane.jpg" in page
    assert "person" in page and "low_score" in page


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    screenshot = tmp_path / "report.png"
    shot = chromium(
        f"--screenshot={screenshot}", "--window-size=1400,3000", "--enable-logging=stderr",
        "--v=0", report.as_uri(), user_data=tmp_path / "profile",
    )  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    console = [
        line
        for line in shot.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "console error" in line.lower()
    ]
    assert console == []
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 3000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 500  # plots and photos, not a blank page

    dom = chromium("--dump-dom", report.as_uri(), user_data=tmp_path / "profile2")
    assert dom.returncode == 0
    assert "Gallery" in dom.stdout and dom.stdout.count("<img") >= 8
