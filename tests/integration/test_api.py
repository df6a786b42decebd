"""``import fld`` (issue 25): the Python API runs the CLI's code on the demo images in
process, and what it returns is what a notebook user reads: DuckDB relations, Arrow tables,
PIL images, a Hugging Face dataset that loads back."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import fld
from engine.query import QueryRefused

DEMO = Path(__file__).parents[2] / "demo" / "images"
LOCAL = ["run.executor=local", "run.shard_size=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> fld.Corpus:
    out = tmp_path_factory.mktemp("api") / "corpus"
    return fld.run(DEMO, out, overrides=LOCAL, progress=False)


def test_run_open_and_sql(corpus):
    assert corpus.iterations == [0]
    again = fld.open(corpus.path)
    relation = again.sql("SELECT count(*) AS n FROM images")
    assert isinstance(relation, duckdb.DuckDBPyRelation)
    assert relation.fetchall() == [(7,)]
    frame = again.sql("SELECT label, count(*) AS n FROM regions WHERE kept GROUP BY label").df()
    assert "bus" in set(frame["label"])
    assert again.sql("SELECT * FROM regions").arrow().read_all().num_rows > 0


def test_sql_is_read_only(corpus, tmp_path):
    with pytest.raises(QueryRefused):
        corpus.sql(f"COPY regions TO '{tmp_path}/x.parquet'")
    assert not (tmp_path / "x.parquet").exists()


def test_stats_show_and_export(corpus, tmp_path):
    stats = corpus.stats()
    kinds = stats.tables["regions per kind"].to_pylist()
    assert {row["kind"] for row in kinds} >= {"object", "ocr"}
    assert "regions per kind" in str(stats)
    drawn = corpus.show("bus.jpg")
    assert drawn.width >= 810 and drawn.info["rows"] > 0  # the photo plus a legend strip
    summary = corpus.export("coco", tmp_path / "coco")
    assert summary["counts"]["images"] == 7


def test_a_second_iteration_and_its_diff(corpus):
    overrides = [*LOCAL, "run.iteration=1", "filters.confidence.default=0.6"]
    fld.run(DEMO, corpus.path, overrides=overrides, progress=False)
    assert corpus.iterations == [0, 1]
    diff = corpus.diff(0, 1).to_pylist()
    assert sum(row["removed"] for row in diff) > 0  # a stricter filter keeps fewer boxes
    assert sum(row["added"] for row in diff) == 0


def test_to_hf_dataset_loads_back(corpus, tmp_path):
    import datasets

    dataset = corpus.to_hf_dataset(iteration=0)
    assert len(dataset) == 7
    dataset.save_to_disk(str(tmp_path / "hf"))
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    bus = next(row for row in loaded if "bus" in {o["label"] for o in row["objects"]})
    assert bus["image"].size == (bus["width"], bus["height"])
    assert all(len(o["bbox"]) == 4 and 0 < o["score"] <= 1 for o in bus["objects"])
    assert bus["texts"]["brief"]
