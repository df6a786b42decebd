"""The SSD student's guards, without training one: weights whose SHA-256 is not the
recorded one are refused with a sentence naming the file (by the trainer, which finds them
"already trained", and by ``ssd_coco``, which would run them), and a corpus whose iteration
k-1 kept no object region gets iteration k committed with the specialists alone and the
reason in its ``run.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from annotators.ssd_coco import SSDCocoDetector
from engine.corpus import Corpus
from engine.records import file_sha256
from pipelines.annotate import annotate_corpus
from pipelines.config import load_config
from pipelines.refine import refine_corpus, train_ssd_student_of
from pipelines.ssd_student import SUMMARY, WEIGHTS, TrainingData, train_ssd_student
from pipelines.student_errors import StudentWeightsRefused

# No model: the chaos drill annotator writes no row unless told to crash, so iteration 0
# keeps no object region. The spaCy filter is off (it would load a model).
NOTHING_KEPT = [
    "annotators=[{name: chaos}]",
    "filters.text_complexity.enabled=false",
    "filters.phrase_confidence.enabled=false",
    "run.executor=local",
    "refine.student.kind=ssd",
]


def student_folder(root: Path) -> Path:
    """A trained-looking student: weights, and a summary recording their SHA-256."""
    folder = root / "models" / "iteration=1"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(folder / WEIGHTS))
    summary = {"kind": "ssd", "sha256": file_sha256(folder / WEIGHTS)}
    (folder / SUMMARY).write_text(json.dumps(summary))
    return folder


def tamper(weights: Path) -> None:
    save_file({"w": torch.ones(3)}, str(weights))


def test_trainer_refuses_weights_that_are_not_the_recorded_ones(tmp_path):
    folder = student_folder(tmp_path)
    settings = load_config(None, ["refine.student.kind=ssd"]).refine.student.ssd
    data = TrainingData([], lambda uri: np.zeros((1, 1, 3), np.uint8))
    assert train_ssd_student(data, folder, settings, False)["kind"] == "ssd"  # as recorded
    tamper(folder / WEIGHTS)
    with pytest.raises(StudentWeightsRefused) as refused:
        train_ssd_student(data, folder, settings, False)
    message = str(refused.value)
    assert str(folder / WEIGHTS) in message and "refusing to load it" in message


def test_ssd_coco_refuses_student_weights_with_another_sha256(tmp_path):
    folder = student_folder(tmp_path)
    weights = folder / WEIGHTS
    recorded = json.loads((folder / SUMMARY).read_text())["sha256"]
    detector = SSDCocoDetector(weights=str(weights), sha256=recorded, source_name="student_ssd_i1")
    assert detector.source == "student_ssd_i1@2"
    assert set(detector.state_dict(graph_state=None)) == {"w"}
    tamper(weights)
    with pytest.raises(ValueError) as refused:
        detector.state_dict(graph_state=None)
    assert str(weights) in str(refused.value) and "refusing to load it" in str(refused.value)
    with pytest.raises(ValueError, match="safetensors"):
        SSDCocoDetector(weights=str(tmp_path / "student.pt"))


def make_images(folder: Path) -> Path:
    folder.mkdir()
    for index in range(3):
        pixels = np.full((48, 64, 3), 40 * index, np.uint8)
        Image.fromarray(pixels).save(folder / f"plain_{index}.png")
    return folder


def test_no_kept_object_region_commits_the_iteration_without_a_student(tmp_path):
    images = make_images(tmp_path / "images")
    corpus = tmp_path / "corpus"
    config = load_config(None, NOTHING_KEPT)
    annotate_corpus(config, str(images), str(corpus), show_progress=False)
    summaries = refine_corpus(corpus, 1, config, show_progress=False)
    assert [s.iteration for s in summaries] == [1]
    assert Corpus(corpus).is_committed(1)
    info = json.loads((corpus / "iteration=1" / "run.json").read_text())
    assert "no object region" in info["student_skipped"] and "student" not in info
    assert not any("student" in source for source in info["annotators"])
    assert not (corpus / "models" / "iteration=1" / WEIGHTS).exists()
    # Found trained but tampered with: refused, naming the file, not run.
    folder = corpus / "models" / "iteration=2"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(folder / WEIGHTS))
    (folder / SUMMARY).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(StudentWeightsRefused, match=str(folder / WEIGHTS)):
        train_ssd_student_of(Corpus(corpus), 2, config, show_progress=False)


def test_a_crafted_training_checkpoint_is_not_unpickled(tmp_path):
    """A checkpoint lies in the corpus folder: it is read with ``weights_only``."""
    import os
    import pickle

    from pipelines.ssd_student import CHECKPOINT, load_checkpoint

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"network": Payload()}, tmp_path / CHECKPOINT)
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path, network, optimizer)
    assert not marker.exists()
