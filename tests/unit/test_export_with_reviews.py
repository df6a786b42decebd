"""A student's training export with people's labels (``export_corpus(human=...)``): on a
reviewed image people's boxes replace the models' object and OCR regions, a hold-out image
is left out, and a label only people gave becomes a class. The YOLO and Florence-2
students train on these exports (``pipelines.refine.human_labels_of``)."""

from __future__ import annotations

import json

import yaml

from engine.reviews import HumanLabels
from pipelines.exports import export_corpus
from tests.fixtures.export_helpers import write_synthetic_corpus

BUS, SIGN, ZIDANE = "b" * 32, "a" * 32, "c" * 32


def reviewed_bus_and_held_out_zidane() -> HumanLabels:
    labels = HumanLabels()
    labels.boxes[BUS] = [("object", "giraffe", (10.0, 20.0, 110.0, 220.0))]
    labels.boxes[ZIDANE] = [("object", "person", (1.0, 2.0, 3.0, 4.0))]
    labels.holdout.add(ZIDANE)
    return labels


def label_lines(out, stem_prefix: str) -> list[str]:
    [path] = [p for p in (out / "labels").iterdir() if p.name.startswith(stem_prefix)]
    return path.read_text().splitlines()


def test_yolo_export_takes_peoples_boxes_and_leaves_the_holdout_out(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    plain = export_corpus(corpus, "yolo", tmp_path / "plain", include_ocr=False)
    summary = export_corpus(
        corpus, "yolo", tmp_path / "reviewed", include_ocr=False,
        human=reviewed_bus_and_held_out_zidane(),
    )  # fmt: skip
    out = tmp_path / "reviewed"
    assert plain["counts"]["images"] == 3 and summary["counts"]["images"] == 2
    assert summary["reviewed_images"] == 1 and summary["holdout_skipped"] == 1
    assert not [p for p in (out / "labels").iterdir() if p.name.startswith("photos")]
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    giraffe = {name: index for index, name in names.items()}["giraffe"]
    [line] = label_lines(out, "bus")  # the models' boxes on the bus are gone
    klass, cx, cy, w, h = line.split()
    width, height = 810, 1080  # bus.jpg
    assert int(klass) == giraffe
    assert abs(float(cx) - 60 / width) < 1e-5 and abs(float(h) - 200 / height) < 1e-5
    assert label_lines(tmp_path / "plain", "bus") != [line]


def test_florence2_export_takes_peoples_boxes(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    export_corpus(corpus, "florence2", tmp_path / "f2", human=reviewed_bus_and_held_out_zidane())
    lines = [json.loads(x) for x in (tmp_path / "f2" / "florence2.jsonl").read_text().splitlines()]
    assert all(ZIDANE not in json.dumps(x) for x in lines)
    detection = [x for x in lines if x["task"] == "<OD>" and BUS in json.dumps(x)]
    assert detection and all("giraffe" in x["target"] for x in detection)
    assert all("bus" not in x["target"].replace("giraffe", "") for x in detection)
