"""``fld eval``: mAP, precision/recall and OCR accuracy against COCO ground truth, on
hand-made corpora with known answers. The command line and a real run over generated
scenes are in ``tests/integration/test_evaluate.py``."""

from __future__ import annotations

import json

import pytest

from pipelines.evaluate import (
    EvalError,
    evaluate_corpus,
    format_results,
    levenshtein,
    ocr_match,
)
from tests.fixtures.evaluation import GT_ANNOTATIONS, IMAGES, gt_file, write_iteration


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
    with pytest.raises(EvalError, match="not a committed iteration"):
        evaluate_corpus(root, gt, iteration=2)
