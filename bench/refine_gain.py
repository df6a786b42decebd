"""Does the refinement loop improve the labels? ``make bench`` (or
``.venv/bin/python bench/refine_gain.py [--scenes N] [--epochs E] [--quick]``).

On ``N`` generated scenes with COCO ground truth (``engine.scenes``: real photos of
objects pasted at known boxes and scales on varied backgrounds, plus rendered text):

1. **specialists only**: SSD + RapidOCR, every filter off (corpus A, iteration 0);
2. **specialists + filters**: A's raw rows replayed (``annotators.replay``, no model is
   run twice) through the default filters (corpus B, iteration 0);
3. **iteration 1** and **iteration 2** of ``fld refine`` on B: a YOLO student trained on
   the previous iteration's kept object regions, fused with the specialists, filtered.

Each is measured with ``pipelines.evaluate`` (COCO mAP50 and mAP50-95 via pycocotools,
precision and recall at IoU 0.5 over kept object regions). Captions, phrases and masks
are switched off: they do not change the object regions measured here. Prints the
table and writes ``bench/results/refine_gain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results_store import new_run_id, save_result  # noqa: E402

REGION_ONLY = [
    "annotators=[{name: ssd_coco}, {name: rapidocr}]",
    "filters.text_complexity.enabled=false",
    "filters.phrase_confidence.enabled=false",
]
NO_FILTERS = [f"filters.{key}.enabled=false" for key in ("geometry", "confidence", "nms", "fusion")]


def measure(corpus: Path, gt: Path) -> dict[int, dict]:
    from pipelines.evaluate import evaluate_corpus

    return evaluate_corpus(corpus, gt)


def run(
    scenes: int = 200,
    epochs: int = 10,
    quick: bool = False,
    workers: int = 2,
    keep: Path | None = None,
    measure_only: bool = False,
) -> dict:
    """The whole benchmark; with ``measure_only``, only the measurements, of the corpora a
    run left in ``keep`` (no scene, annotation or training is redone; the timings are that
    run's, carried over from its result file)."""
    from engine.scenes import generate_scenes
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config
    from pipelines.refine import refine_corpus

    if quick:
        scenes, epochs = 24, 2
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="refine-gain-"))
    if measure_only:
        return measure_run(work, load_config)
    gt = generate_scenes(work / "scenes", scenes, seed=0)
    images = work / "scenes" / "images"
    common = [f"run.workers={workers}", "run.shard_size=16", *REGION_ONLY]
    timings = {}

    started = time.perf_counter()
    specialists = work / "A"
    annotate_corpus(load_config(None, common + NO_FILTERS), str(images), str(specialists))
    timings["specialists"] = time.perf_counter() - started

    started = time.perf_counter()
    filtered = work / "B"
    replay = (
        f"annotators=[{{name: replay, corpus: '{specialists}', iteration: 0, "
        "sources: [ssd_coco@2, rapidocr@1]}]"
    )
    config = load_config(None, common + [replay])
    annotate_corpus(config, str(images), str(filtered))
    timings["filters"] = time.perf_counter() - started

    started = time.perf_counter()
    refine_config = load_config(
        None,
        common
        + [
            "annotators=[{name: ssd_coco}, {name: rapidocr}]",
            "refine.student.kind=yolo",  # the YOLO student's bench; the SSD's: ssd_student_gain.py
            f"refine.student.epochs={epochs}",
            "refine.student.image_size=320",
        ],
    )
    refine_corpus(filtered, 2, refine_config)
    timings["refine_2_iterations"] = time.perf_counter() - started

    a = measure(specialists, gt)[0]
    b = measure(filtered, gt)
    rows = [
        ("specialists only", a),
        ("specialists + filters", b[0]),
        ("iteration 1", b[1]),
        ("iteration 2", b[2]),
    ]
    table = table_of(rows)
    result = {
        "scenes": scenes,
        "student_epochs": epochs,
        "student_model": refine_config.refine.student.model,
        "table": table,
        "students": students(filtered, gt),
        "fusion": fusion_outcome(filtered),
        "timings_seconds": {key: round(value, 1) for key, value in timings.items()},
        "work_dir": str(work),
    }
    save_result("refine_gain", result, new_run_id())
    print_table(result)
    return result


def measure_run(work: Path, load_config) -> dict:
    """Measure the corpora an earlier run left in ``work``."""
    earlier = json.loads((ROOT / "bench" / "results" / "refine_gain.json").read_text())
    if earlier.get("work_dir") != str(work):
        raise SystemExit(f"bench/results/refine_gain.json is not the run kept in {work}")
    gt = work / "scenes" / "annotations.json"
    specialists, filtered = work / "A", work / "B"
    a, b = measure(specialists, gt)[0], measure(filtered, gt)
    table = table_of([("specialists only", a), ("specialists + filters", b[0]), ("iteration 1", b[1]), ("iteration 2", b[2])])  # fmt: skip
    result = {
        **{
            key: earlier[key] for key in ("scenes", "student_epochs", "timings_seconds", "work_dir")
        },
        "student_model": load_config(None, []).refine.student.model,
        "table": table,
        "students": students(filtered, gt),
        "fusion": fusion_outcome(filtered),
        "measured_again_from_run": earlier.get("measured_again_from_run") or earlier.get("run_id"),
    }
    save_result("refine_gain", result, new_run_id())
    print_table(result)
    return result


def table_of(rows: list[tuple[str, dict]]) -> list[dict]:
    table = []
    for name, result in rows:
        objects = result["objects"]
        table.append(
            {
                "stage": name,
                "map50": objects.get("map50"),
                "map50_95": objects.get("map50_95"),
                "precision": objects.get("precision"),
                "recall": objects.get("recall"),
                "detections": objects.get("detections"),
            }
        )
    return table


def students(corpus: Path, gt: Path) -> dict:
    """Each iteration's student: its training summary (validation mAP50 on the held-out
    pseudo-labels, boxes and images it learned from, seconds) and its own boxes measured
    against the ground truth, every one it emitted (kept or not by the filters)."""
    found = {}
    for path in sorted((corpus / "models").glob("iteration=*/student.json")):
        summary = json.loads(path.read_text())
        iteration = int(path.parent.name.split("=")[1])
        found[path.parent.name] = {
            key: summary.get(key)
            for key in ("val_map50_pseudo", "data", "train_seconds", "model", "epochs")
        }
        found[path.parent.name]["on_ground_truth"] = source_against_ground_truth(
            corpus, gt, iteration, f"student_i{iteration}@1"
        )
    return found


def source_against_ground_truth(corpus: Path, gt_path: Path, iteration: int, source: str) -> dict:
    """mAP50, mAP50-95, P and R at 0.5 of every object box one source emitted in an
    iteration (``pipelines.evaluate``'s own matching and pycocotools)."""
    import pyarrow as pa

    from engine.query import connect
    from pipelines.evaluate import evaluate_objects, load_ground_truth, match_images

    gt = load_ground_truth(gt_path)
    connection = connect(corpus, [iteration])
    try:
        matched, _ = match_images(connection, gt)
        connection.register(
            "_matched", pa.table({"image_id": pa.array(sorted(matched), pa.string())})
        )
        rows = connection.execute(
            "SELECT image_id, label, score, x0, y0, x1, y1 FROM regions JOIN _matched "
            "USING (image_id) WHERE kind = 'object' AND source = ? ORDER BY image_id, region_id",
            [source],
        ).fetchall()
    finally:
        connection.close()
    objects = evaluate_objects(gt, matched, rows)
    keys = ("map50", "map50_95", "precision", "recall", "detections")
    measured = {key: objects.get(key) for key in keys}
    measured["max_score"] = max((row[2] for row in rows), default=None)
    return measured


def fusion_outcome(corpus: Path) -> list[dict]:
    """What fusion kept and dropped per iteration: object rows by source, kept, reason and
    number of agreeing sources."""
    from engine.query import connect

    rows = (
        connect(corpus)
        .execute(
            "SELECT iteration, source, kept, coalesce(drop_reason, '') AS reason, n_sources, "
            "count(*) AS n FROM regions WHERE kind = 'object' AND iteration > 0 "
            "GROUP BY ALL ORDER BY ALL"
        )
        .fetchall()
    )
    keys = ("iteration", "source", "kept", "drop_reason", "n_sources", "rows")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def print_table(result: dict) -> None:
    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(
        f"\nrefine gain on {result['scenes']} generated scenes (student: {result['student_epochs']} epochs)"
    )
    print(f"{'stage':<24}{'mAP50':>8}{'mAP50-95':>10}{'P@.5':>8}{'R@.5':>8}{'kept boxes':>12}")
    for row in result["table"]:
        print(
            f"{row['stage']:<24}{number(row['map50']):>8}{number(row['map50_95']):>10}"
            f"{number(row['precision']):>8}{number(row['recall']):>8}{row['detections'] or 0:>12}"
        )
    for name, student in result.get("students", {}).items():
        print(
            f"student of {name}: validation mAP50 on its pseudo-labels "
            f"{number(student.get('val_map50_pseudo'))}, {student['data']['boxes']} boxes, "
            f"{student['train_seconds']} s"
        )


if __name__ == "__main__":
    from engine.offline import apply_offline_env

    apply_offline_env()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument(
        "--measure-only", action="store_true", help="measure the corpora a run left in --keep"
    )
    args = parser.parse_args()
    if args.measure_only and not args.keep:
        parser.error("--measure-only needs --keep WORK (the folder of the run to measure)")
    run(args.scenes, args.epochs, args.quick, args.workers, args.keep, args.measure_only)
