"""The ``florence2`` export of a hand-written synthetic corpus, read back by our decoder
and by the transformers Florence-2 processor (built offline: its post-processor needs no
hub files); the decoder's edges. The export of a real run is in
``tests/integration/test_export_florence2.py``."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from engine import florence2 as f2
from pipelines.exports import export_corpus
from tests.fixtures.export_helpers import write_synthetic_corpus
from tests.fixtures.florence2 import florence2_processor, within_one_bin


@pytest.fixture(scope="module")
def processor():
    """A real ``Florence2Processor`` (see ``tests/fixtures/florence2.py``)."""
    return florence2_processor()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("f2synthetic")
    return write_synthetic_corpus(work / "corpus", work / "inputs")


def test_quantisation_is_the_transformers_processors(processor):
    import torch

    post = processor.post_processor
    rng = random.Random(0)
    for width, height in [(810, 1080), (640, 400), (1, 1), (4000, 37), (999, 1001)]:
        points = [[0.0, 0.0], [width, height], [width - 1e-3, height / 2]]
        points += [[rng.uniform(0, width), rng.uniform(0, height)] for _ in range(500)]
        theirs = post.quantize(torch.tensor(points, dtype=torch.float64), (width, height))
        ours = [f2.quantize_points(p, width, height) for p in points]
        assert theirs.tolist() == ours
        back = post.dequantize(theirs, (width, height)).tolist()
        # theirs truncates the bin centre to an int; ours keeps the float
        assert [
            [math.floor(v) for v in f2.dequantize_points(b, width, height)] for b in ours
        ] == back


def test_synthetic_corpus_every_task(synthetic, processor, tmp_path):
    summary = export_corpus(synthetic, "florence2", tmp_path / "kept")
    lines = [json.loads(line) for line in (tmp_path / "kept" / "florence2.jsonl").open()]
    assert summary["counts"]["images"] == 3
    # shard order, then image_id: the tar's "aaa..." image comes before "bbb..." in shard 0
    assert [line["image_id"][0] for line in lines if line["task"] == "<OD>"] == ["a", "b", "c"]
    # One line per task and image, exactly: the three images carry the same annotations.
    per_image = {
        "<CAPTION>": 1,  # the dropped brief caption is not exported
        "<DETAILED_CAPTION>": 1,
        "<MORE_DETAILED_CAPTION>": 1,
        "<OD>": 1,
        "<DENSE_REGION_CAPTION>": 1,
        "<REGION_PROPOSAL>": 1,
        "<OCR>": 1,
        "<OCR_WITH_REGION>": 1,
        "<CAPTION_TO_PHRASE_GROUNDING>": 1,  # not for the dropped text's phrase
        "<REFERRING_EXPRESSION_SEGMENTATION>": 1,  # "A dog" has a polygon
        "<REGION_TO_SEGMENTATION>": 1,  # the dog region has a polygon
    }
    expected_tasks = {task: 3 * n for task, n in per_image.items()}
    assert summary["counts"]["tasks"] == expected_tasks
    assert dict(Counter(line["task"] for line in lines)) == expected_tasks
    line = {x["task"]: x for x in lines if x["image_id"][0] == "b"}
    width, height = line["<OD>"]["width"], line["<OD>"]["height"]
    size = (width, height)

    od = f2.decode_boxes(line["<OD>"]["target"], width, height)
    assert [label for label, _ in od] == ["dog", "cat", "cat"]  # the dropped "tv" is not there
    ocr = f2.decode_ocr(line["<OCR_WITH_REGION>"]["target"], width, height)
    assert [text for text, _ in ocr] == ["OPEN (24h)", "Café Bar"]  # "<", ">", newline cleaned
    # a line without a quad gets its box's corners, clockwise from top-left
    x0, y0, x1, y1 = 50 * width / 100, 70 * height / 100, 90 * width / 100, 85 * height / 100
    assert within_one_bin(ocr[1][1], [x0, y0, x1, y0, x1, y1, x0, y1], width, height)
    assert line["<OCR>"]["target"] == "OPEN (24h)\nCafé Bar"
    proposals = f2.decode_boxes(line["<REGION_PROPOSAL>"]["target"], width, height)
    assert len(proposals) == 4 and {label for label, _ in proposals} == {""}

    grounding = line["<CAPTION_TO_PHRASE_GROUNDING>"]
    assert grounding["input"] == "A dog and two cats near a sign"
    assert grounding["prompt"] == "<CAPTION_TO_PHRASE_GROUNDING>" + grounding["input"]
    assert processor._construct_prompts(grounding["prompt"]) == [
        "Locate the phrases in the caption: A dog and two cats near a sign"
    ]
    ours = f2.decode_labelled_boxes(grounding["target"], width, height)
    assert [(phrase, len(boxes)) for phrase, boxes in ours] == [("A dog", 1), ("two cats", 2)]
    theirs = processor.post_process_generation(
        text=grounding["target"], task="<CAPTION_TO_PHRASE_GROUNDING>", image_size=size
    )["<CAPTION_TO_PHRASE_GROUNDING>"]
    assert theirs["labels"] == ["A dog", "two cats", "two cats"]
    assert theirs["bboxes"] == [[math.floor(v) for v in b] for _, bs in ours for b in bs]

    dog = [5 * width / 100, 10 * height / 100, 30 * width / 100, 10 * height / 100,
           35 * width / 100, 50 * height / 100, 5 * width / 100, 55 * height / 100]  # fmt: skip
    for task in ("<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>"):
        (polygon,) = f2.decode_polygons(line[task]["target"], width, height)
        assert within_one_bin(polygon, dog, width, height)
        theirs = processor.post_process_generation(
            text=line[task]["target"], task=task, image_size=size
        )[task]
        assert theirs["polygons"] == [[[math.floor(v) for v in polygon]]]
    assert line["<REFERRING_EXPRESSION_SEGMENTATION>"]["input"] == "A dog"
    region_prompt = line["<REGION_TO_SEGMENTATION>"]["input"]
    assert len(f2.LOC_RE.findall(region_prompt)) == 4

    # --include-dropped: the dropped caption, the "tv" box and the dropped text's grounding
    summary = export_corpus(synthetic, "florence2", tmp_path / "all", include_dropped=True)
    tasks = summary["counts"]["tasks"]
    assert tasks["<CAPTION>"] == 6 and tasks["<CAPTION_TO_PHRASE_GROUNDING>"] == 6
    everything = [json.loads(x) for x in (tmp_path / "all" / "florence2.jsonl").open()]
    od_all = next(x for x in everything if x["task"] == "<OD>" and x["image_id"][0] == "b")
    assert "tv" in [label for label, _ in f2.decode_boxes(od_all["target"], width, height)]


def test_decoder_edges():
    assert f2.quantize(0, 640) == 0 and f2.quantize(640, 640) == 999 and f2.quantize(-3, 640) == 0
    assert f2.dequantize(999, 1000) == 999.5
    sequence = "<s>car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>x<loc_9></s>"
    assert f2.decode_labelled_boxes(sequence, 1000, 1000) == [
        ("car", [[1.5, 2.5, 3.5, 4.5], [5.5, 6.5, 7.5, 8.5]])
    ]  # the label with a lone token has no whole box
    assert f2.decode_polygons("<loc_0><loc_0><loc_9><sep><loc_1><loc_1>", 1000, 1000) == [
        [0.5, 0.5],
        [1.5, 1.5],
    ]
