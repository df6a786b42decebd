"""``run.max_failed_shards``: a shard that fails with an error (not a crashed worker) is
listed; up to that many, the run goes on, commits nothing and says which; one more stops
it at once; a rerun retries only what is missing. The real ``annotate_corpus`` with the
in-process executor and a model-free config; the failure is injected into one shard."""

from __future__ import annotations

import pytest
import yaml
from PIL import Image

from engine.corpus import Corpus
from pipelines import annotate
from pipelines.annotate import ShardProcessor, ShardsFailed, annotate_corpus
from pipelines.config import load_config

CONFIG = {
    "annotators": [{"name": "chaos"}],  # no model, no row: a pipeline that only reads
    "filters": {"text_complexity": {"enabled": False}, "phrase_confidence": {"enabled": False}},
    "run": {"executor": "local", "shard_size": 2},
}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.new("RGB", (40 + index, 32), (index * 40, 90, 200)).save(folder / f"{index}.png")
    return folder


def config(tmp_path, max_failed: int):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return load_config(path, [f"run.max_failed_shards={max_failed}"])


def fail_shard(monkeypatch, index: int) -> None:
    original = ShardProcessor.process

    def process(self, shard):
        if shard.index == index:
            raise RuntimeError("injected failure")
        return original(self, shard)

    monkeypatch.setattr(annotate.ShardProcessor, "process", process)


def test_failed_shards_are_listed_nothing_committed_and_a_rerun_retries(tmp_path, images, monkeypatch):  # fmt: skip
    out = tmp_path / "corpus"
    fail_shard(monkeypatch, 1)
    with pytest.raises(ShardsFailed, match=r"1 shard\(s\) failed \(shard 00001: RuntimeError: injected failure\)"):  # fmt: skip
        annotate_corpus(config(tmp_path, 1), str(images), str(out), show_progress=False)
    writer_dir = out / "iteration=0"
    assert sorted(p.name for p in (writer_dir / "_shards").iterdir()) == [
        "00000.json",
        "00002.json",
    ]
    assert not Corpus(out).is_committed(0)

    monkeypatch.undo()
    summary = annotate_corpus(config(tmp_path, 1), str(images), str(out), show_progress=False)
    assert (summary.shards_done_before, summary.shards_run) == (2, 1)
    assert summary.counts["rows"]["images"] == 6 and Corpus(out).is_committed(0)


def test_one_failure_past_the_limit_stops_the_run(tmp_path, images, monkeypatch):
    out = tmp_path / "corpus"
    fail_shard(monkeypatch, 0)
    with pytest.raises(RuntimeError, match="injected failure"):
        annotate_corpus(config(tmp_path, 0), str(images), str(out), show_progress=False)
    assert not Corpus(out).is_committed(0)
