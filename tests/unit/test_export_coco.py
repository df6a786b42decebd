"""The ``coco`` export, read back by pycocotools: ``COCO`` loads it and ``COCOeval`` of
its annotations against themselves gives mAP 1.0 (boxes and polygons)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from conftest import run_fld
from export_helpers import demo_corpus, write_synthetic_corpus
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine.query import connect
from pipelines.exports import export_corpus


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "export"
    result = run_fld("export", str(demo), "--format", "coco", "--out", str(out))
    assert "exported iteration 0" in result.stdout
    return out


def quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def self_evaluation(coco: COCO, iou_type: str) -> float:
    results = [
        {key: a[key] for key in ("image_id", "category_id", "bbox", "segmentation", "score")}
        for a in coco.dataset["annotations"]
    ]
    if iou_type == "bbox":
        for result in results:
            del result["segmentation"]
    detections = quiet(coco.loadRes, results)
    evaluation = COCOeval(coco, detections, iou_type)
    quiet(evaluation.evaluate)
    quiet(evaluation.accumulate)
    quiet(evaluation.summarize)
    return evaluation.stats


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


def test_polygons_dropped_rows_and_uris_of_a_synthetic_corpus(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    export_corpus(corpus, "coco", tmp_path / "kept")
    coco = quiet(COCO, str(tmp_path / "kept" / "instances.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == ["cat", "dog", "text"]
    names = [i["file_name"] for i in coco.dataset["images"]]
    assert names[0].endswith("signs.tar::000001.png") and names[2].endswith("::row=0")
    dog = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["dog"])))
    assert len(dog) == 3 and all(len(a["segmentation"][0]) == 8 for a in dog)
    image = coco.loadImgs(dog[0]["image_id"])[0]
    mask = coco.annToMask(dog[0])
    assert mask.shape == (image["height"], image["width"])
    assert abs(int(mask.sum()) - dog[0]["area"]) / dog[0]["area"] < 0.05  # the polygon's area
    assert self_evaluation(coco, "segm")[0] == pytest.approx(1.0)

    summary = export_corpus(corpus, "coco", tmp_path / "all", include_dropped=True)
    everything = json.loads((tmp_path / "all" / "instances.json").read_text())
    assert [c["name"] for c in everything["categories"]] == ["cat", "dog", "tv", "text"]
    dropped = [a for a in everything["annotations"] if not a["kept"]]
    assert len(dropped) == 3 and {a["drop_reason"] for a in dropped} == {"low_score"}
    assert summary["counts"]["annotations"] == len(coco.getAnnIds()) + 3
