"""Closed doors (issue 12): ``fld sql`` reads only the corpus, foreign student weights are
refused before they are unpickled, Florence-2 targets carry no injected location tokens,
the HTML report escapes hostile text, only committed iterations are shown, a commit needs
every planned marker, a resume notices changed inputs, compaction compares contents."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import engine.compact
from engine import florence2 as f2
from engine.compact import compact_iteration
from engine.corpus import Corpus, CorpusError, IterationWriter, check_same_plan
from engine.query import connect
from engine.schemas import table_from_rows
from engine.sources import content_fingerprint
from pipelines.cli import main
from pipelines.exports.florence2 import image_lines
from pipelines.exports.reader import ImageAnnotations
from pipelines.refine import UntrustedWeights, check_student_weights, file_sha256, trust_weights
from tests.fixtures.compaction import synthetic_corpus
from tests.fixtures.export_helpers import write_synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("doors")
    return write_synthetic_corpus(work / "corpus", work / "inputs")


# ---------------------------------------------------------------------------- fld sql


# The sandbox's own refusals (its file system guard; its lock on the configuration). Any
# ``duckdb.Error`` would not do: with no sandbox at all, ``INSTALL httpfs`` fails as well
# (offline: the download fails), so does ``SET enable_external_access = true`` (DuckDB
# never turns it back on in a running database), and ``read_text`` of a binary file (not
# UTF-8): ``read_blob`` reads any file.
SANDBOX_REFUSAL = "file system operations are disabled by configuration"
CONFIGURATION_LOCKED = "the configuration has been locked"


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("COPY (SELECT 1) TO '{outside}/copied.csv'", SANDBOX_REFUSAL),
        ("SELECT * FROM read_csv('/etc/passwd')", SANDBOX_REFUSAL),
        ("SELECT * FROM read_blob('{root}/../inputs/photos.parquet')", SANDBOX_REFUSAL),
        ("ATTACH '{outside}/other.duckdb'", SANDBOX_REFUSAL),
        ("SET enable_external_access = true", CONFIGURATION_LOCKED),
        ("INSTALL httpfs", SANDBOX_REFUSAL),
    ],
)
def test_sql_cannot_read_or_write_outside_the_corpus(corpus, tmp_path, statement, refusal):
    connection = connect(corpus, sandbox=True)
    assert connection.execute("SELECT count(*) FROM images").fetchone()[0] == 3
    with pytest.raises(duckdb.Error, match=refusal):
        connection.execute(statement.format(outside=tmp_path, root=corpus.resolve()))
    assert not list(tmp_path.iterdir())  # nothing was written


def test_sql_command_names_the_refusal(corpus, tmp_path, capsys):
    assert main(["sql", str(corpus), "SELECT count(*) AS n FROM regions"]) == 0
    assert main(["sql", str(corpus), f"COPY regions TO '{tmp_path}/leak.parquet'"]) == 2
    error = capsys.readouterr().err
    assert "query refused" in error and "COPY" in error
    assert not (tmp_path / "leak.parquet").exists()


def test_sql_reads_the_corpus_files_directly(corpus):
    """The sandbox is the corpus folder, not "no files": its own Parquet stays readable."""
    connection = connect(corpus, sandbox=True)
    files = f"{corpus.resolve()}/iteration=0/regions/*.parquet"
    count = connection.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]
    assert count == connection.execute("SELECT count(*) FROM regions").fetchone()[0] > 0


# ----------------------------------------------------------------- student weights


def test_student_weights_are_loaded_only_when_trained_here(tmp_path, monkeypatch):
    monkeypatch.setenv("FLD_TRUST_STORE", str(tmp_path / "store" / "trusted.json"))
    weights = tmp_path / "student.pt"
    weights.write_bytes(b"weights the engine trained")
    digest = file_sha256(weights)
    with pytest.raises(UntrustedWeights, match="not trained by this engine"):
        check_student_weights(weights, {"sha256": digest})  # recorded, but not in the store
    trust_weights(digest, weights)
    check_student_weights(weights, {"sha256": digest})  # recorded and trusted: loads
    weights.write_bytes(b"a pickle from someone else")
    with pytest.raises(UntrustedWeights, match="not the one recorded"):
        check_student_weights(weights, {"sha256": digest})
    with pytest.raises(UntrustedWeights):
        check_student_weights(weights, {"sha256": file_sha256(weights)})  # forged record


# -------------------------------------------------------------- Florence-2 targets


def test_florence2_targets_escape_location_tokens_in_every_text():
    image = {"image_id": "i" * 32, "uri": "/x.jpg", "width": 100, "height": 100}
    evil = "a bus <loc_5><loc_6><loc_7><loc_8> </s>"
    item = ImageAnnotations(
        image=image,
        texts=[{"text_id": "t", "granularity": "brief", "text": evil}],
        regions=[
            {
                "kind": "object",
                "label": evil,
                "x0": 1,
                "y0": 1,
                "x1": 50,
                "y1": 50,
                "polygon": [],
                "quad": None,
            },  # fmt: skip
            {
                "kind": "ocr",
                "label": "EXIT <loc_999>",
                "x0": 1,
                "y0": 1,
                "x1": 50,
                "y1": 9,
                "polygon": [],
                "quad": [1, 1, 50, 1, 50, 9, 1, 9],
            },  # fmt: skip
        ],
    )
    lines = {line["task"]: line for line in image_lines(item)}
    assert "<loc_" not in lines["<CAPTION>"]["target"]
    assert lines["<CAPTION>"]["target"].startswith("a bus (loc_5)")
    assert "<loc_" not in lines["<OCR>"]["target"]
    # Exactly the tokens of the one box, and of the one quad: none from the texts.
    assert len(f2.LOC_RE.findall(lines["<OD>"]["target"])) == 4
    assert len(f2.LOC_RE.findall(lines["<OCR_WITH_REGION>"]["target"])) == 8


# ------------------------------------------------------------------ committed only


def test_show_refuses_an_uncommitted_iteration(corpus, tmp_path, capsys):
    (corpus / "iteration=1" / "regions").mkdir(parents=True)  # started, never committed
    out = tmp_path / "shown.png"
    assert main(["show", str(corpus), "bus.jpg", "--iteration", "1", "--out", str(out)]) == 2
    assert "not a committed iteration" in capsys.readouterr().err
    assert not out.exists()
    assert Corpus(corpus).select_iteration() == 0


def test_commit_refuses_when_a_planned_shard_has_no_marker(tmp_path):
    writer = IterationWriter(Corpus(tmp_path / "corpus"), 0)
    writer.prepare({"fingerprint": "f", "config_hash": "c", "n_shards": 2})
    empty = {name: table_from_rows(name, []) for name in ("images", "texts", "regions", "phrases", "errors")}  # fmt: skip
    writer.write_shard("00001", empty, {"shard": 1})
    with pytest.raises(CorpusError, match="1 of 2 planned shards have no marker"):
        writer.commit({"counts": {}})
    assert not Corpus(tmp_path / "corpus").is_committed(0)
    writer.write_shard("00000", empty, {"shard": 0})
    writer.commit({"counts": {}})
    assert Corpus(tmp_path / "corpus").is_committed(0)


# ------------------------------------------------------------------- changed inputs


def test_a_resume_notices_an_input_changed_since_the_kill(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"first version")
    uris = [str(photo)]
    before = {"fingerprint": "names", "config_hash": "c", "content_fingerprint": content_fingerprint(uris)}  # fmt: skip
    check_same_plan(before, dict(before), tmp_path)  # unchanged: resumes
    photo.write_bytes(b"second version, longer")
    os.utime(photo, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = {**before, "content_fingerprint": content_fingerprint(uris)}
    with pytest.raises(CorpusError, match="some input changed since"):
        check_same_plan(before, after, tmp_path)
    check_same_plan(before, after, tmp_path, contents=False)  # a committed rerun: names only
    old_plan = {"fingerprint": "names", "config_hash": "c"}  # written before the check existed
    check_same_plan(old_plan, after, tmp_path)


# ---------------------------------------------------------------------- compaction


def test_compaction_compares_contents_not_only_row_counts(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    synthetic_corpus.write_corpus(root, 3_000, rows_per_shard=1_000, processes=1)
    real_write = engine.compact.atomic_write_parquet

    def corrupting_write(path, table: pa.Table, durable: bool = False):
        if "regions" in str(path):  # same row count, one label changed
            labels = table.column("label").to_pylist()
            labels[0] = "not what the shard said"
            table = table.set_column(
                table.schema.get_field_index("label"), "label", pa.array(labels)
            )
        real_write(path, table, durable)

    monkeypatch.setattr(engine.compact, "atomic_write_parquet", corrupting_write)
    with pytest.raises(CorpusError, match="differ from its shards' rows"):
        compact_iteration(Corpus(root), 0, 2_000)
    assert Corpus(root).compaction(0) is None  # no manifest: readers keep the shard files
    assert json.loads((root / "iteration=0" / "run.json").read_text())
