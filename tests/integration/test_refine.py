"""The refinement loop end to end on the session's Ray cluster: two iterations from
``fld refine`` on demo photos, a student trained for one epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.query import connect
from tests.fixtures.common import DEMO_IMAGES, run_fld

PHOTOS = ("bus.jpg", "zidane.jpg", "coffee.jpg")
STUDENT = [
    "--epochs",
    "1",
    "--set",
    "refine.student.kind=yolo",  # this file tests the YOLO student (--epochs is its epochs)
    "--set",
    "refine.student.model=fld-mobilenetv2-yolo.yaml",
    "--set",
    "refine.student.min_score=0.0005",
    "--set",
    "refine.student.image_size=128",
    # Keep the 1-epoch students' boxes (their scores are low) so that fusion meets them:
    # the test is of the fusion path, not of the students' quality.
    "--set",
    "filters.confidence.per_source={student_i1: 0.0, student_i2: 0.0}",
    "--set",
    "filters.fusion.iou_threshold=0.3",
    "--set",
    "filters.fusion.min_score=0.0",
]


def specialist_rows(corpus: Path, iteration: int) -> list[tuple]:
    return (
        connect(corpus)
        .execute(
            "SELECT image_id, kind, label, round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2), "
            "round(score, 4), source FROM regions WHERE iteration = ? AND source IN ('ssd_coco@2', 'rapidocr@1') "
            "ORDER BY ALL",
            [iteration],
        )
        .fetchall()
    )


@pytest.fixture(scope="module")
def refined(ray_address, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("refine") / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(DEMO_IMAGES / name, folder / name)
    corpus = folder.parent / "corpus"
    run_fld(
        "run",
        str(folder),
        "--out",
        str(corpus),
        "--address",
        ray_address,
        "--shard-size",
        "2",
        "--quiet",
    )
    result = run_fld(
        "refine",
        str(corpus),
        "--iterations",
        "2",
        "--address",
        ray_address,
        "--quiet",
        *STUDENT,
        timeout=900,
    )
    assert "committed iteration 1" in result.stdout and "committed iteration 2" in result.stdout
    return corpus


def test_two_iterations_are_committed_with_their_students(refined):
    for iteration in (1, 2):
        folder = refined / f"iteration={iteration}"
        assert (folder / "_COMMITTED").exists()
        info = json.loads((folder / "run.json").read_text())
        assert info["iteration"] == iteration
        assert info["student"]["trained_on_iteration"] == iteration - 1
        assert f"student_i{iteration}@1" in info["annotators"] and "replay@1" in info["annotators"]
        assert (refined / "models" / f"iteration={iteration}" / "student.pt").exists()


def test_specialist_rows_are_replayed_not_rerun(refined):
    base = specialist_rows(refined, 0)
    assert base and specialist_rows(refined, 1) == base and specialist_rows(refined, 2) == base
    # Equal rows alone would not tell: the specialists are deterministic, so running them
    # again gives the same rows. What ran is in run.json: the replay, not the specialists.
    for iteration in (1, 2):
        annotators = json.loads((refined / f"iteration={iteration}" / "run.json").read_text())[
            "annotators"
        ]
        assert "replay@1" in annotators, annotators
        assert not {"ssd_coco@2", "rapidocr@1"} & set(annotators), annotators


def test_student_rows_join_the_corpus(refined):
    connection = connect(refined)
    sources = dict(
        connection.execute(
            "SELECT source, count(*) FROM regions WHERE iteration = 1 GROUP BY source"
        ).fetchall()
    )
    assert sources.get("student_i1@1", 0) > 0
    assert "student_i1@1" not in {
        s
        for (s,) in connection.execute(
            "SELECT DISTINCT source FROM regions WHERE iteration = 2"
        ).fetchall()
    }


def test_student_boxes_are_fused_with_the_specialists(refined):
    """A kept fused box that both the student and SSD saw, made from rows of both that
    stay in the table as ``fused_into``."""
    connection = connect(refined)
    both = connection.execute(
        "SELECT count(*) FROM regions WHERE iteration = 1 AND source = 'fused' AND kept "
        "AND n_sources = 2 AND list_sort(sources) = ['ssd_coco@2', 'student_i1@1']"
    ).fetchone()[0]
    assert both >= 1
    absorbed = dict(
        connection.execute(
            "SELECT source, count(*) FROM regions WHERE iteration = 1 "
            "AND drop_reason = 'fused_into' GROUP BY source"
        ).fetchall()
    )
    assert absorbed.get("ssd_coco@2", 0) >= 1 and absorbed.get("student_i1@1", 0) >= 1


def test_stats_and_diff_show_iterations_side_by_side(refined):
    stats = run_fld("stats", str(refined)).stdout
    assert "committed iterations [0, 1, 2]" in stats
    diff = run_fld("diff", str(refined), "0", "1").stdout
    assert "kept regions, iteration 0 -> 1" in diff and "total:" in diff


def test_refine_again_does_nothing(refined, ray_address):
    result = run_fld(
        "refine", str(refined), "--iterations", "2", "--address", ray_address, "--quiet", *STUDENT
    )
    assert "nothing to do" in result.stdout
