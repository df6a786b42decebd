"""Logic of the region filters on hand-made samples (no models, no images on disk)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engine.records import Region, Sample
from filters import REGISTRY, filter_class
from filters.confidence import ConfidenceFilter
from filters.geometry import GeometryFilter
from filters.nms import NMSFilter


def make_sample(regions: list[Region], width: int = 100, height: int = 80) -> Sample:
    return Sample(
        image_id="0" * 32,
        uri="mem://test.png",
        pixels=np.zeros((height, width, 3), np.uint8),
        format="PNG",
        n_bytes=0,
        regions=regions,
    )


def box(
    x0: float = 10,
    y0: float = 10,
    x1: float = 50,
    y1: float = 50,
    *,
    score: float = 0.9,
    label: str = "cat",
    source: str = "det@1",
    kind: str = "object",
    quad: list[float] | None = None,
) -> Region:
    return Region(
        kind=kind, x0=x0, y0=y0, x1=x1, y1=y1, label=label, score=score, source=source, quad=quad
    )


def outcome(sample: Sample) -> list[tuple[bool, str | None]]:
    return [(region.kept, region.drop_reason) for region in sample.regions]


def test_registry_resolves_every_filter():
    assert list(REGISTRY) == [
        "geometry",
        "confidence",
        "nms",
        "human_review",
        "fusion",
        "text_complexity",
        "phrase_confidence",
    ]
    assert filter_class("geometry") is GeometryFilter
    assert filter_class("confidence") is ConfidenceFilter
    assert filter_class("nms") is NMSFilter


# --- confidence -------------------------------------------------------------------------


def test_confidence_default_threshold_and_reason():
    sample = make_sample([box(score=0.29), box(score=0.31)])
    ConfidenceFilter(default=0.3, per_kind={}).apply(sample)
    assert outcome(sample) == [(False, "low_score"), (True, None)]


def test_confidence_score_equal_to_threshold_is_kept():
    sample = make_sample([box(score=0.5), box(score=0.5, kind="ocr")])
    flt = ConfidenceFilter(default=0.5, per_kind={"ocr": 0.5})
    flt.apply(sample)
    assert outcome(sample) == [(True, None), (True, None)]
    assert flt.counts == {"kept": 2}


def test_confidence_per_kind_beats_default():
    flt = ConfidenceFilter(default=0.3, per_kind={"ocr": 0.6})
    sample = make_sample([box(score=0.5, kind="ocr"), box(score=0.5, kind="object")])
    flt.apply(sample)
    assert outcome(sample) == [(False, "low_score"), (True, None)]
    assert flt.threshold(sample.regions[0]) == 0.6
    assert flt.threshold(sample.regions[1]) == 0.3


def test_confidence_default_per_kind_is_ocr_half():
    flt = ConfidenceFilter()
    assert flt.default == 0.3
    assert flt.threshold(box(kind="ocr")) == 0.5
    assert flt.threshold(box(kind="dense")) == 0.3


def test_confidence_per_source_bare_name_beats_per_kind():
    flt = ConfidenceFilter(default=0.3, per_kind={"object": 0.8}, per_source={"det": 0.1})
    assert flt.threshold(box(source="det@1")) == 0.1
    assert flt.threshold(box(source="other@1")) == 0.8
    sample = make_sample([box(score=0.2, source="det@1"), box(score=0.2, source="other@1")])
    flt.apply(sample)
    assert outcome(sample) == [(True, None), (False, "low_score")]


def test_confidence_per_source_versioned_beats_bare_name():
    flt = ConfidenceFilter(
        default=0.3, per_kind={"object": 0.5}, per_source={"det@2": 0.9, "det": 0.1}
    )
    assert flt.threshold(box(source="det@2")) == 0.9  # name@version wins
    assert flt.threshold(box(source="det@1")) == 0.1  # falls back to the bare name
    sample = make_sample([box(score=0.5, source="det@2"), box(score=0.5, source="det@1")])
    flt.apply(sample)
    assert outcome(sample) == [(False, "low_score"), (True, None)]


def test_confidence_per_source_prefix_names_every_iterations_student():
    flt = ConfidenceFilter(default=0.3, per_source={"student": 0.5, "student_ssd_i2": 0.7})
    assert flt.threshold(box(source="student_ssd_i1@2")) == 0.5
    assert flt.threshold(box(source="student_i3@1")) == 0.5
    assert flt.threshold(box(source="student_ssd_i2@2")) == 0.7  # a whole name wins
    assert flt.threshold(box(source="ssd_coco@2")) == 0.3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default": 1.5},
        {"default": -0.1},
        {"per_kind": {"ocr": 2.0}},
        {"per_kind": {"not_a_kind": 0.5}},
        {"per_source": {"det@1": -1}},
        {"bogus": 1},
    ],
)
def test_confidence_invalid_config(kwargs):
    with pytest.raises(ValidationError):
        ConfidenceFilter(**kwargs)


# --- geometry ---------------------------------------------------------------------------


def test_geometry_clips_box_to_image():
    region = box(-20, -5, 150, 90)  # image is 100 x 80
    sample = make_sample([region])
    GeometryFilter(min_side=2, max_area_fraction=1.0).apply(sample)
    assert region.box == (0.0, 0.0, 100.0, 80.0)
    assert outcome(sample) == [(True, None)]  # whole image: area fraction exactly 1.0


def test_geometry_clips_ocr_quad():
    quad = [-10.0, -3.0, 120.0, 5.0, 130.0, 95.0, 4.0, 85.0]
    region = box(-10, -3, 130, 95, kind="ocr", label="HELLO", quad=quad)
    GeometryFilter().apply(make_sample([region]))
    assert region.quad == [0.0, 0.0, 100.0, 5.0, 100.0, 80.0, 4.0, 80.0]
    assert region.box == (0.0, 0.0, 100.0, 80.0)
    assert region.kept


def test_geometry_too_small_after_clipping():
    inside_thin = box(10, 10, 11.5, 50)  # 1.5 px wide
    edge_sliver = box(99, 10, 140, 50)  # clips to 1 px wide
    exact = box(10, 10, 12, 12)  # exactly min_side: kept
    sample = make_sample([inside_thin, edge_sliver, exact])
    GeometryFilter(min_side=2).apply(sample)
    assert outcome(sample) == [(False, "too_small"), (False, "too_small"), (True, None)]
    assert edge_sliver.box == (99.0, 10.0, 100.0, 50.0)


def test_geometry_box_entirely_outside_is_too_small():
    right = box(200, 10, 300, 50)
    above = box(10, -60, 50, -10)
    sample = make_sample([right, above])
    flt = GeometryFilter(min_side=0)  # even with no minimum, a zero-area box is dropped
    flt.apply(sample)
    assert outcome(sample) == [(False, "too_small"), (False, "too_small")]
    assert right.x0 == right.x1 == 100.0
    assert above.y0 == above.y1 == 0.0
    assert flt.counts == {"too_small": 2}


def test_geometry_too_large_by_area_fraction():
    big = box(0, 0, 100, 48)  # 60% of 100 x 80
    half = box(0, 0, 100, 40)  # exactly 50%: kept
    sample = make_sample([big, half])
    flt = GeometryFilter(max_area_fraction=0.5)
    flt.apply(sample)
    assert outcome(sample) == [(False, "too_large"), (True, None)]
    assert flt.counts == {"too_large": 1, "kept": 1}


@pytest.mark.parametrize(
    "kwargs",
    [{"min_side": -1}, {"max_area_fraction": 0}, {"max_area_fraction": 1.5}, {"bogus": True}],
)
def test_geometry_invalid_config(kwargs):
    with pytest.raises(ValidationError):
        GeometryFilter(**kwargs)


# --- nms --------------------------------------------------------------------------------


def test_nms_drops_lower_scoring_overlap_of_same_source_and_label():
    high = box(10, 10, 50, 50, score=0.9)
    low = box(12, 12, 52, 52, score=0.6)  # IoU ~ 0.82
    far = box(60, 60, 90, 78, score=0.5)
    sample = make_sample([low, high, far])
    flt = NMSFilter(iou_threshold=0.5)
    flt.apply(sample)
    assert outcome(sample) == [(False, "nms"), (True, None), (True, None)]
    assert flt.counts == {"kept": 2, "nms": 1}


def test_nms_iou_under_threshold_keeps_both():
    a = box(0, 0, 40, 40, score=0.9)
    b = box(20, 0, 60, 40, score=0.8)  # IoU = 1/3
    sample = make_sample([a, b])
    NMSFilter(iou_threshold=0.5).apply(sample)
    assert outcome(sample) == [(True, None), (True, None)]
    sample = make_sample([box(0, 0, 40, 40, score=0.9), box(20, 0, 60, 40, score=0.8)])
    NMSFilter(iou_threshold=0.3).apply(sample)
    assert outcome(sample) == [(True, None), (False, "nms")]


def test_nms_different_labels_kept_unless_class_agnostic():
    def regions():
        return [
            box(10, 10, 50, 50, score=0.9, label="cat"),
            box(11, 11, 51, 51, score=0.7, label="dog"),
        ]

    sample = make_sample(regions())
    NMSFilter().apply(sample)
    assert outcome(sample) == [(True, None), (True, None)]

    sample = make_sample(regions())
    NMSFilter(class_agnostic=True).apply(sample)
    assert outcome(sample) == [(True, None), (False, "nms")]


def test_nms_different_sources_are_not_suppressed():
    sample = make_sample(
        [
            box(10, 10, 50, 50, score=0.9, source="ssd_coco@1"),
            box(10, 10, 50, 50, score=0.4, source="yolo@1"),
        ]
    )
    NMSFilter(class_agnostic=True).apply(sample)
    assert outcome(sample) == [(True, None), (True, None)]


def test_nms_ignores_ocr_by_default():
    def regions():
        return [
            box(10, 10, 50, 20, score=0.9, kind="ocr", label="STOP"),
            box(10, 10, 50, 20, score=0.8, kind="ocr", label="STOP"),
        ]

    sample = make_sample(regions())
    NMSFilter().apply(sample)
    assert outcome(sample) == [(True, None), (True, None)]

    sample = make_sample(regions())
    NMSFilter(kinds=["ocr"]).apply(sample)
    assert outcome(sample) == [(True, None), (False, "nms")]


def test_nms_leaves_already_dropped_regions_untouched():
    dropped = box(10, 10, 50, 50, score=0.99)
    dropped.drop("low_score")
    kept = box(11, 11, 51, 51, score=0.5)
    sample = make_sample([dropped, kept])
    flt = NMSFilter()
    flt.apply(sample)
    # the dropped box neither suppresses the kept one nor gets a new reason
    assert outcome(sample) == [(False, "low_score"), (True, None)]
    assert flt.counts == {"kept": 1}


def test_nms_single_candidate_and_empty_sample():
    flt = NMSFilter()
    flt.apply(make_sample([]))
    assert flt.counts == {}
    flt.apply(make_sample([box()]))
    assert flt.counts == {"kept": 1}


@pytest.mark.parametrize(
    "kwargs", [{"iou_threshold": 0}, {"iou_threshold": 2}, {"class_agnostic": "maybe"}, {"x": 1}]
)
def test_nms_invalid_config(kwargs):
    with pytest.raises(ValidationError):
        NMSFilter(**kwargs)


# --- the base class ---------------------------------------------------------------------


def test_filters_chain_and_counts_accumulate_across_samples():
    geometry, confidence, nms = GeometryFilter(), ConfidenceFilter(), NMSFilter()
    first = make_sample(
        [
            box(10, 10, 50, 50, score=0.9),
            box(11, 11, 51, 51, score=0.8),  # nms
            box(60, 10, 90, 40, score=0.1),  # low_score
            box(500, 500, 600, 600, score=0.9),  # outside: too_small
        ]
    )
    second = make_sample([box(0, 0, 30, 30, score=0.7), box(40, 40, 70, 70, score=0.7)])
    for sample in (first, second):
        for flt in (geometry, confidence, nms):
            flt.apply(sample)
    assert outcome(first) == [
        (True, None),
        (False, "nms"),
        (False, "low_score"),
        (False, "too_small"),
    ]
    assert geometry.counts == {"kept": 5, "too_small": 1}
    assert confidence.counts == {"kept": 4, "low_score": 1}
    assert nms.counts == {"kept": 3, "nms": 1}


def test_base_apply_rejects_wrong_number_of_decisions():
    class Broken(GeometryFilter):
        name = "broken"

        def decide(self, sample, regions):
            return [True]

    with pytest.raises(RuntimeError, match="for 2 items"):
        Broken().apply(make_sample([box(), box()]))
