"""The ``coco`` export of a real run, read back by pycocotools: ``COCO`` loads it and
``COCOeval`` of its annotations against themselves gives mAP 1.0 (boxes and polygons).
A hand-written synthetic corpus is in ``tests/unit/test_export_coco.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycocotools.coco import COCO

from engine.query import connect
from tests.fixtures.common import run_fld
from tests.fixtures.export_helpers import demo_corpus, quiet, self_evaluation


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "export"
    result = run_fld("export", str(demo), "--format", "coco", "--out", str(out))
    assert "exported iteration 0" in result.stdout
    return out


def test_pycocotools_loads_it_and_self_evaluation_is_perfect(demo, exported):
    coco = quiet(COCO, str(exported / "instances.json"))
    connection = connect(demo)
    kept = dict(
        connection.execute(
            "SELECT kind, count(*) FROM regions WHERE kept AND kind IN ('object', 'ocr') GROUP BY 1"
        ).fetchall()
    )
    labels = [
        row[0]
        for row in connection.execute(
            "SELECT DISTINCT label FROM regions WHERE kept AND kind = 'object' ORDER BY 1"
        ).fetchall()
    ]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [*labels, "text"]
    assert len(coco.getImgIds()) == 3
    assert len(coco.getAnnIds()) == kept["object"] + kept["ocr"]
    bus = next(i for i in coco.dataset["images"] if i["file_name"].endswith("/bus.jpg"))
    assert (bus["width"], bus["height"]) == (810, 1080)

    text_id = coco.getCatIds(catNms=["text"])[0]
    ocr = coco.loadAnns(coco.getAnnIds(catIds=[text_id]))
    corpus_lines = sorted(
        row[0]
        for row in connection.execute(
            "SELECT label FROM regions WHERE kept AND kind = 'ocr'"
        ).fetchall()
    )
    assert sorted(a["text"] for a in ocr) == corpus_lines
    assert all(len(a["segmentation"][0]) == 8 for a in ocr)  # the OCR quads
    for annotation in coco.dataset["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert w > 0 and h > 0 and annotation["area"] > 0 and annotation["iscrowd"] == 0
        assert 0 <= annotation["score"] <= 1

    assert self_evaluation(coco, "bbox")[0] == pytest.approx(1.0)
    assert self_evaluation(coco, "segm")[0] == pytest.approx(1.0)

    captions = quiet(COCO, str(exported / "captions.json"))
    texts = connection.execute("SELECT count(*) FROM texts WHERE kept").fetchall()[0][0]
    assert len(captions.getAnnIds()) == texts
    assert {a["granularity"] for a in captions.dataset["annotations"]} == {
        "brief",
        "detailed",
        "more_detailed",
    }
