"""Resume verifies what it trusts, and ``fld verify`` checks a committed corpus (issue 24):
a shard whose file was deleted or truncated, or whose marker was renamed or corrupted, is
redone instead of committed; ``fld verify`` names every bad file and exits 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.query import connect
from pipelines.annotate import annotate_corpus
from pipelines.cli import main
from pipelines.config import load_config

DEMO = Path(__file__).parents[2] / "demo" / "images"
TABLE_NAMES = ("images", "texts", "regions", "phrases", "errors")


def row_counts(corpus: Path) -> dict[str, int]:
    connection = connect(corpus)
    return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLE_NAMES}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The demo images annotated in process, in shards of 2 (4 shards)."""
    out = tmp_path_factory.mktemp("verify") / "reference"
    config = load_config(None, ["run.executor=local", "run.shard_size=2"])
    annotate_corpus(config, str(DEMO), str(out), False)
    return out


def test_a_fresh_corpus_verifies(reference, capsys):
    assert main(["verify", str(reference)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_resume_redoes_damaged_shards_instead_of_committing_them(reference, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference, corpus)
    iteration = corpus / "iteration=0"
    # An interrupted run: not yet committed.
    (iteration / "_COMMITTED").unlink()
    (iteration / "run.json").unlink()
    (iteration / "regions" / "shard=00001.parquet").unlink()  # deleted, marker kept
    truncated = iteration / "texts" / "shard=00002.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    markers = iteration / "_shards"
    (markers / "00003.json").unlink()
    shutil.copy(markers / "00000.json", markers / "00003.json")  # a renamed marker
    config = load_config(None, ["run.executor=local", "run.shard_size=2"])
    summary = annotate_corpus(config, str(DEMO), str(corpus), False)
    err = capsys.readouterr().err
    assert summary.shards_run == 3, err
    assert "shard=00001.parquet: missing" in err and "shard=00002.parquet: not a readable" in err
    assert "names shard 0, not 00003" in err
    assert row_counts(corpus) == row_counts(reference)
    info = json.loads((iteration / "run.json").read_text())
    assert (
        info["counts"]["rows"]
        == json.loads((reference / "iteration=0" / "run.json").read_text())["counts"]["rows"]
    )
    assert main(["verify", str(corpus)]) == 0


def test_verify_names_every_bad_file_of_a_committed_corpus(reference, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference, corpus)
    iteration = corpus / "iteration=0"
    damaged = iteration / "phrases" / "shard=00001.parquet"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size, footer intact: only the SHA-256 tells
    damaged.write_bytes(bytes(data))
    (iteration / "regions" / "shard=00002.parquet").unlink()
    (iteration / "_shards" / "00003.json").write_text("{not json")
    assert main(["verify", str(corpus)]) == 1
    out = capsys.readouterr().out
    assert "phrases/shard=00001.parquet: its SHA-256 is not the one its marker recorded" in out
    assert "regions/shard=00002.parquet: missing" in out
    assert "00003.json: not a shard marker" in out
    assert "4 problem(s)" in out  # and so shard 3 has no marker
