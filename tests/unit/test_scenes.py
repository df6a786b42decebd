"""The ground-truth scene generator: crops that never paste an unlabelled fragment,
deterministic output, COCO ground truth that agrees with the written images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFont

from engine.scenes import (
    BACKGROUND_PHOTOS,
    COCO_CATEGORIES,
    CROPS,
    PHOTO_GROUPS,
    PHOTO_OBJECTS,
    TEXT_CATEGORY_ID,
    generate_scenes,
    group_backgrounds,
    group_crops,
    load_photo,
    scene_photos,
    text_mask,
)
from engine.synthetic import dejavu_path


def test_crops_and_objects_lie_in_their_photos_and_leave_no_slivers():
    names = set(COCO_CATEGORIES.values())
    for photo, objects in PHOTO_OBJECTS.items():
        width, height = load_photo(photo).size
        for label, (x0, y0, x1, y1) in objects:
            assert label in names
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (photo, label)
    for crop in CROPS:
        width, height = load_photo(crop.photo).size
        cx0, cy0, cx1, cy1 = crop.box
        assert 0 <= cx0 < cx1 <= width and 0 <= cy0 < cy1 <= height, crop.name
        labelled = 0
        for label, (x0, y0, x1, y1) in PHOTO_OBJECTS[crop.photo]:
            iw = min(x1, cx1) - max(x0, cx0)
            ih = min(y1, cy1) - max(y0, cy0)
            if iw <= 0 or ih <= 0:
                continue
            # An object the crop touches keeps at least a quarter of its area: no fragment
            # of a COCO object is pasted without a label.
            assert iw * ih >= 0.25 * (x1 - x0) * (y1 - y0), (crop.name, label)
            labelled += 1
        assert labelled >= 1, crop.name


def test_text_mask_is_tight():
    font = ImageFont.truetype(dejavu_path(), 24)
    for angle in (0.0, 5.0, -6.5):
        mask = np.asarray(text_mask("Exit-3 Cafe", font, angle)) > 96
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return root, generate_scenes(root / "a", 24, seed=3)


def test_coco_ground_truth_agrees_with_the_images(scenes):
    root, path = scenes
    coco = json.loads(path.read_text())
    category_ids = {c["id"] for c in coco["categories"]}
    assert TEXT_CATEGORY_ID in category_ids and 1 in category_ids
    images = {image["id"]: image for image in coco["images"]}
    assert [image["file_name"] for image in coco["images"]] == [
        f"scene_{i:05d}.jpg" for i in range(24)
    ]
    for image in coco["images"]:
        with Image.open(root / "a" / "images" / image["file_name"]) as written:
            assert written.format == "JPEG"
            assert written.size == (image["width"], image["height"]) == (640, 480)
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids))
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        assert 0 <= x <= x + w <= image["width"] and 0 <= y <= y + h <= image["height"]
        assert w >= 6 and h >= 6
        assert annotation["area"] == w * h and annotation["iscrowd"] == 0
        assert annotation["category_id"] in category_ids
        if annotation["category_id"] == TEXT_CATEGORY_ID:
            assert annotation["text"] and annotation["text"] == annotation["text"].strip()
        else:
            assert "text" not in annotation


def test_scenes_are_varied_and_hard(scenes):
    _, path = scenes
    coco = json.loads(path.read_text())
    objects = [a for a in coco["annotations"] if "text" not in a]
    texts = [a for a in coco["annotations"] if "text" in a]
    labels = {COCO_CATEGORIES[a["category_id"]] for a in objects}
    assert {"person", "cat", "cup", "bus"} <= labels and len(labels) >= 6
    assert sum(a["area"] < 32 * 32 for a in objects) >= 5  # COCO "small" objects
    assert sum(a["area"] > 96 * 96 for a in objects) >= 5
    assert len(texts) >= 8 and len({a["text"] for a in texts}) >= 0.8 * len(texts)
    per_image = np.bincount([a["image_id"] for a in objects])
    assert per_image.max() >= 6  # crowded scenes (the bus street, overlapping pastes)
    assert len({a.get("crop") for a in objects}) >= 8


def test_generation_is_deterministic(scenes, tmp_path):
    root, path = scenes
    again = generate_scenes(tmp_path / "b", 5, seed=3)  # scene i does not depend on n
    first = json.loads(path.read_text())
    second = json.loads(again.read_text())
    assert second["images"] == first["images"][:5]
    assert second["annotations"] == [a for a in first["annotations"] if a["image_id"] <= 5]
    for i in range(5):
        name = f"scene_{i:05d}.jpg"
        assert (tmp_path / "b" / "images" / name).read_bytes() == (
            root / "a" / "images" / name
        ).read_bytes()
    other = json.loads(generate_scenes(tmp_path / "c", 5, seed=4).read_text())
    assert other["annotations"] != second["annotations"]


def test_photo_groups_share_no_photo(tmp_path):
    """A scene set of one group takes no pixel from the other group's photos (crops or
    backgrounds), and every object photo belongs to exactly one group."""
    a, b = set(PHOTO_GROUPS["A"]), set(PHOTO_GROUPS["B"])
    assert not a & b and a | b == set(PHOTO_OBJECTS)
    for group, own in PHOTO_GROUPS.items():
        other = (a | b) - set(own)
        assert {crop.photo for crop in group_crops(group)} == set(own)
        assert not {photo for photo, _ in group_backgrounds(group)} & other
    assert group_crops(None) == CROPS and group_backgrounds(None) == BACKGROUND_PHOTOS
    seen = {}
    for group in PHOTO_GROUPS:
        path = generate_scenes(tmp_path / group, 30, seed=5, group=group)
        coco = json.loads(path.read_text())
        assert coco["info"]["group"] == group
        seen[group] = scene_photos(path)
        other = (a | b) - set(PHOTO_GROUPS[group])
        assert seen[group] and not seen[group] & other, (group, seen[group])
        crops = {crop.name: crop.photo for crop in CROPS}
        assert {crops[x["crop"]] for x in coco["annotations"] if "crop" in x} <= set(
            PHOTO_GROUPS[group]
        )
    assert not seen["A"] & seen["B"] & (a | b)
    with pytest.raises(ValueError, match="unknown photo group"):
        generate_scenes(tmp_path / "c", 1, group="C")
