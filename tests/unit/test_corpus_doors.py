"""A corpus's rows are its sender's data (issue 24): a changed ``images.uri`` must not make
``show``, ``report`` or ``export`` read a file or URL the input never held, and a label is
text, never matplotlib mathtext."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.corpus import uri_within_input
from pipelines.cli import main
from pipelines.report import write_report
from tests.fixtures.export_helpers import write_synthetic_corpus


@pytest.mark.parametrize(
    ("uri", "source", "allow_outside", "within"),
    [
        ("/data/photos/a.jpg", "/data/photos", False, True),
        ("/data/photos/sub/x.tar::a.jpg", "/data/photos", False, True),
        ("/data/photos/../secret.jpg", "/data/photos", False, False),
        ("/etc/passwd", "/data/photos", False, False),
        ("/data/photos2/a.jpg", "/data/photos", False, False),
        ("https://example.org/a.jpg", "/data/photos", False, False),
        ("https://example.org/a.jpg", "/data/urls.csv", False, True),
        ("/data/a.jpg", "/data/urls.csv", False, True),
        ("/etc/passwd", "/data/urls.csv", False, False),
        ("/etc/passwd", "/data/urls.csv", True, True),
        ("/data/x.parquet::row=3", "/data/x.parquet", False, True),
        ("/data/shards/s1.tar::a.jpg", "/data/shards/s*.tar", False, True),
        ("/data/other/s1.tar::a.jpg", "/data/shards/s*.tar", False, False),
        ("s3://bucket/photos/a.jpg", "s3://bucket/photos", False, True),
        ("s3://bucket/private/a.jpg", "s3://bucket/photos", False, False),
        ("/data/a.jpg", "", False, False),
    ],
)
def test_uris_within_the_recorded_input(uri, source, allow_outside, within):
    assert uri_within_input(uri, source, allow_outside) is within


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    """A synthetic corpus whose first image's URI was changed to a file outside its input."""
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    secret = tmp_path / "secret.jpg"
    shutil.copyfile(tmp_path / "inputs" / "bus.jpg", secret)
    path = corpus / "iteration=0" / "images" / "shard=00000.parquet"
    table = pq.read_table(path)
    uris = pc.replace_substring(
        table.column("uri"), str(tmp_path / "inputs" / "bus.jpg"), str(secret)
    )
    pq.write_table(table.set_column(table.schema.get_field_index("uri"), "uri", uris), path)
    return corpus, secret


def test_show_export_and_report_do_not_read_outside_the_input(hostile, tmp_path, capsys):
    corpus, secret = hostile
    assert main(["show", str(corpus), "b" * 32, "--out", str(tmp_path / "b.png")]) == 1
    assert "not under the input" in capsys.readouterr().err
    out = tmp_path / "yolo"
    assert main(["export", str(corpus), "--format", "yolo", "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().err
    assert not any("secret" in p.name for p in (out / "images").iterdir())
    assert len(list((out / "images").iterdir())) == 2  # the other two images
    report = write_report(corpus, tmp_path / "report.html", samples=3).read_text()
    assert "not under the input" in report


def test_a_label_is_not_mathtext(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    path = corpus / "iteration=0" / "regions" / "shard=00000.parquet"
    table = pq.read_table(path)
    labels = pc.replace_substring(table.column("label"), "dog", r"$\frac{a}{$")
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", labels), path)
    report = write_report(corpus, tmp_path / "report.html").read_text()
    assert "frac{a}" in report


def test_glob_characters_in_a_corpus_path_are_literal(tmp_path):
    """DuckDB took ``c[1]/...`` as a glob and read the corpus at ``c1`` instead."""
    from engine.query import connect
    from engine.schemas import TABLES

    own = write_synthetic_corpus(tmp_path / "c[1]", tmp_path / "inputs-a")
    other = write_synthetic_corpus(tmp_path / "c1", tmp_path / "inputs-b")
    for shard in (other / "iteration=0" / "regions").glob("*.parquet"):
        pq.write_table(TABLES["regions"].empty_table(), shard)
    assert connect(other).execute("SELECT count(*) FROM regions").fetchone()[0] == 0
    assert connect(own).execute("SELECT count(*) FROM regions").fetchone()[0] > 0
