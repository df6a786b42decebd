"""Fault battery 4: a writer killed in the middle of ``IterationWriter.write_shard`` (or of
the commit) never leaves a Parquet file that fails to read, nor a marker without its files.

A child process writes shard 00000 of an iteration, then starts shard 00001 with one write
sabotaged: ``pyarrow.parquet.write_table`` writes half of the file's bytes to the temporary
and the process SIGKILLs itself, or ``os.replace`` kills it just before a finished temporary
is moved into place, or the marker's / ``run.json``'s bytes stop half way, or it dies between
``run.json`` and ``_COMMITTED``. Each kill point runs in its own forked process of one
child interpreter (cheap: pyarrow is imported once).

Then, for every kill point: every visible ``*.parquet`` reads in full; shard 00000 is whole;
shard 00001 has no marker (it will be redone); what the kill interrupted is only a hidden
temporary (and a half-written one indeed fails to read: the kill landed mid-write); nothing
is committed, so readers see no iteration; and the next ``prepare()`` removes the
temporaries, after which the shard is written again and the iteration commits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.corpus import Corpus, IterationWriter
from engine.schemas import TABLES
from tests.fixtures.battery import REPO, check_corpus_integrity, report

PLAN = {"fingerprint": "battery", "config_hash": "battery", "n_shards": 2, "n_inputs": 2}

CHILD = r"""
import json, os, signal, sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.corpus import Corpus, IterationWriter
from engine.schemas import TABLES

PLAN = json.loads(sys.argv[2])
ROWS = 1000  # rows per table: files of tens of KB, so that "half" is a real cut


def value(field, i):
    t = field.type
    if pa.types.is_string(t):
        return f"{field.name}-{i:06d}"
    if pa.types.is_integer(t):
        return i % 1000
    if pa.types.is_floating(t):
        return (i % 997) / 997.0
    if pa.types.is_boolean(t):
        return i % 3 != 0
    if pa.types.is_list(t):
        return [value(pa.field("x", t.value_type), i + k) for k in range(i % 5)]
    if pa.types.is_struct(t):
        return {f.name: value(f, i) for f in t}
    raise TypeError(t)


def shard_tables(shard):
    return {
        name: pa.Table.from_pylist(
            [{f.name: value(f, shard * ROWS + i) for f in schema} for i in range(ROWS)],
            schema=schema,
        )
        for name, schema in TABLES.items()
    }


SHARDS = [shard_tables(0), shard_tables(1)]
golden = Path(sys.argv[1]) / "golden"  # shard 00001 as it should be, for the parent's redo
golden.mkdir(parents=True, exist_ok=True)
for name, table in SHARDS[1].items():
    pq.write_table(table, golden / f"{name}.parquet")
NAMES = list(TABLES)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def sabotage(point):
    kind, _, arg = point.partition(":")
    if kind == "table":  # half of table NAMES[arg]'s bytes, then killed
        original = pq.write_table

        def write_table(table, where, **kwargs):
            if f"{os.sep}{NAMES[int(arg)]}{os.sep}.shard=00001" in str(where):
                sink = pa.BufferOutputStream()
                original(table, sink, **kwargs)
                data = sink.getvalue().to_pybytes()
                with open(where, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                die()
            return original(table, where, **kwargs)

        pq.write_table = write_table
    elif kind == "replace":  # table NAMES[arg]'s temporary is complete, not yet moved
        original_replace = os.replace

        def replace(src, dst):
            if f"{os.sep}{NAMES[int(arg)]}{os.sep}shard=00001" in str(dst):
                die()
            return original_replace(src, dst)

        os.replace = replace
    elif kind in ("marker", "run_json", "committed"):
        target = {"marker": ".00001.json.tmp", "run_json": ".run.json.tmp",
                  "committed": "._COMMITTED.tmp"}[kind]
        original_write = Path.write_bytes

        def write_bytes(self, data):
            if self.name == target:
                if kind == "committed":
                    die()  # run.json is in place, _COMMITTED never comes
                with open(self, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                die()
            return original_write(self, data)

        Path.write_bytes = write_bytes
    else:
        raise ValueError(point)


results = {}
for point in sys.argv[3:]:
    root = Path(sys.argv[1]) / point.replace(":", "_")
    pid = os.fork()
    if pid == 0:
        writer = IterationWriter(Corpus(root), 0)
        writer.prepare(PLAN)
        writer.write_shard("00000", SHARDS[0], {"shard": 0})
        sabotage(point)
        writer.write_shard("00001", SHARDS[1], {"shard": 1})
        writer.commit({"iteration": 0})
        os._exit(0)  # not reached: the sabotage kills first
    _, status = os.waitpid(pid, 0)
    results[point] = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
print(json.dumps(results))
"""

NAMES = list(TABLES)
FAST_POINTS = ["table:2", "replace:4", "marker", "run_json", "committed"]
ALL_POINTS = (
    [f"table:{k}" for k in range(5)]
    + [f"replace:{k}" for k in range(5)]
    + ["marker", "run_json", "committed"]
)


def run_child(base: Path, points: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(base), json.dumps(PLAN), *points],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def readable(path: Path) -> bool:
    try:
        pq.read_table(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def check_kill_point(root: Path, point: str, golden: Path) -> dict:
    iteration = root / "iteration=0"
    figures = check_corpus_integrity(root, allow_temporaries=True)
    assert not (iteration / "_COMMITTED").exists(), point
    assert Corpus(root).iterations() == [], "readers must see no iteration"
    for table in TABLES:  # shard 00000 is whole
        assert readable(iteration / table / "shard=00000.parquet"), (point, table)
    assert (iteration / "_shards" / "00000.json").exists()
    temporaries = sorted(p.relative_to(iteration).as_posix() for p in iteration.rglob(".*.tmp"))
    kind, _, arg = point.partition(":")
    marker_1 = (iteration / "_shards" / "00001.json").exists()
    if kind in ("table", "replace"):
        table = NAMES[int(arg)]
        assert temporaries == [f"{table}/.shard=00001.parquet.tmp"], (point, temporaries)
        assert not (iteration / table / "shard=00001.parquet").exists(), point
        assert not marker_1, f"{point}: a marker without its files"
        temporary = iteration / temporaries[0]
        # the half-written temporary would not read: the kill landed mid-write
        assert readable(temporary) == (kind == "replace"), point
    elif kind == "marker":
        assert temporaries == ["_shards/.00001.json.tmp"] and not marker_1, temporaries
        for table in TABLES:  # all five files were in place before the marker
            assert readable(iteration / table / "shard=00001.parquet")
    else:  # run_json, committed: both shards whole, the commit interrupted
        assert marker_1
        expected = [".run.json.tmp"] if kind == "run_json" else []
        assert temporaries == expected, (point, temporaries)
        assert (iteration / "run.json").exists() == (kind == "committed")

    # The next run's prepare() removes the temporaries; the shard is redone; commit.
    writer = IterationWriter(Corpus(root), 0)
    writer.prepare(PLAN)
    assert not list(iteration.rglob(".*.tmp"))
    expected = {name: pq.read_table(golden / f"{name}.parquet") for name in TABLES}
    if 1 not in writer.done_shards():
        writer.write_shard("00001", expected, {"shard": 1})
    writer.commit({"iteration": 0})
    final = check_corpus_integrity(root)  # also: no row id twice across the two shards
    assert final["markers"] == 2 and Corpus(root).iterations() == [0]
    for name in TABLES:
        assert pq.read_table(iteration / name / "shard=00001.parquet").equals(expected[name])
    return {"temporaries": len(temporaries), "files": figures["parquet_files"]}


def interrupted_writes(tmp_path: Path, capsys, points: list[str]) -> None:
    started = time.monotonic()
    results = run_child(tmp_path, points)
    assert results == {p: {"signal": 9, "exit": None} for p in points}, results
    files = temporaries = 0
    for point in points:
        figures = check_kill_point(tmp_path / point.replace(":", "_"), point, tmp_path / "golden")
        files += figures["files"]
        temporaries += figures["temporaries"]
    report(
        capsys,
        f"\n[interrupted-writes] {len(points)} kill points ({', '.join(points)}): every child "
        f"SIGKILLed at its point; {files} visible Parquet files read, {temporaries} "
        f"temporaries left and removed by prepare(), 0 markers without files; "
        f"{time.monotonic() - started:.1f} s",
    )


def test_writer_killed_mid_write(tmp_path, capsys):
    interrupted_writes(tmp_path, capsys, FAST_POINTS)


@pytest.mark.slow
def test_writer_killed_at_every_write(tmp_path, capsys):
    interrupted_writes(tmp_path, capsys, ALL_POINTS)
