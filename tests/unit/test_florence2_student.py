"""The Florence-2 student's data stream (pipelines/florence2_student.py), without a
model: the validation split by image_id hash, task weights, the seeded shuffle, and the
config's checks. Training itself is tested in tests/integration/test_florence2_student.py."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from pydantic import ValidationError

from pipelines.config import Florence2StudentConfig, load_config
from pipelines.florence2_student import epoch_examples, shuffled, split_of, weighted

TASKS = ["<CAPTION>", "<OD>", "<OCR>"]


def write_export(path, images: int = 200) -> list[dict]:
    lines = [
        {"image": f"/x/{i}.jpg", "image_id": f"{i:032x}", "task": task, "prompt": task,
         "target": f"t{i}"}
        for i in range(images) for task in TASKS
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def settings(**fields) -> Florence2StudentConfig:
    # A hub id is kept as given (checked when it loads), so no model is needed here.
    return Florence2StudentConfig(model="florence-community/Florence-2-base", **fields)


def test_the_validation_split_is_a_stable_share_of_images(tmp_path):
    ids = [f"{i:032x}" for i in range(4000)]
    val = [image_id for image_id in ids if split_of(image_id, 0.1) == "val"]
    assert 300 < len(val) < 500  # about 10 %
    assert val == [image_id for image_id in ids if split_of(image_id, 0.1) == "val"]
    # A larger fraction holds out a superset: an image never moves from val to train.
    assert set(val) <= {image_id for image_id in ids if split_of(image_id, 0.3) == "val"}
    assert all(split_of(image_id, 0.0) == "train" for image_id in ids)


def test_task_weights_repeat_and_thin_lines():
    lines = [{"task": task} for task in TASKS for _ in range(1000)]
    counts = Counter(
        line["task"] for line in weighted(lines, {"<OD>": 2.0, "<OCR>": 0.25}, random.Random(0))
    )
    assert counts["<CAPTION>"] == 1000 and counts["<OD>"] == 2000
    assert 180 < counts["<OCR>"] < 320
    assert counts == Counter(
        line["task"] for line in weighted(lines, {"<OD>": 2.0, "<OCR>": 0.25}, random.Random(0))
    )


def test_an_epoch_is_a_seeded_shuffle_of_the_training_lines(tmp_path):
    export = tmp_path / "florence2.jsonl"
    lines = write_export(export)
    config = settings(shuffle_buffer=50, val_fraction=0.2, seed=3)
    first = list(epoch_examples(export, config, 0))
    train = [line for line in lines if split_of(line["image_id"], 0.2) == "train"]
    assert sorted(map(json.dumps, first)) == sorted(map(json.dumps, train))  # all, once
    assert first != train  # shuffled
    assert first == list(epoch_examples(export, config, 0))  # the same seed and epoch
    assert first != list(epoch_examples(export, config, 1))  # another epoch
    assert first != list(epoch_examples(export, settings(shuffle_buffer=50, val_fraction=0.2), 0))


def test_shuffle_keeps_every_item_with_a_small_window():
    items = [{"n": i} for i in range(100)]
    out = list(shuffled(iter(items), 7, random.Random(1)))
    assert sorted(item["n"] for item in out) == list(range(100)) and out != items


def test_student_config_is_validated(tmp_path):
    with pytest.raises(ValidationError, match="unknown tasks"):
        settings(task_weights={"<CAPTIONS>": 1.0})
    with pytest.raises(ValidationError, match="texts"):
        settings(texts="merge")
    folder = tmp_path / "owl"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "owlv2"}')
    with pytest.raises(ValidationError, match="is a 'owlv2' model"):
        Florence2StudentConfig(model=str(folder))
    config = load_config(None, ["refine.student.kind=florence2",
                                "refine.student.florence2.epochs=2"])  # fmt: skip
    assert config.refine.student.kind == "florence2"
    assert config.refine.student.florence2.epochs == 2
