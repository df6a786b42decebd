"""Compaction of committed iterations (engine/compact.py), the heavy part: readers (SQL
views, ``fld stats``, the export reader) seeing exactly the same rows, in the same order,
before, after, and at every point a compaction can be interrupted; then automatic
compaction at the end of ``fld run`` on real photos, and a killed compaction finished by
the rerun. The layout and refusals are in ``tests/unit/test_compact.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.compact import compact_iteration
from engine.corpus import COMPACTED, Corpus
from engine.query import stats_report
from pipelines.exports.reader import CorpusReader
from tests.fixtures.compaction import (
    N_REGIONS,
    SHARD_ROWS,
    TARGET_ROWS,
    Crash,
    check_crash_then_finish,
    count_calls,
    crash_at,
    data_files,
    exported,
    fresh,
    full_tables,
    prepared,
    snapshot,
    streamed,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """fld run's default layout: 13 shards of about 1,600 region rows, into 4 parts."""
    return prepared(tmp_path_factory.mktemp("compact"), N_REGIONS, SHARD_ROWS, TARGET_ROWS)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """For the crash points: 6 shards of 800 region rows, into 3 parts."""
    return prepared(tmp_path_factory.mktemp("crash"), 4_800, 800, 1_600)


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
    from tests.fixtures.battery import write_light_config
    from tests.fixtures.common import DEMO_IMAGES, run_fld
    from tests.fixtures.corpus_tools import all_rows

    plain, auto = tmp_path / "plain", tmp_path / "auto"
    light = write_light_config(tmp_path)  # a real detector, small: the subject is compaction
    common = ["run", str(DEMO_IMAGES), "--shard-size", "1", "--executor", "local", "--quiet"]
    common += ["--config", str(light)]
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
    import pipelines.annotate as annotate
    from pipelines.config import load_config
    from tests.fixtures.common import DEMO_IMAGES
    from tests.fixtures.corpus_tools import all_rows

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
