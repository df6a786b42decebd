"""The torch SSD (``ssd_coco@2``) against what OpenCV's ``cv2.dnn`` ran as ``ssd_coco@1``
(the fixture ``tests/fixtures/data/ssd_parity.json``, recorded by
``tests/fixtures/record_ssd_parity.py`` with OpenCV 5.0): the same detections on the demo
images and 20 generated scenes; batch size does not change them; the converted weights'
cache refuses a file whose SHA-256 is not the recorded one."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from annotators.ssd_coco import GRAPH_CONFIG, GRAPH_FILE, SSDCocoDetector, default_model_dir
from annotators.ssd_network import (
    CachedWeights,
    DetectionSettings,
    cached_state_dict,
    file_sha256,
    ssd_anchors,
)
from tests.fixtures.record_ssd_parity import FIXTURE, parity_images, pixels_sha256

# Every fixture detection of at least FLOOR must be found; none of ours over EXTRA_FLOOR may
# be missing from the fixture. The gap keeps scores a hair either side of 0.05 out of it.
FLOOR, EXTRA_FLOOR = 0.05, 0.06
MAX_BOX_ERROR_PX, MAX_SCORE_ERROR = 1.0, 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory, fixture) -> list[tuple[str, np.ndarray]]:
    made = parity_images(tmp_path_factory.mktemp("parity-scenes"))
    names = [name for name, _ in made]
    assert names == [image["name"] for image in fixture["images"]]
    changed = [
        name
        for (name, pixels), image in zip(made, fixture["images"], strict=True)
        if pixels_sha256(pixels) != image["pixels_sha256"]
    ]
    assert not changed, f"these images decode to other pixels than when recorded: {changed}"
    return made


@pytest.fixture(scope="module")
def detector() -> SSDCocoDetector:
    # Just under the floor: a fixture detection at 0.0500 that we score 0.04999 is found.
    annotator = SSDCocoDetector(min_score=FLOOR - 1e-3, batch_size=8, device="cpu")
    annotator.setup()
    return annotator


def box_error(region, wanted: dict) -> float:
    """The largest corner difference, in pixels."""
    return float(np.abs(np.subtract(region.box, wanted["box"])).max())


def match(reference: list[dict], regions) -> tuple[list[tuple[float, float]], list, list]:
    """Pair each reference detection (best first) with the unpaired region of its label
    whose box is closest. Returns the pairs' (box error, score error), the regions left
    unpaired and the references left unpaired."""
    free = list(regions)
    errors, missing = [], []
    for wanted in sorted(reference, key=lambda d: -d["score"]):
        same = [r for r in free if r.label == wanted["label"]]
        if not same:
            missing.append(wanted)
            continue
        best = min(same, key=lambda r: box_error(r, wanted))
        free.remove(best)
        errors.append((box_error(best, wanted), abs(best.score - wanted["score"])))
    return errors, free, missing


def test_detections_match_opencv(detector, images, fixture):
    assert fixture["graph_sha256"] == file_sha256(Path(default_model_dir()) / GRAPH_FILE)
    per_image = detector.annotate([pixels for _, pixels in images])
    all_errors, problems = [], []
    for (name, _), regions, recorded in zip(images, per_image, fixture["images"], strict=True):
        reference = [d for d in recorded["detections"] if d["score"] >= FLOOR]
        errors, unpaired, missing = match(reference, regions)
        all_errors += errors
        bad = [e for e in errors if e[0] >= MAX_BOX_ERROR_PX or e[1] >= MAX_SCORE_ERROR]
        extra = [(r.label, round(r.score, 4), r.box) for r in unpaired if r.score > EXTRA_FLOOR]
        if missing or bad or extra:
            problems.append(f"{name}: missing {missing}, off {bad}, extra {extra}")
    assert not problems, "\n".join(problems)
    assert len(all_errors) == sum(
        1 for image in fixture["images"] for d in image["detections"] if d["score"] >= FLOOR
    )
    box_errors, score_errors = zip(*all_errors, strict=True)
    print(
        f"parity: {len(all_errors)} detections matched; max box error {max(box_errors):.3f} px, "
        f"max score error {max(score_errors):.2e}"
    )


def test_batch_size_does_not_change_detections(detector, images):
    sample = [pixels for _, pixels in images[:8]]
    one_at_a_time = SSDCocoDetector(min_score=detector.min_score, batch_size=1, device="cpu")
    one_at_a_time.setup()
    alone, batched = one_at_a_time.annotate(sample), detector.annotate(sample)
    for single, together in zip(alone, batched, strict=True):
        assert [r.label for r in single] == [r.label for r in together]
        np.testing.assert_allclose([r.box for r in single], [r.box for r in together], atol=1e-3)
        np.testing.assert_allclose([r.score for r in single], [r.score for r in together], atol=1e-5)  # fmt: skip
    assert sum(map(len, alone)) > 100  # the images do have detections to compare


def test_anchors_and_settings_are_the_models():
    # 19x19x3 + (10x10 + 5x5 + 3x3 + 2x2 + 1x1) x 6 anchors at 300 px.
    assert ssd_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]).shape == (1917, 4)
    # OpenCV's settings, as its description of the graph gives them.
    text = (Path(default_model_dir()) / GRAPH_CONFIG).read_text()
    detection_out = text[text.index('name: "detection_out"') :]

    def attr(key: str) -> float:
        found = re.search(rf'key: "{key}"\s*value \{{\s*[if]: ([0-9.e-]+)', detection_out)
        return float(found.group(1))

    settings = DetectionSettings()
    assert attr("confidence_threshold") == pytest.approx(settings.confidence_threshold)
    assert attr("nms_threshold") == pytest.approx(settings.nms_threshold)
    assert attr("keep_top_k") == settings.keep_top_k and attr("top_k") == settings.top_k


def test_cached_weights_with_another_sha256_are_refused_and_rebuilt(tmp_path, caplog):
    graph = Path(default_model_dir()) / GRAPH_FILE
    first = cached_state_dict(graph, tmp_path)
    cached = CachedWeights.for_graph(tmp_path, file_sha256(graph))
    record = json.loads(cached.record.read_text())
    assert record["graph_sha256"] == file_sha256(graph)
    assert record["weights_sha256"] == file_sha256(cached.weights)

    with cached.weights.open("r+b") as stream:  # one byte of a weight changed
        stream.seek(cached.weights.stat().st_size - 3)
        stream.write(b"\x7f")
    with caplog.at_level(logging.WARNING, logger="annotators.ssd_network"):
        again = cached_state_dict(graph, tmp_path)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"cached weights {cached.weights} have SHA-256" in warning and "refused" in warning
    assert all(np.array_equal(first[name].numpy(), again[name].numpy()) for name in first)
    assert json.loads(cached.record.read_text())["weights_sha256"] == file_sha256(cached.weights)


def test_config_keys():
    annotator = SSDCocoDetector(batch_size=4, device="cuda:0", half=True)
    assert annotator.source == "ssd_coco@2"
    with pytest.raises(ValueError, match="device must be"):
        SSDCocoDetector(device="gpu")
