"""The Florence-2 region specialist with the tiny random Florence-2 that
``tests/fixtures/hf_tiny.py`` builds offline (its tokenizer has Florence-2's location
tokens, and its decoder may emit them): the parse of known outputs through the real
processor, and each image encoded once for the three tasks. Through ``fld run`` on Ray it
runs in ``tests/integration/test_gpu_placement.py``'s preset test."""

from __future__ import annotations

import math

import pytest

from annotators import annotator_class
from annotators.hf_generation import Generated
from tests.fixtures.common import demo_sample
from tests.fixtures.hf_tiny import build_tiny_florence2

SOURCE = "florence2_regions@1"


@pytest.fixture(scope="module")
def tiny_florence2(tmp_path_factory) -> str:
    return str(build_tiny_florence2(tmp_path_factory.mktemp("florence2"), speak_locations=True))


@pytest.fixture(scope="module")
def specialist(tiny_florence2):
    instance = annotator_class("florence2_regions")(model=tiny_florence2, max_new_tokens=48)
    instance.setup()
    return instance


def output(specialist, text: str, location_p: float, word_p: float = 0.5) -> Generated:
    """A generated output for ``text``: location tokens with probability ``location_p``,
    other tokens ``word_p``."""
    tokenizer = specialist._florence2.processor.tokenizer
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    located = specialist._florence2.location_ids
    log_probs = [math.log(location_p if t in located else word_p) for t in tokens]
    return Generated(tokens=tokens, log_probs=log_probs)


def test_outputs_parse_to_regions_in_pixels(specialist):
    width, height = 640, 480
    od = output(specialist, "Bus<loc_100><loc_200><loc_500><loc_600>person<loc_0><loc_0>"
                "<loc_10><loc_999>", location_p=0.8)  # fmt: skip
    regions = specialist.regions("od", od, width, height)
    assert [(r.kind, r.label) for r in regions] == [("object", "bus"), ("object", "person")]
    # Bin centres: (bin + 0.5) * size / 1000, as integers.
    assert regions[0].box == (64.0, 96.0, 320.0, 288.0)
    assert regions[1].box == (0.0, 0.0, 6.0, 479.0)
    assert [r.score for r in regions] == pytest.approx([0.8, 0.8])
    assert all(r.source == SOURCE and r.quad is None for r in regions)

    dense = output(specialist, "a red bus<loc_500><loc_600><loc_100><loc_200>", 0.6)
    (region,) = specialist.regions("dense_region_caption", dense, width, height)
    assert (region.kind, region.label) == ("dense", "a red bus")
    assert region.box == (64.0, 96.0, 320.0, 288.0)  # corners put in order

    ocr = output(specialist, "STOP<loc_100><loc_100><loc_200><loc_100><loc_200><loc_150>"
                 "<loc_100><loc_150>", 0.9)  # fmt: skip
    (line,) = specialist.regions("ocr_with_region", ocr, width, height)
    assert (line.kind, line.label) == ("ocr", "STOP")
    assert line.quad == [64.0, 48.0, 128.0, 48.0, 128.0, 72.0, 64.0, 72.0]
    assert line.box == (64.0, 48.0, 128.0, 72.0) and line.score == pytest.approx(0.9)

    # A malformed output: a stray location token is not a label, a degenerate box is
    # skipped, and an unlocated label gives nothing.
    messy = output(specialist, "<loc_5>car<loc_1><loc_1><loc_1><loc_1>tree", 0.7)
    assert specialist.regions("od", messy, width, height) == []
    assert specialist.regions("od", Generated([], []), width, height) == []


def test_each_image_is_encoded_once_for_all_tasks(specialist):
    encoded, generated = [], []
    model = specialist._florence2.model
    get_image_features, generate = model.get_image_features, model.generate
    model.get_image_features = lambda pixels: (
        encoded.append(pixels.shape[0]) or get_image_features(pixels)
    )
    model.generate = lambda **kwargs: (
        generated.append(kwargs["attention_mask"].shape[0]) or generate(**kwargs)
    )
    try:
        samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
        specialist.run(samples)
    finally:
        model.get_image_features, model.generate = get_image_features, generate
    assert encoded == [2] and generated == [2, 2, 2]
    kinds = set()
    for sample in samples:
        for region in sample.regions:
            kinds.add(region.kind)
            assert region.source == SOURCE and 0.0 <= region.score <= 1.0 and region.label
            assert 0 <= region.x0 < region.x1 <= sample.width
            assert 0 <= region.y0 < region.y1 <= sample.height
            assert "<" not in region.label and "loc_" not in region.label
    assert kinds == {"object", "dense", "ocr"}  # the random model located something in each


def test_florence2_segmenter_answers_region_to_segmentation(specialist, tiny_florence2):
    """The polygon of ``<REGION_TO_SEGMENTATION>`` for each box, parsed by the processor and
    clipped to the box; with ``sources`` only those rows are redrawn."""
    from annotators.florence2_segmenter import TASK, first_polygon
    from engine.records import Phrase, Region, Text

    answer = output(specialist, "<loc_100><loc_100><loc_500><loc_100><loc_500><loc_900>", 0.9)
    parsed = specialist._florence2.parse(answer, TASK, (640, 480))
    assert first_polygon(parsed, (0, 0, 640, 480)) == [64.0, 48.0, 320.0, 48.0, 320.0, 432.0]
    assert first_polygon(parsed, (100, 0, 200, 100)) == [
        100.0, 48.0, 200.0, 48.0, 200.0, 100.0,
    ]  # fmt: skip
    assert first_polygon({}, (0, 0, 1, 1)) == []

    segmenter = annotator_class("florence2_segmenter")(
        model=tiny_florence2, sources=["student@1"], max_new_tokens=24
    )
    segmenter.setup()
    sample = demo_sample("bus.jpg")
    w, h = sample.width, sample.height
    mine = Region("object", 0.1 * w, 0.1 * h, 0.6 * w, 0.9 * h, "bus", 0.9, "student@1")
    other = Region("object", 0.5 * w, 0.2 * h, 0.9 * w, 0.6 * h, "bus", 0.9, "ssd_coco@1")
    other.polygon = [1.0, 1.0, 2.0, 1.0, 2.0, 2.0]
    text = Text("brief", "a bus", "student@1")
    phrase = Phrase(text, 0, "a bus", 0, 5, "student@1", box=mine.box, score=0.9)
    sample.regions += [mine, other]
    sample.texts.append(text)
    sample.phrases.append(phrase)
    segmenter.run([sample])
    assert other.polygon == [1.0, 1.0, 2.0, 1.0, 2.0, 2.0]  # not its source: untouched
    assert phrase.polygon == mine.polygon  # one box, segmented once
    if mine.polygon:  # the random model may write fewer than 3 points
        xs, ys = mine.polygon[0::2], mine.polygon[1::2]
        assert min(xs) >= mine.x0 and max(xs) <= mine.x1
        assert min(ys) >= mine.y0 and max(ys) <= mine.y1
