"""What the offline texts may claim (issue 12), NMS's kinds, and the fusion and replay rules
(issue 13): one fusion rule on every image, NMS after fusion, replay by shard and URI."""

from __future__ import annotations

import numpy as np
import pytest

from annotators.describe import region_colour
from annotators.region_captioner import RegionCaptioner
from annotators.replay import CorpusReplay
from engine.corpus import Corpus, IterationWriter
from engine.records import Region, Sample
from engine.schemas import table_from_rows
from filters.fusion import FusionFilter
from pipelines.config import ConfigError, load_config


def sample_with(regions: list[Region], image_id: str = "i" * 32, uri: str = "/p/a.jpg") -> Sample:
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :, 1] = 200  # a green picture: any colour word would be "green"
    return Sample(image_id, uri, pixels, "JPEG", 1000, regions=regions)


def box(label: str, x0: float, source: str, score: float = 0.8) -> Region:
    return Region("object", x0, 20, x0 + 80, 180, label, score, source)


# -------------------------------------------------------------------------- texts


def test_people_get_no_colour_word():
    pixels = sample_with([]).pixels
    assert region_colour(pixels, (20, 20, 100, 180), "person") is None
    assert region_colour(pixels, (20, 20, 100, 180), "bus") == "green"
    texts = RegionCaptioner().describe(sample_with([box("person", 20, "ssd_coco@1")]))
    assert [t.granularity for t in texts] == ["brief", "detailed", "more_detailed"]
    for text in texts:
        assert "green person" not in text.text
        assert "person" in text.text


def test_a_text_with_no_evidence_scores_zero():
    texts = RegionCaptioner().describe(sample_with([]))
    assert [t.score for t in texts] == [0.0, 0.0, 0.0]
    with_evidence = RegionCaptioner().describe(sample_with([box("bus", 20, "ssd_coco@1", 0.7)]))
    assert [round(t.score, 6) for t in with_evidence] == [0.7, 0.7, 0.7]


def test_nms_refuses_dense_which_it_never_sees():
    with pytest.raises(ConfigError, match="filters.nms.*dense"):
        load_config(None, ["filters.nms.kinds=[object, dense]"])


# ------------------------------------------------------------------------- fusion


def test_a_specialist_box_scores_the_same_whether_or_not_the_student_kept_a_box_elsewhere():
    alone = sample_with([box("bus", 20, "ssd_coco@1", 0.6)])
    with_student = sample_with(
        [box("bus", 20, "ssd_coco@1", 0.6), box("dog", 200, "student_i1@1", 0.9)]
    )
    FusionFilter().apply(alone)
    FusionFilter().apply(with_student)
    assert [(r.label, r.score, r.kept) for r in alone.regions] == [("bus", 0.6, True)]
    fused_bus = [r for r in with_student.regions if r.label == "bus" and r.kept]
    assert len(fused_bus) == 1 and fused_bus[0].score == pytest.approx(0.6)  # not halved


def test_two_sources_on_one_box_fuse_into_one_row_with_both():
    sample = sample_with([box("bus", 20, "ssd_coco@1", 0.6), box("bus", 22, "student_i1@1", 0.8)])
    FusionFilter().apply(sample)
    fused = [r for r in sample.regions if r.source == "fused"]
    assert len(fused) == 1 and fused[0].kept
    assert fused[0].sources == ["ssd_coco@1", "student_i1@1"]
    assert fused[0].score == pytest.approx(0.7)
    assert sorted(r.drop_reason for r in sample.regions if r.source != "fused") == [
        "fused_into",
        "fused_into",
    ]


def test_wbf_divides_by_the_same_expected_sources_on_every_image():
    expected = ["ssd_coco@1", "student_i1@1"]
    alone = sample_with([box("bus", 20, "ssd_coco@1", 0.8)])
    FusionFilter(score_rule="wbf", expected_sources=expected, min_score=0.0).apply(alone)
    fused = [r for r in alone.regions if r.source == "fused"]
    assert len(fused) == 1 and fused[0].score == pytest.approx(0.4)  # seen by 1 of 2


def test_fused_boxes_that_drift_onto_each_other_are_suppressed():
    # Greedy clustering makes two clusters (each box overlaps the other cluster's box as it
    # stood then by at most 0.55), but their averaged boxes end up overlapping by more:
    # without NMS after fusion both would be kept for one bus.
    regions = [
        Region("object", 75, 0, 175, 100, "bus", 0.3, "a@1"),
        Region("object", 55, 0, 155, 100, "bus", 0.85, "b@1"),
        Region("object", 40, 0, 140, 100, "bus", 0.8, "b@1"),
        Region("object", 25, 0, 125, 100, "bus", 0.85, "a@1"),
    ]
    sample = sample_with(regions)
    fusion = FusionFilter(iou_threshold=0.55, min_score=0.0)
    fusion.apply(sample)
    fused = [r for r in sample.regions if r.source == "fused"]
    kept = [r for r in fused if r.kept]
    assert len(fused) == 2 and len(kept) == 1
    assert all(r.drop_reason == "nms" for r in fused if not r.kept)
    assert fusion.counts["fused_nms"] == len(fused) - 1


# ------------------------------------------------------------------------- replay


def test_replay_gives_each_uri_its_own_rows_when_one_image_is_in_two_shards(tmp_path):
    """The same bytes (one image_id) under two URIs in two shards: each URI gets back the
    rows written for it, once, not both shards' rows."""
    image_id = "d" * 32
    writer = IterationWriter(Corpus(tmp_path / "corpus"), 0)
    writer.prepare({"fingerprint": "f", "config_hash": "c", "n_shards": 2})
    for index, (uri, label) in enumerate([("/p/a.jpg", "bus"), ("/p/z.jpg", "truck")]):
        sample = sample_with([box(label, 20, "ssd_coco@1")], image_id=image_id, uri=uri)
        tables = {
            "images": [sample.image_row(0)],
            "regions": sample.region_rows(0),
            "texts": [],
            "phrases": [],
            "errors": [],
        }
        writer.write_shard(
            f"{index:05d}",
            {name: table_from_rows(name, rows) for name, rows in tables.items()},
            {"shard": index, "first_uri": uri, "last_uri": uri, "n_inputs": 1},
        )
    writer.commit({"counts": {}})
    replay = CorpusReplay(corpus=str(tmp_path / "corpus"), iteration=0, sources=["ssd_coco@1"])
    replay.setup()
    first, second, unknown = (
        sample_with([], image_id=image_id, uri=uri) for uri in ("/p/a.jpg", "/p/z.jpg", "/p/q.jpg")
    )
    replay.run([first, second, unknown])
    assert [r.label for r in first.regions] == ["bus"]
    assert [r.label for r in second.regions] == ["truck"]
    assert unknown.regions == []
