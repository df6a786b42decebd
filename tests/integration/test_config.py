"""The CLI failing fast (exit 2, before Ray starts, nothing written) on a bad config or
``--out``, in a process of its own as a user runs it. The configuration itself is in
``tests/unit/test_config.py``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.common import DEMO_IMAGES, REPO, write_yaml

FAIL_FAST_SECONDS = 2.0


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(DEMO_IMAGES), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return result, time.monotonic() - start


@pytest.fixture
def yolo_missing_weights(tmp_path) -> Path:
    return write_yaml(
        tmp_path / "yolo.yaml", {"annotators": [{"name": "yolo", "weights": "/nonexistent/w.pt"}]}
    )


CLI_CASES = {
    "unknown_key": (["--set", "bogus=1"], "bogus"),
    "unknown_run_key": (["--set", "run.bogus=1"], "run.bogus"),
    "bad_threshold": (["--set", "filters.nms.iou_threshold=2"], "filters.nms.iou_threshold"),
    "unknown_annotator": (["--set", "annotators.0.name=nope"], "annotators.0.name"),
    "missing_weights": (["--config", "{yolo}"], "annotators.0.weights"),
    "bad_workers_flag": (["--workers", "0"], "run.workers"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_config_exits_2_fast_and_writes_nothing(tmp_path, yolo_missing_weights, case):
    extra, key = CLI_CASES[case]
    extra = [arg.replace("{yolo}", str(yolo_missing_weights)) for arg in extra]
    out = tmp_path / "corpus"
    result, seconds = run_cli("--out", str(out), *extra)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert result.stderr.startswith("fld run: ")
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.2f} s to reject a bad config"


def test_cli_unwritable_out_exits_2_fast(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    out = blocker / "corpus"
    result, seconds = run_cli("--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "--out" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert blocker.read_text() == "not a folder"
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.2f} s to reject --out"


def test_cli_missing_config_file_exits_2(tmp_path):
    out = tmp_path / "corpus"
    result, seconds = run_cli("--out", str(out), "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2, result.stderr
    assert "--config" in result.stderr
    assert not out.exists()
    assert seconds < FAIL_FAST_SECONDS


def test_cli_bad_config_imports_neither_ray_nor_torch(tmp_path):
    """The reason rejection is fast: validation needs no heavy library."""
    out = tmp_path / "corpus"
    code = (
        "import sys\n"
        "from pipelines.cli import main\n"
        f"rc = main(['run', {str(DEMO_IMAGES)!r}, '--out', {str(out)!r}, "
        "'--set', 'filters.nms.iou_threshold=2'])\n"
        "heavy = ('ray', 'torch', 'torchvision', 'cv2', 'rapidocr', 'ultralytics')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == "[]"
    assert not out.exists()
