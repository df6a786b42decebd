"""``bench/gpu_check.py`` is meant for a GPU machine, where it runs once; its smoke mode
(``--device cpu``) runs here so that the script the GPU run depends on keeps working.
Its placement part is the same ``fld run`` of the tiny preset that
``test_gpu_placement.py`` runs on fake GPUs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.common import REPO


def test_gpu_check_smoke_run_measures_batched_and_per_image_throughput(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu",
         "--only", "throughput", "--images", "4", "--repeats", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and "placement" not in figures
    for name in ("grounder", "sam"):
        measured = figures["throughput"][name]
        assert len(measured["runs"]) == 2
        ratios = [r["batched_images_per_s"] / r["per_image_images_per_s"] for r in measured["runs"]]
        low, high = measured["spread"]
        assert low == round(min(ratios), 3) and high == round(max(ratios), 3)
        assert low <= measured["ratio_batched_over_per_image"] <= high
    history = REPO / "bench" / "results" / "history"
    assert not any(history.glob("*/gpu_check.json"))  # a smoke run is not a figure
