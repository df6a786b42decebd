"""``fld eval``: mAP, precision/recall and OCR accuracy against COCO ground truth, on
hand-made corpora with known answers and on a real run over generated scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_fld

from engine.corpus import Corpus, IterationWriter
from engine.schemas import TABLES, table_from_rows
from pipelines.evaluate import (
    EvalError,
    evaluate_corpus,
    format_results,
    levenshtein,
    ocr_match,
)

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 17, "name": "cat"},
    {"id": 18, "name": "dog"},
    {"id": 10, "name": "traffic light"},
    {"id": 91, "name": "text"},
]


def gt_file(path: Path, images: list[tuple[str, int, int]], annotations: list[dict]) -> Path:
    """A COCO file; annotations give ``file`` and ``box`` (x0, y0, x1, y1) and either
    ``label`` or ``text``."""
    ids = {name: i + 1 for i, (name, _, _) in enumerate(images)}
    by_name = {c["name"]: c["id"] for c in CATEGORIES}
    coco = {
        "images": [
            {"id": ids[name], "file_name": f"sub/{name}", "width": w, "height": h}
            for name, w, h in images
        ],
        "categories": CATEGORIES,
        "annotations": [],
    }
    for a in annotations:
        x0, y0, x1, y1 = a["box"]
        entry = {
            "id": len(coco["annotations"]) + 1,
            "image_id": ids[a["file"]],
            "category_id": by_name[a.get("label", "text")],
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0),
            "iscrowd": a.get("iscrowd", 0),
        }
        if "text" in a:
            entry["text"] = a["text"]
        coco["annotations"].append(entry)
    path.write_text(json.dumps(coco))
    return path


def write_iteration(
    root: Path,
    iteration: int,
    images: list[tuple[str, int, int]],
    regions: list[dict],
    commit: bool = True,
) -> None:
    """One shard with an ``images`` row per file and the given regions (``file``,
    ``box``, ``label``, optional ``kind``, ``score``, ``kept``)."""
    image_rows = [
        {
            "image_id": f"img{name}",
            "iteration": iteration,
            "uri": f"/data/photos/{name}",
            "width": w,
            "height": h,
            "format": "JPEG",
            "bytes": 1000,
        }
        for name, w, h in images
    ]
    region_rows = []
    for index, r in enumerate(regions):
        x0, y0, x1, y1 = r["box"]
        kept = r.get("kept", True)
        region_rows.append(
            {
                "region_id": f"r{index:04d}",
                "image_id": f"img{r['file']}",
                "iteration": iteration,
                "kind": r.get("kind", "object"),
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "quad": None,
                "polygon": [],
                "label": r["label"],
                "score": r.get("score", 0.9),
                "source": "test@1",
                "sources": ["test@1"],
                "n_sources": 1,
                "kept": kept,
                "drop_reason": None if kept else "low_score",
            }
        )
    tables = {name: table_from_rows(name, []) for name in TABLES}
    tables["images"] = table_from_rows("images", image_rows)
    tables["regions"] = table_from_rows("regions", region_rows)
    writer = IterationWriter(Corpus(root), iteration)
    writer.prepare({"fingerprint": "f", "config_hash": "c"})
    writer.write_shard("00000", tables, {"shard": 0})
    if commit:
        writer.commit({"iteration": iteration, "note": "kept as it was"})


IMAGES = [("a.jpg", 200, 100), ("b.jpg", 300, 200)]
GT_ANNOTATIONS = [
    {"file": "a.jpg", "label": "person", "box": (10, 10, 60, 90)},
    {"file": "a.jpg", "label": "cat", "box": (100, 20, 180, 80)},
    {"file": "b.jpg", "label": "person", "box": (0, 0, 100, 200)},
    {"file": "b.jpg", "label": "traffic light", "box": (200, 10, 220, 60)},
    {"file": "a.jpg", "text": "OPEN  DAILY", "box": (20, 92, 120, 99)},
    {"file": "b.jpg", "text": "Exit", "box": (150, 150, 190, 170)},
]


def test_kept_regions_equal_to_the_ground_truth_score_perfectly(tmp_path):
    gt = gt_file(tmp_path / "gt.json", IMAGES, GT_ANNOTATIONS)
    regions = [
        {"file": a["file"], "box": a["box"], "label": a["label"].replace(" ", "_").title()}
        for a in GT_ANNOTATIONS
        if "label" in a
    ] + [
        {"file": a["file"], "box": a["box"], "label": a["text"], "kind": "ocr"}
        for a in GT_ANNOTATIONS
        if "text" in a
    ]
    regions += [  # dropped rows, dense captions and unmatched images do not count
        {"file": "a.jpg", "box": (0, 0, 5, 5), "label": "dog", "kept": False},
        {"file": "a.jpg", "box": (10, 10, 60, 90), "label": "tall person", "kind": "dense"},
        {"file": "c.jpg", "box": (0, 0, 50, 50), "label": "dog"},
    ]
    root = tmp_path / "corpus"
    write_iteration(root, 0, [*IMAGES, ("c.jpg", 64, 64)], regions)

    results = evaluate_corpus(root, gt)
    result = results[0]
    assert result["images"]["matched"] == 2 and result["images"]["not_in_gt"] == 1
    objects = result["objects"]
    assert objects["map50"] == 1.0 and objects["map50_95"] == 1.0
    assert objects["precision"] == 1.0 and objects["recall"] == 1.0
    assert (objects["tp"], objects["fp"], objects["fn"]) == (4, 0, 0)
    assert objects["per_category"]["traffic light"]["ap50"] == 1.0
    ocr = result["ocr"]
    assert ocr["exact_match"] == 1.0 and ocr["cer"] == 0.0 and ocr["recall"] == 1.0

    info = json.loads((root / "iteration=0" / "run.json").read_text())
    assert info["note"] == "kept as it was" and info["iteration"] == 0
    assert info["eval"]["objects"]["map50"] == 1.0
    assert info["eval"]["gt"] == str(gt.resolve())
    assert "1.000" in format_results(results)


def test_shifted_missing_and_extra_boxes_give_the_hand_computed_numbers(tmp_path):
    gt = gt_file(
        tmp_path / "gt.json",
        [("a.jpg", 400, 400)],
        [
            {"file": "a.jpg", "label": "person", "box": (0, 0, 100, 100)},
            {"file": "a.jpg", "label": "cat", "box": (200, 200, 300, 300)},
            {"file": "a.jpg", "text": "OPEN DAILY", "box": (10, 300, 110, 320)},
            {"file": "a.jpg", "text": "Exit", "box": (200, 330, 240, 350)},
            {"file": "a.jpg", "text": "Cafe", "box": (300, 360, 340, 380)},
        ],
    )
    regions = [
        {"file": "a.jpg", "box": (0, 0, 100, 100), "label": "person", "score": 0.9},
        # shifted by 60 px: IoU = 40*100 / (2*100*100 - 40*100) = 0.25 -> a false positive
        {"file": "a.jpg", "box": (260, 200, 360, 300), "label": "cat", "score": 0.8},
        # a label the GT has no instance of, and one it has no category for
        {"file": "a.jpg", "box": (0, 200, 50, 250), "label": "dog", "score": 0.7},
        {"file": "a.jpg", "box": (100, 0, 150, 50), "label": "unicorn", "score": 0.6},
        # OCR: same box, extra whitespace -> exact; "exit" -> one edit; Cafe missed;
        # one region on no GT line
        {"file": "a.jpg", "box": (10, 300, 110, 320), "label": "OPEN   DAILY", "kind": "ocr"},
        {"file": "a.jpg", "box": (195, 325, 245, 355), "label": "exit", "kind": "ocr"},
        {"file": "a.jpg", "box": (0, 380, 30, 400), "label": "EMT", "kind": "ocr"},
    ]
    root = tmp_path / "corpus"
    write_iteration(root, 0, [("a.jpg", 400, 400)], regions)

    objects = evaluate_corpus(root, gt)[0]["objects"]
    assert (objects["tp"], objects["fp"], objects["fn"]) == (1, 3, 1)
    assert objects["precision"] == 0.25 and objects["recall"] == 0.5
    # mAP over the categories with GT instances: person 1.0, cat 0.0 (dog has none).
    assert objects["map50"] == pytest.approx(0.5) and objects["map50_95"] == pytest.approx(0.5)
    assert objects["labels_not_in_gt"] == {"unicorn": 1}
    assert objects["per_category"]["dog"]["fp"] == 1
    assert objects["per_category"]["cat"]["recall"] == 0.0

    ocr = evaluate_corpus(root, gt)[0]["ocr"]
    assert (ocr["gt_lines"], ocr["regions"], ocr["matched"]) == (3, 3, 2)
    assert ocr["exact_match"] == pytest.approx(1 / 3, abs=1e-6)
    assert ocr["cer"] == pytest.approx((0 + 1 + 4) / (10 + 4 + 4), abs=1e-6)
    assert ocr["cer_matched"] == pytest.approx(1 / 14, abs=1e-6)
    assert ocr["precision"] == pytest.approx(2 / 3, abs=1e-6)


def test_crowd_boxes_are_neither_hits_nor_misses(tmp_path):
    gt = gt_file(
        tmp_path / "gt.json",
        [("a.jpg", 400, 400)],
        [
            {"file": "a.jpg", "label": "person", "box": (0, 0, 100, 100)},
            {"file": "a.jpg", "label": "person", "box": (200, 0, 400, 200), "iscrowd": 1},
        ],
    )
    root = tmp_path / "corpus"
    regions = [
        {"file": "a.jpg", "box": (0, 0, 100, 100), "label": "person"},
        {"file": "a.jpg", "box": (250, 50, 300, 120), "label": "person", "score": 0.5},
    ]
    write_iteration(root, 0, [("a.jpg", 400, 400)], regions)
    objects = evaluate_corpus(root, gt)[0]["objects"]
    assert (objects["tp"], objects["fp"], objects["fn"]) == (1, 0, 0)
    assert objects["map50"] == 1.0


def test_levenshtein_and_the_ocr_margin_rule():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("Exit", "Exit") == 0
    assert levenshtein("exit", "Exit") == 1
    truth = (10, 10, 50, 20)  # a short word's tight box
    assert ocr_match((2, 2, 58, 28), truth) is not None  # IoU 0.27, holds it with a margin
    assert ocr_match((0, 0, 200, 100), truth) is None  # holds it, but mostly other things
    assert ocr_match((30, 10, 70, 20), truth) is None  # half of it


def test_iterations_side_by_side_and_one_at_a_time(tmp_path):
    gt = gt_file(tmp_path / "gt.json", IMAGES, GT_ANNOTATIONS)
    root = tmp_path / "corpus"
    some = [{"file": "a.jpg", "box": (10, 10, 60, 90), "label": "person"}]
    write_iteration(root, 0, IMAGES, some)
    write_iteration(
        root, 1, IMAGES, some + [{"file": "b.jpg", "box": (0, 0, 100, 200), "label": "person"}]
    )
    write_iteration(root, 2, IMAGES, some, commit=False)
    results = evaluate_corpus(root, gt, write=False)
    assert sorted(results) == [0, 1]
    assert results[0]["objects"]["recall"] == 0.25 and results[1]["objects"]["recall"] == 0.5
    assert "eval" not in json.loads((root / "iteration=0" / "run.json").read_text())

    evaluate_corpus(root, gt, iteration=1)
    assert "eval" not in json.loads((root / "iteration=0" / "run.json").read_text())
    assert (
        json.loads((root / "iteration=1" / "run.json").read_text())["eval"]["objects"]["recall"]
        == 0.5
    )
    with pytest.raises(EvalError, match="not committed"):
        evaluate_corpus(root, gt, iteration=2)


def test_cli_reports_bad_arguments_with_status_2(tmp_path):
    gt = gt_file(tmp_path / "gt.json", IMAGES, GT_ANNOTATIONS)
    root = tmp_path / "corpus"
    write_iteration(root, 0, IMAGES, [])
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "twice.json").write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "x/a.jpg", "width": 1, "height": 1},
                    {"id": 2, "file_name": "y/a.jpg", "width": 1, "height": 1},
                ],
                "annotations": [],
                "categories": [],
            }
        )
    )
    for args, message in (
        (["--gt", str(tmp_path / "missing.json")], "missing.json"),
        (["--gt", str(tmp_path / "bad.json")], "not JSON"),
        (["--gt", str(tmp_path / "twice.json")], "twice"),
        (["--gt", str(gt), "--iteration", "3"], "not committed"),
    ):
        result = run_fld("eval", str(root), *args, check=False)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_fld_eval_on_generated_scenes_annotated_by_the_real_specialists(tmp_path):
    from engine.scenes import generate_scenes
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config

    gt = generate_scenes(tmp_path / "scenes", 6, seed=11)
    config = load_config(
        None,
        [
            "run.executor=local",
            "annotators=[{name: ssd_coco}, {name: rapidocr}]",
            "filters.text_complexity.enabled=false",
        ],
    )
    corpus = tmp_path / "corpus"
    annotate_corpus(config, str(tmp_path / "scenes" / "images"), str(corpus), show_progress=False)

    result = run_fld("eval", str(corpus), "--gt", str(gt))
    assert "mAP50" in result.stdout and "6/6" in result.stdout, result.stdout
    info = json.loads((corpus / "iteration=0" / "run.json").read_text())
    assert "config" in info and "counts" in info  # the other keys are kept
    evaluation = info["eval"]
    assert evaluation["images"]["matched"] == 6
    objects, ocr = evaluation["objects"], evaluation["ocr"]
    assert objects["gt_objects"] > 0 and objects["detections"] > 0
    for value in (
        objects["map50"], objects["map50_95"], objects["precision"], objects["recall"],
        ocr["exact_match"], ocr["cer"],
    ):  # fmt: skip
        assert value is None or 0.0 <= value <= 1.0
    assert objects["map50"] >= objects["map50_95"]
    assert objects["tp"] > 0  # the specialists find some of the pasted objects
