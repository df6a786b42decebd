"""Fault battery 8 (slow only): SIGKILL ``fld refine`` during the student's training, and
separately during iteration 2's annotation; rerun; the corpus must equal an uninterrupted
refine run's, every iteration (0, 1, 2), every table.

One committed iteration 0 (the light config, 16 small photos, 8 shards) is copied three times: an
uninterrupted ``fld refine --iterations 2 --epochs 1`` on the first copy is the reference;
the second is killed at a random moment inside iteration 1's training (after ultralytics
wrote ``models/iteration=1/train/args.yaml``, before ``student.pt``); the third after a random number of iteration 2's
shard markers (1 to 4 of 8). The student's training is seeded and deterministic and is redone from the
start after a kill, so the reruns must give the same rows.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from pipelines.annotate import annotate_corpus
from pipelines.config import load_config
from tests.fixtures.battery import (
    BIN,
    REPO,
    check_corpus_integrity,
    count_rows,
    marker_count,
    report,
    small_photos,
    wait_for,
    write_light_config,
)
from tests.fixtures.corpus_tools import all_rows

SEED = int(os.environ.get("FLD_BATTERY_SEED", "20240607"))
STUDENT = ["--epochs", "1", "--set", "refine.student.kind=yolo",
           "--set", "refine.student.image_size=128",
           "--set", "refine.student.min_score=0.0005"]  # fmt: skip


def refine_command(corpus, ray_address) -> list[str]:
    return [str(BIN / "fld"), "refine", str(corpus), "--iterations", "2", "--address",
            ray_address, "--quiet", *STUDENT]  # fmt: skip


def refine(corpus, ray_address) -> float:
    started = time.monotonic()
    result = subprocess.run(
        refine_command(corpus, ray_address), capture_output=True, text=True, timeout=1800,
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return time.monotonic() - started


def killed_refine(corpus, ray_address, ready, delay: float) -> None:
    driver = subprocess.Popen(
        refine_command(corpus, ray_address), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: ready() or driver.poll() is not None, timeout=1200, interval=0.01)
        time.sleep(delay)
        assert driver.poll() is None, "refine finished before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait()


@pytest.mark.slow
def test_kill_refine_in_training_and_in_iteration_2(ray_address, tmp_path, capsys):
    rng = random.Random(SEED)
    photos = tmp_path / "photos"
    small_photos(photos, 16)
    config = load_config(write_light_config(tmp_path), ["run.shard_size=2", "run.executor=local"])
    base = tmp_path / "base"
    annotate_corpus(config, str(photos), str(base), show_progress=False)
    copies = {name: tmp_path / name for name in ("reference", "in_training", "in_iteration_2")}
    for path in copies.values():
        shutil.copytree(base, path)

    reference_seconds = refine(copies["reference"], ray_address)
    reference = all_rows(copies["reference"])
    student = json.loads(
        (copies["reference"] / "models" / "iteration=1" / "student.json").read_text()
    )

    # 1. Killed inside iteration 1's training: ultralytics writes train/args.yaml when its
    # trainer starts, train/results.csv after the (only) epoch and its validation, then
    # train/weights/last.pt; the kill comes a random share of the reference's
    # args.yaml -> last.pt time after args.yaml appears.
    corpus = copies["in_training"]
    model_dir = corpus / "models" / "iteration=1"
    train = copies["reference"] / "models" / "iteration=1" / "train"
    window = (train / "weights" / "last.pt").stat().st_mtime
    window -= (train / "args.yaml").stat().st_mtime
    delay = rng.uniform(0.0, 0.8) * window
    killed_refine(corpus, ray_address, lambda: (model_dir / "train" / "args.yaml").exists(), delay)
    assert not (model_dir / "student.pt").exists(), "the kill came after the training"
    phase = "while saving" if (model_dir / "train" / "results.csv").exists() else "in the epoch"
    assert not (corpus / "iteration=1" / "_COMMITTED").exists()
    check_corpus_integrity(corpus, allow_temporaries=True)
    refine(corpus, ray_address)
    check_corpus_integrity(corpus)
    rows = all_rows(corpus)
    assert rows == reference, "refine killed in training: rows differ from the reference"
    compared = count_rows(rows)

    # 2. Killed during iteration 2's annotation (as soon as 1..4 of its 8 shards are written).
    corpus = copies["in_iteration_2"]
    after = rng.randint(1, 4)
    killed_refine(corpus, ray_address, lambda: marker_count(corpus, 2) >= after, 0.0)
    markers = marker_count(corpus, 2)
    assert (corpus / "iteration=1" / "_COMMITTED").exists()
    assert markers < 8, f"the kill came after iteration 2's annotation ({markers} markers)"
    assert not (corpus / "iteration=2" / "_COMMITTED").exists()
    check_corpus_integrity(corpus, allow_temporaries=True)
    refine(corpus, ray_address)
    check_corpus_integrity(corpus)
    rows = all_rows(corpus)
    assert rows == reference, "refine killed in iteration 2: rows differ from the reference"
    compared += count_rows(rows)
    report(
        capsys,
        f"\n[kill-refine] reference refine (2 iterations) {reference_seconds:.0f} s, student "
        f"trained {student['train_seconds']} s; killed {delay:.1f} s into iteration 1's training "
        f"({phase}), and after {markers} of iteration 2's 8 markers; both reruns equal the "
        f"reference in every iteration: {compared} rows compared",
    )
