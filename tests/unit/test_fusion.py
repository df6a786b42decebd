"""Weighted boxes fusion across sources: logic on hand-made regions."""

from __future__ import annotations

import numpy as np
import pytest

from engine.records import Region, Sample
from filters.fusion import FusionFilter


def sample_with(*regions: Region) -> Sample:
    sample = Sample("f" * 32, "mem://x", np.zeros((100, 100, 3), np.uint8), None, 1)
    sample.regions = list(regions)
    return sample


def region(box, label="person", score=0.8, source="ssd@1", **extra) -> Region:
    return Region("object", *box, label=label, score=score, source=source, **extra)


def test_two_sources_agreeing_fuse_into_one_box_with_both_sources():
    sample = sample_with(
        region((10, 10, 50, 50), score=0.9),
        region((14, 12, 54, 48), label="Person", score=0.6, source="student_i1@1"),
    )
    fusion = FusionFilter()
    fusion.apply(sample)
    fused = [r for r in sample.regions if r.source == "fused"]
    assert len(fused) == 1
    box = fused[0]
    assert box.sources == ["ssd@1", "student_i1@1"] and len(box.sources) == 2
    assert box.label == "person"  # labels normalised across sources
    # score-weighted average of the two boxes
    assert box.x0 == pytest.approx((0.9 * 10 + 0.6 * 14) / 1.5)
    assert box.score == pytest.approx((0.9 + 0.6) / 2)
    assert box.kept
    assert [(r.kept, r.drop_reason) for r in sample.regions[:2]] == [(False, "fused_into")] * 2
    assert fusion.counts == {"fused": 1, "fused_into": 2}


def test_a_box_only_one_source_saw_keeps_its_score_under_the_mean_rule():
    """The default rule scores a cluster by its own sources: the cup only SSD saw keeps
    SSD's score, whether or not the student kept a box elsewhere on the image."""
    sample = sample_with(
        region((10, 10, 50, 50), score=0.9),
        region((60, 60, 90, 90), label="cup", score=0.8),
        region((12, 10, 50, 52), score=0.7, source="student_i1@1"),
    )
    FusionFilter(min_score=0.3).apply(sample)
    cup = next(r for r in sample.regions if r.source == "fused" and r.label == "cup")
    assert cup.score == pytest.approx(0.8) and cup.sources == ["ssd@1"]
    assert cup.kept


def test_a_box_only_one_source_saw_loses_score_in_proportion_under_wbf():
    expected = ["ssd@1", "student_i1@1"]
    sample = sample_with(
        region((10, 10, 50, 50), score=0.9),
        region((60, 60, 90, 90), label="cup", score=0.8),
        region((12, 10, 50, 52), score=0.7, source="student_i1@1"),
    )
    FusionFilter(min_score=0.3, score_rule="wbf", expected_sources=expected).apply(sample)
    cup = next(r for r in sample.regions if r.source == "fused" and r.label == "cup")
    assert cup.score == pytest.approx(0.4) and cup.sources == ["ssd@1"]
    assert cup.kept
    FusionFilter(min_score=0.5, score_rule="wbf", expected_sources=expected).apply(sample2 := sample_with(
        region((60, 60, 90, 90), label="cup", score=0.8), region((10, 10, 50, 50), source="student_i1@1")))  # fmt: skip
    dropped = next(r for r in sample2.regions if r.source == "fused" and r.label == "cup")
    assert (dropped.kept, dropped.drop_reason) == (False, "low_score")


def test_weights_and_label_map():
    sample = sample_with(
        region((10, 10, 50, 50), label="people", score=0.5),
        region((10, 10, 50, 50), label="person", score=1.0, source="student_i2@1"),
    )
    FusionFilter(weights={"student": 3.0}, label_map={"people": "person"}).apply(sample)
    fused = [r for r in sample.regions if r.source == "fused"]
    assert len(fused) == 1 and fused[0].label == "person"
    assert fused[0].score == pytest.approx((1 * 0.5 + 3 * 1.0) / 4)


def test_single_source_images_and_other_kinds_are_left_alone():
    sample = sample_with(region((10, 10, 50, 50)), region((12, 10, 50, 52), score=0.5))
    FusionFilter().apply(sample)
    assert all(r.source != "fused" and r.kept for r in sample.regions)
    ocr = Region("ocr", 0, 0, 10, 10, label="EXIT", score=0.9, source="rapidocr@1")
    sample = sample_with(region((10, 10, 50, 50)), region((10, 10, 50, 50), source="b@1"), ocr)
    FusionFilter().apply(sample)
    assert ocr.kept and ocr.drop_reason is None


def test_non_overlapping_boxes_of_same_label_stay_separate():
    sample = sample_with(region((0, 0, 20, 20)), region((70, 70, 99, 99), source="b@1"))
    FusionFilter().apply(sample)
    fused = [r for r in sample.regions if r.source == "fused"]
    assert len(fused) == 2 and all(len(r.sources) == 1 for r in fused)


def test_bad_fusion_config_fails_validation():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="filters.fusion.iou_threshold"):
        load_config(None, ["filters.fusion.iou_threshold=0"])
