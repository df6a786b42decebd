"""The benchmarks' synthetic corpus (bench/synthetic_corpus.py) is a valid committed corpus:
contract schemas, ``fld stats`` reports exactly the rows that were generated, and the rows
keep the contract's rules (boxes inside their image, unique row ids)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.corpus import Corpus
from engine.query import connect, stats_report
from engine.schemas import TABLES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synthetic_corpus  # noqa: E402

N_REGIONS = 20_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "corpus"
    summary = synthetic_corpus.write_corpus(root, N_REGIONS, rows_per_shard=8_000, processes=1)
    return root, summary


def reported_rows(report: str) -> dict[str, tuple[int, int]]:
    """{table: (rows, kept)} from the 'rows per table and iteration' section of fld stats."""
    section = report.split("== rows per table and iteration ==")[1].split("\n== ")[0]
    lines = [line.split() for line in section.strip().splitlines()[2:]]  # header, rule
    return {table: (int(rows), int(kept)) for table, _iteration, rows, kept in lines}


def test_committed_with_contract_schemas(corpus):
    root, summary = corpus
    assert Corpus(root).iterations() == [0]
    assert summary["n_shards"] == 3 and summary["n_files"] == 15
    for name, schema in TABLES.items():
        files = Corpus(root).table_files(name)
        assert len(files) == 3
        for path in files:
            assert pq.read_schema(path).remove_metadata().equals(schema), (name, path)


def test_fld_stats_reports_the_generated_rows(corpus):
    root, summary = corpus
    counts = summary["counts"]
    assert counts["rows"]["regions"] == N_REGIONS
    assert all(counts["rows"][name] > 0 for name in TABLES)  # every table has rows
    reported = reported_rows(stats_report(root))
    assert {name: rows for name, (rows, _) in reported.items()} == counts["rows"]
    for name, kept in counts["kept"].items():
        assert reported[name][1] == kept
    assert 0.5 < counts["kept"]["regions"] / N_REGIONS < 0.75
    assert Corpus(root).run_info(0)["counts"]["rows"] == counts["rows"]


def test_rows_keep_the_contract(corpus):
    root, _ = corpus
    connection = connect(root)
    outside = connection.execute(
        "SELECT count(*) FROM regions r JOIN images i USING (image_id, iteration) "
        "WHERE NOT (0 <= r.x0 AND r.x0 < r.x1 AND r.x1 <= i.width "
        "AND 0 <= r.y0 AND r.y0 < r.y1 AND r.y1 <= i.height)"
    ).fetchone()[0]
    assert outside == 0
    for table, row_id in (("regions", "region_id"), ("texts", "text_id"), ("phrases", "triplet_id")):  # fmt: skip
        total, distinct = connection.execute(
            f"SELECT count(*), count(DISTINCT {row_id}) FROM {table}"
        ).fetchone()
        assert total == distinct, table
    # Kinds, quads and drop reasons as the contract has them.
    kinds = dict(connection.execute("SELECT kind, count(*) FROM regions GROUP BY ALL").fetchall())
    assert set(kinds) == {"object", "ocr", "dense"}
    assert connection.execute(
        "SELECT count(*) FROM regions WHERE (kind = 'ocr') <> (quad IS NOT NULL) "
        "OR kept = (drop_reason IS NOT NULL)"
    ).fetchone() == (0,)
    # A phrase's span is where the phrase stands in its text.
    assert connection.execute(
        "SELECT count(*) FROM phrases p JOIN texts t USING (text_id) "
        "WHERE substr(t.text, p.char_start + 1, p.char_end - p.char_start) <> p.phrase"
    ).fetchone() == (0,)


def test_shard_tables_is_deterministic():
    first = synthetic_corpus.shard_tables(2_000, shard=3, seed=7)
    again = synthetic_corpus.shard_tables(2_000, shard=3, seed=7)
    assert all(first[name].equals(again[name]) for name in TABLES)
    assert first["regions"].num_rows == 2_000
