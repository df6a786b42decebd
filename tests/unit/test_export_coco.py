"""The ``coco`` export of a hand-written synthetic corpus (polygons, dropped rows, URIs of
files, tar members and Parquet rows), read back by pycocotools. The export of a real run
is in ``tests/integration/test_export_coco.py``."""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from pipelines.exports import export_corpus
from tests.fixtures.export_helpers import quiet, self_evaluation, write_synthetic_corpus


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
