"""Where benchmark results go: every run keeps its JSON.

``bench/results/<name>.json`` is the latest run of a benchmark (what the docs quote);
``bench/results/history/<run_id>/<name>.json`` keeps every run, never overwritten. A smoke
run (``--quick``) goes to the history only. A run id is the UTC start time and the commit (``20261130T031500Z-b5e0dac``); each file also
carries ``run_id`` and ``date``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def new_run_id() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=RESULTS_DIR.parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "nogit"
    return f"{stamp}-{commit}"


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def save_result(name: str, payload: dict, run_id: str, latest: bool = True) -> Path:
    """Write ``payload`` into the run's history folder and, unless ``latest`` is false (a
    smoke run), as the latest ``<name>.json``; returns the history file's path."""
    payload = {**payload, "run_id": run_id, "date": run_id.split("-")[0]}
    kept = RESULTS_DIR / "history" / run_id / f"{name}.json"
    _write(kept, payload)
    if latest:
        _write(RESULTS_DIR / f"{name}.json", payload)
    return kept
