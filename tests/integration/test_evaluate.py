"""``fld eval`` from the command line: bad arguments exit with status 2, and a real run
of the specialists over generated scenes is evaluated. The metrics on hand-made corpora
are in ``tests/unit/test_evaluate.py``."""

from __future__ import annotations

import json

from tests.fixtures.common import run_fld
from tests.fixtures.evaluation import GT_ANNOTATIONS, IMAGES, gt_file, write_iteration


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
        (["--gt", str(gt), "--iteration", "3"], "not a committed iteration"),
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
