"""No code runs from a corpus (issue 24): a stored config cannot make the engine unpickle a
file it did not train, and a training checkpoint in a corpus loads without unpickling code.
The crafted files are real: unpickled, they would create ``marker``."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from engine.corpus import Corpus, CorpusError
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.florence2_student import load_checkpoint
from pipelines.refine import trust_weights
from pipelines.stored import check_stored_config
from tests.fixtures.export_helpers import write_synthetic_corpus


class Payload:
    """Unpickled, it runs ``os.system``: what a hostile ``.pt`` carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker)}, path)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    return root


def store_config(corpus: Path, overrides: list[str]) -> None:
    run = corpus / "iteration=0" / "run.json"
    info = json.loads(run.read_text())
    info["config"] = load_config(None, overrides).to_dict()
    run.write_text(json.dumps(info))


def test_refine_refuses_a_student_named_by_the_corpus(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLD_TRUST_STORE", str(tmp_path / "trusted.json"))
    marker = tmp_path / "marker"
    evil = crafted(tmp_path / "elsewhere" / "student.pt", marker)
    store_config(corpus, [f"refine.student.model={evil}"])
    assert main(["refine", str(corpus), "--iterations", "1", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "refine.student.model" in error and "refusing" in error
    assert not marker.exists()


def test_pickles_inside_the_corpus_need_the_trust_store(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("FLD_TRUST_STORE", str(tmp_path / "trusted.json"))
    marker = tmp_path / "marker"
    inside = crafted(corpus / "models" / "iteration=1" / "student.pt", marker)
    tree = {"annotators": [{"name": "yolo", "weights": str(inside), "sha256": "0" * 64}]}
    with pytest.raises(CorpusError, match="trust store"):
        check_stored_config(Corpus(corpus), 1, tree)
    from engine.records import file_sha256

    trust_weights(file_sha256(inside), inside)  # as `fld refine` does after training it
    assert check_stored_config(Corpus(corpus), 1, tree) is tree
    assert not marker.exists()


def test_installed_models_names_and_user_overrides_pass(corpus):
    tree = load_config(None, []).to_dict()  # the offline default: models in site-packages
    tree["annotators"].append({"name": "yolo", "weights": "yolov8n.yaml"})
    tree["annotators"].append({"name": "yolo", "weights": "/tmp/user-choice.pt"})
    overridden = {"annotators.8.weights"}
    assert check_stored_config(Corpus(corpus), 0, tree, overridden) is tree
    with pytest.raises(CorpusError, match="annotators.8.weights = /tmp/user-choice.pt"):
        check_stored_config(Corpus(corpus), 0, tree)


def test_a_crafted_training_checkpoint_is_not_unpickled(tmp_path):
    marker = tmp_path / "marker"
    crafted(tmp_path / "train" / "checkpoint-4" / "state.pt", marker)
    (tmp_path / "train" / "checkpoint.json").write_text(json.dumps({"folder": "checkpoint-4"}))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "train")
    assert not marker.exists()
