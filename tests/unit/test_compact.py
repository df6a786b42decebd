"""Compaction of committed iterations (engine/compact.py): the per-shard files of an
iteration merged into parts, with readers (SQL views, ``fld stats``, the export reader)
seeing exactly the same rows, in the same order, before, after, and at every point a
compaction can be interrupted; then automatic compaction at the end of ``fld run`` on
real photos, and a killed compaction finished by the rerun."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.compact import compact_iteration, group_shards
from engine.corpus import COMPACTED, Corpus, CorpusError
from engine.query import connect, stats_report
from engine.schemas import ROW_ID, TABLES
from pipelines.exports import export_corpus
from pipelines.exports.reader import CorpusReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import synthetic_corpus  # noqa: E402

N_REGIONS = 20_000
SHARD_ROWS = 1_600  # region rows per shard: fld run's default shard of 64 images
TARGET_ROWS = 5_000  # 13 shards -> 4 parts


class Crash(Exception):
    """What a simulated crash raises."""


def full_tables(root: Path) -> dict[str, list[tuple]]:
    """Every row of every table, every column exact, sorted by row id."""
    connection = connect(root)
    try:
        return {
            table: connection.sql(f"SELECT * FROM {table} ORDER BY {row_id}, iteration").fetchall()
            for table, row_id in ROW_ID.items()
        }
    finally:
        connection.close()


def streamed(root: Path) -> list[tuple]:
    """What the export reader yields (every row, dropped ones too), in its order."""
    return [
        (
            item.image["image_id"],
            item.image["uri"],
            tuple(r["region_id"] for r in item.regions),
            tuple(t["text_id"] for t in item.texts),
            tuple(p["triplet_id"] for p in item.phrases),
        )
        for item in CorpusReader(root, include_dropped=True).images()
    ]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under ``root`` by content hash and mtime."""
    return {
        path.relative_to(root).as_posix(): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def data_files(root: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob(f"iteration=0/*/{pattern}"))


def exported(root: Path, fmt: str, out: Path) -> dict[str, bytes]:
    """An export's files (``export.json`` holds its seconds: its counts only)."""
    summary = export_corpus(root, fmt, out, include_dropped=True)
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "export.json"}
    files["counts"] = json.dumps(summary["counts"], sort_keys=True).encode()
    return files


def prepared(work: Path, n_regions: int, shard_rows: int, target_rows: int) -> dict:
    """A committed synthetic corpus in ``work``, what readers see of it, and the same corpus
    compacted (into ``target_rows``) without a crash."""
    root = work / "corpus"
    synthetic_corpus.write_corpus(root, n_regions, rows_per_shard=shard_rows, processes=1)
    tables, order = full_tables(root), streamed(root)
    reference = work / "reference"
    shutil.copytree(root, reference)
    result = compact_iteration(reference, 0, target_rows)
    return {
        "work": work,
        "root": root,
        "tables": tables,
        "streamed": order,
        "reference": reference,
        "result": result,
        "target_rows": target_rows,
        "compacted": snapshot(reference / "iteration=0"),
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """fld run's default layout: 13 shards of about 1,600 region rows, into 4 parts."""
    return prepared(tmp_path_factory.mktemp("compact"), N_REGIONS, SHARD_ROWS, TARGET_ROWS)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """For the crash points: 6 shards of 800 region rows, into 3 parts."""
    return prepared(tmp_path_factory.mktemp("crash"), 4_800, 800, 1_600)


def fresh(base: dict, name: str) -> Path:
    copy = base["work"] / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base["root"], copy)
    return copy


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
    for table, schema in TABLES.items():
        files = Corpus(root).table_files(table)
        assert [p.name for p in files] == [f"part={i:05d}.parquet" for i in range(4)]
        for part, path in zip(manifest["parts"], files, strict=True):
            assert pq.read_schema(path).remove_metadata().equals(schema), path
            assert pq.read_metadata(path).num_rows == part["rows"][table]
            assert sum(part["shard_rows"][table]) == part["rows"][table]
        assert sum(p["rows"][table] for p in manifest["parts"]) == counts[table]


def test_readers_see_the_same_rows_and_order(base):
    root = fresh(base, "readers")
    stats = stats_report(root)
    exports = {fmt: exported(root, fmt, base["work"] / f"{fmt}-before") for fmt in ("florence2", "coco")}  # fmt: skip
    compact_iteration(root, 0, TARGET_ROWS)
    assert data_files(root, "shard=*") == [] and len(data_files(root, "part=*")) == 20
    assert full_tables(root) == base["tables"]
    assert stats_report(root) == stats
    assert streamed(root) == base["streamed"]
    for fmt, files in exports.items():
        assert exported(root, fmt, base["work"] / f"{fmt}-after") == files, fmt
    # Another batch size: the shard of a part's row does not depend on where batches end.
    small_batches = CorpusReader(root, include_dropped=True, batch_rows=7)
    assert [item.image["image_id"] for item in small_batches.images()] == [
        row[0] for row in base["streamed"]
    ]


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


def crash_at(monkeypatch, name: str, n: int) -> None:
    """Make the ``n``-th call of ``os.<name>`` from now raise ``Crash`` (before acting)."""
    real = getattr(os, name)
    calls = [0]

    def crashing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Crash(f"os.{name} call {n}")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, crashing)


def count_calls(monkeypatch, base, name: str) -> int:
    """How many times an uninterrupted compaction calls ``os.<name>``."""
    root = fresh(base, f"count-{name}")
    real, calls = getattr(os, name), [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, name, counting)
        compact_iteration(root, 0, base["target_rows"])
    return calls[0]


def check_crash_then_finish(base, root: Path, expected_status: str) -> None:
    """Readers see the original rows in the original order; the next compaction completes
    and leaves the same bytes as one that was never interrupted."""
    assert full_tables(root) == base["tables"]
    assert streamed(root) == base["streamed"]
    assert compact_iteration(root, 0, base["target_rows"])["status"] == expected_status
    assert full_tables(root) == base["tables"]
    assert streamed(root) == base["streamed"]
    after = {k: v[0] for k, v in snapshot(root / "iteration=0").items()}
    assert after == {k: v[0] for k, v in base["compacted"].items()}
    assert not list(root.rglob(".*.tmp"))


def test_crash_while_writing_parts_or_the_manifest(small, monkeypatch):
    """Every ``os.replace`` of a compaction (15 part files, then the manifest) fails in
    turn, as a crash would leave it: the part files written so far, one temporary."""
    n_replace = count_calls(monkeypatch, small, "replace")
    assert n_replace == 3 * 5 + 1
    for n in range(1, n_replace + 1):
        root = fresh(small, "crash-replace")
        with monkeypatch.context() as patch:
            crash_at(patch, "replace", n)
            with pytest.raises(Crash):
                compact_iteration(root, 0, small["target_rows"])
        assert not (root / "iteration=0" / COMPACTED).exists(), n
        assert len(data_files(root, "part=*")) == n - 1
        assert len(list(root.rglob(".*.tmp"))) == 1
        assert len(data_files(root, "shard=*")) == 30
        check_crash_then_finish(small, root, "compacted")


def test_crash_while_deleting_shard_files(small, monkeypatch):
    """After the manifest: deleting the 30 superseded shard files fails at the first, a
    middle and the last one; readers follow the manifest, the next call finishes."""
    n_unlink = count_calls(monkeypatch, small, "unlink")
    assert n_unlink == 30
    for n in (1, 16, 30):
        root = fresh(small, "crash-unlink")
        with monkeypatch.context() as patch:
            crash_at(patch, "unlink", n)
            with pytest.raises(Crash):
                compact_iteration(root, 0, small["target_rows"])
        assert (root / "iteration=0" / COMPACTED).exists()
        assert len(data_files(root, "shard=*")) == 30 - (n - 1)
        check_crash_then_finish(small, root, "finished")


# --------------------------------------------------------------------------- fld run


LIGHT_CONFIG = """\
annotators:
  - {name: ssd_coco}
filters:
  text_complexity: {enabled: false}
  phrase_confidence: {enabled: false}
"""


def stats_counts(report: str) -> str:
    """The 'rows per table and iteration' section of fld stats."""
    return report.split("== rows per table and iteration ==")[1].split("\n== ")[0]


def test_fld_run_compacts_a_large_iteration_by_itself(tmp_path):
    """The real pipeline on the demo photos, one per shard, through the CLI: with
    ``run.compact_rows`` small, ``fld run`` compacts after the commit; ``fld stats`` and
    every row are those of the same run left uncompacted, which ``fld compact`` then
    compacts; a rerun of the compacted corpus does nothing and writes nothing."""
    from conftest import DEMO_IMAGES, run_fld
    from corpus_tools import all_rows

    plain, auto = tmp_path / "plain", tmp_path / "auto"
    common = ["run", str(DEMO_IMAGES), "--shard-size", "1", "--executor", "local", "--quiet"]
    run_fld(*common, "--out", str(plain), "--set", "run.compact_rows=0")
    assert data_files(plain, "part=*") == [] and len(data_files(plain, "shard=*")) == 35
    regions = Corpus(plain).run_info(0)["counts"]["rows"]["regions"]
    target = max(1, regions // 3)  # about three parts
    result = run_fld(*common, "--out", str(auto), "--set", f"run.compact_rows={target}")
    assert "committed iteration 0" in result.stdout
    assert "compacted iteration 0: 35 files -> " in result.stdout, result.stdout
    manifest = Corpus(auto).compaction(0)
    assert 2 <= len(manifest["parts"]) <= 4 and manifest["target_rows"] == target
    assert data_files(auto, "shard=*") == []
    assert len(data_files(auto, "part=*")) == 5 * len(manifest["parts"])

    plain_stats = run_fld("stats", str(plain)).stdout
    auto_stats = run_fld("stats", str(auto)).stdout
    assert stats_counts(auto_stats) == stats_counts(plain_stats)
    expected = all_rows(plain)
    assert all_rows(auto) == expected

    before = snapshot(auto)
    rerun = run_fld(*common, "--out", str(auto), "--set", f"run.compact_rows={target}")
    assert "nothing to do" in rerun.stdout and "compacted iteration" not in rerun.stdout
    assert snapshot(auto) == before

    compacted = run_fld("compact", str(plain), "--target-rows", str(target), "--quiet")
    assert f"compacted {plain}: 35 data files before, " in compacted.stdout, compacted.stdout
    grouping = [part["shards"] for part in Corpus(plain).compaction(0)["parts"]]
    assert grouping == [part["shards"] for part in manifest["parts"]]  # the same rows per shard
    assert all_rows(plain) == expected
    again = run_fld("compact", str(plain), "--quiet")
    assert "already compacted" in again.stdout
    missing = run_fld("compact", str(plain), "--iteration", "3", check=False)
    assert missing.returncode == 2 and "not a committed iteration" in missing.stderr


def test_rerun_finishes_a_compaction_the_kill_left(tmp_path, monkeypatch):
    """``annotate_corpus`` killed after its commit, at every step of its compaction: a rerun
    (what ``fld run`` with the same arguments calls) finishes the compaction, and the rows
    are those of an uncompacted run."""
    from conftest import DEMO_IMAGES
    from corpus_tools import all_rows

    import pipelines.annotate as annotate
    from pipelines.config import load_config

    config_path = tmp_path / "light.yaml"
    config_path.write_text(LIGHT_CONFIG)
    overrides = ["run.shard_size=1", "run.executor=local"]
    plain = tmp_path / "plain"
    reference = load_config(config_path, [*overrides, "run.compact_rows=0"])
    annotate.annotate_corpus(reference, str(DEMO_IMAGES), str(plain), show_progress=False)
    expected = all_rows(plain)
    regions = Corpus(plain).run_info(0)["counts"]["rows"]["regions"]
    config = load_config(config_path, [*overrides, f"run.compact_rows={(regions + 1) // 2}"])

    committed = tmp_path / "committed"  # killed right after its commit
    with monkeypatch.context() as patch:
        patch.setattr(annotate, "compact_if_due", lambda *a, **k: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):
            annotate.annotate_corpus(config, str(DEMO_IMAGES), str(committed), show_progress=False)
    assert Corpus(committed).is_committed(0) and Corpus(committed).compaction(0) is None
    assert all_rows(committed) == expected

    finished = []

    def finish_and_check(root: Path, status: str) -> int:
        summary = annotate.annotate_corpus(config, str(DEMO_IMAGES), str(root), show_progress=False)  # fmt: skip
        assert summary.nothing_to_do and summary.compaction["status"] == status, root
        assert all_rows(root) == expected, root
        assert data_files(root, "shard=*") == [] and not list(root.rglob(".*.tmp")), root
        before = snapshot(root)
        summary = annotate.annotate_corpus(config, str(DEMO_IMAGES), str(root), show_progress=False)  # fmt: skip
        assert summary.nothing_to_do and summary.compaction is None
        assert snapshot(root) == before  # a rerun of a finished compaction writes nothing
        finished.append({k: v[0] for k, v in snapshot(root / "iteration=0").items()})
        return len(Corpus(root).compaction(0)["parts"])

    root = tmp_path / "not-killed"
    shutil.copytree(committed, root)
    parts = finish_and_check(root, "compacted")
    assert parts >= 2
    # Killed while writing the first, a middle and the last part file, the manifest, and
    # while deleting the first and the last of the 35 shard files.
    renames = 5 * parts + 1
    kills = [("replace", n) for n in (1, renames // 2, renames - 1, renames)]
    kills += [("unlink", n) for n in (1, 35)]
    for name, n in kills:
        root = tmp_path / f"kill-{name}-{n}"
        shutil.copytree(committed, root)
        with monkeypatch.context() as patch:
            crash_at(patch, name, n)
            with pytest.raises(Crash):
                annotate.annotate_corpus(config, str(DEMO_IMAGES), str(root), show_progress=False)  # fmt: skip
        assert all_rows(root) == expected, (name, n)
        finish_and_check(root, "finished" if name == "unlink" else "compacted")
    assert all(state == finished[0] for state in finished)  # the same bytes, killed or not
