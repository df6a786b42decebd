"""Compaction of committed iterations (engine/compact.py) on synthetic corpora: the
per-shard files of an iteration merged into parts, the layout and manifest it leaves, and
what it refuses or leaves alone. Readers before and after, the crash points, and
compaction by ``fld run`` on real photos are in ``tests/integration/test_compact.py``."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from engine.compact import compact_iteration, group_shards
from engine.corpus import COMPACTED, Corpus, CorpusError
from engine.schemas import TABLES
from tests.fixtures.compaction import (
    N_REGIONS,
    SHARD_ROWS,
    TARGET_ROWS,
    data_files,
    fresh,
    full_tables,
    prepared,
    snapshot,
    synthetic_corpus,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """fld run's default layout: 13 shards of about 1,600 region rows, into 4 parts."""
    return prepared(tmp_path_factory.mktemp("compact"), N_REGIONS, SHARD_ROWS, TARGET_ROWS)


def test_grouping_is_consecutive_and_even():
    assert group_shards([1600] * 12 + [800], 5_000) == [
        [0, 1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10, 11, 12],
    ]
    assert group_shards([10, 10, 10], 1_000) == [[0, 1, 2]]
    assert group_shards([0, 0, 0], 5) == [[0, 1, 2]]
    assert group_shards([900, 10, 10, 900], 1_000) == [[0, 1], [2, 3]]  # 910 + 910
    assert sum(group_shards([3] * 100, 50), []) == list(range(100))


def test_layout_after_compaction(base):
    root = base["reference"]
    result = base["result"]
    assert result["status"] == "compacted"
    assert (result["shards"], result["parts"]) == (13, 4)
    assert (result["files_before"], result["files_after"], result["removed"]) == (65, 20, 65)
    assert data_files(root, "shard=*") == []
    assert len(list((root / "iteration=0" / "_shards").glob("*.json"))) == 13  # markers stay
    manifest = json.loads((root / "iteration=0" / COMPACTED).read_text())
    assert [part["shards"] for part in manifest["parts"]] == [
        [f"{i:05d}" for i in group] for group in ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12])
    ]
    counts = Corpus(root).run_info(0)["counts"]["rows"]
    assert manifest["rows"] == counts
    # The uncompacted copy's shard files: each part's per-shard row counts (what readers
    # slice a part by) must be those files' own counts, not only add up to the part's.
    original = base["root"] / "iteration=0"
    for table, schema in TABLES.items():
        files = Corpus(root).table_files(table)
        assert [p.name for p in files] == [f"part={i:05d}.parquet" for i in range(4)]
        for part, path in zip(manifest["parts"], files, strict=True):
            assert pq.read_schema(path).remove_metadata().equals(schema), path
            assert pq.read_metadata(path).num_rows == part["rows"][table]
            assert part["shard_rows"][table] == [
                pq.read_metadata(original / table / f"shard={name}.parquet").num_rows
                for name in part["shards"]
            ], (table, part["name"])
        assert sum(p["rows"][table] for p in manifest["parts"]) == counts[table]


def test_compacting_again_does_nothing(base):
    root = base["work"] / "again"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(base["reference"], root, copy_function=shutil.copy2)
    before = snapshot(root)
    result = compact_iteration(root, 0, TARGET_ROWS)
    assert result["status"] == "already compacted" and result["removed"] == 0
    assert compact_iteration(root, 0, 1_000)["status"] == "already compacted"
    assert snapshot(root) == before


def test_one_shard_is_left_alone(tmp_path):
    root = tmp_path / "one"
    synthetic_corpus.write_corpus(root, 3_000, rows_per_shard=SHARD_ROWS * 10, processes=1)
    before = snapshot(root)
    result = compact_iteration(root, 0, 1_000)
    assert result["status"] == "nothing to do" and result["files_after"] == 5
    assert snapshot(root) == before


def test_rows_that_disagree_with_the_markers_stop_it_before_the_switch(base):
    root = fresh(base, "disagree")
    marker = root / "iteration=0" / "_shards" / "00005.json"
    recorded = json.loads(marker.read_text())
    recorded["rows"]["regions"] += 1
    marker.write_text(json.dumps(recorded))
    with pytest.raises(CorpusError, match="its marker says"):
        compact_iteration(root, 0, TARGET_ROWS)
    assert not (root / "iteration=0" / COMPACTED).exists()
    assert len(data_files(root, "shard=*")) == 65
    assert full_tables(root) == base["tables"]


def test_uncommitted_or_incomplete_iterations_are_refused(base, tmp_path):
    root = fresh(base, "incomplete")
    os.unlink(root / "iteration=0" / "regions" / "shard=00003.parquet")
    with pytest.raises(CorpusError, match="shard 00003 has no file for regions"):
        compact_iteration(root, 0, TARGET_ROWS)
    os.unlink(root / "iteration=0" / "_COMMITTED")
    with pytest.raises(CorpusError, match="not committed"):
        compact_iteration(root, 0, TARGET_ROWS)
