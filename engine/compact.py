"""Compaction of a committed iteration (what Delta Lake calls OPTIMIZE): its per-shard
files merged into a few large ones.

Why: ``fld run`` writes one file per table per shard (64 images by default), because a
shard is the unit a rerun resumes; a corpus of 10 million region rows is then 31,250 small
files, and DuckDB spends 0.2-0.7 ms of CPU per file and table a query scans, whatever
the file holds (``bench/sql_stats.py``). Once an iteration is committed no shard is ever
written again, so its shards can be merged.

What: consecutive shards (in shard-name order) are grouped into *parts* of about
``target_rows`` rows of the iteration's largest table (``regions``, as a rule), the same
grouping for all five tables, so that a part's files cover the same images, as a shard's
do. ``<table>/part=NNNNN.parquet`` holds its shards' rows one shard after the other, each
shard's rows sorted in ``engine.schemas.STREAM_ORDER`` (the order the export reader
streams an image's rows in), with the contract schema and the writer's compression.

Commit protocol, safe against a crash at any point:

a. every part file is written (a temporary name, ``fsync``, ``os.replace``); readers do not
   look at ``part=*`` files until a manifest names them;
b. the manifest ``iteration=K/_COMPACTED.json`` is written atomically (the switch): every
   part, its file per table, its shards and their row counts per table. Before it is
   written, the rows of each part file, read back from the written file, must equal the
   rows read from its shard files, value for value (``write_part``); each shard file's rows, those its marker recorded; and
   each table's total, the count in ``run.json``;
c. the shard data files it supersedes are deleted (the ``_shards/*.json`` markers stay).

A crash before (b) leaves part files that nothing reads; the next compaction deletes them
and writes them again. A crash during (c) leaves a manifest, which readers follow, and some
shard files, which the next compaction (or the next ``fld run`` of the iteration) deletes.
Compacting an iteration that has a manifest only finishes (c). Everything written is a
function of the shard files and ``target_rows`` (no timestamps), so a compaction that was
interrupted and redone leaves the same bytes as one that was not.

When: ``fld compact CORPUS``, and at the end of ``fld run`` / ``fld refine``, right after
the commit, when the iteration has more than ``run.compact_rows`` rows in a table
(``compact_if_due``); a rerun of a committed iteration finishes a compaction that was
interrupted, and does nothing otherwise.

A reader that opened the iteration's shard files before a compaction (a DuckDB connection
made with ``engine.query.connect``) fails on the deleted files afterwards: connect again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from engine.corpus import (
    COMPACTED,
    Corpus,
    CorpusError,
    atomic_write_json,
    atomic_write_parquet,
    fsync_path,
)
from engine.query import sql_literal
from engine.schemas import STREAM_ORDER, TABLES
from engine.storage import duckdb_connection, parquet_source, remove, sql_path

DEFAULT_TARGET_ROWS = 250_000
MANIFEST_FORMAT = 1


def group_shards(shard_rows: list[int], target_rows: int) -> list[list[int]]:
    """Consecutive shard indices grouped into ``ceil(total / target_rows)`` parts of about
    equal rows (a part closes once it reaches its share of the running total; a shard is
    never split)."""
    if target_rows < 1:
        raise ValueError(f"target_rows must be at least 1, not {target_rows}")
    total = sum(shard_rows)
    n_parts = max(1, math.ceil(total / target_rows))
    groups: list[list[int]] = []
    current: list[int] = []
    cumulative = 0
    for index, rows in enumerate(shard_rows):
        current.append(index)
        cumulative += rows
        if len(groups) < n_parts - 1 and cumulative * n_parts >= total * (len(groups) + 1):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def largest_table(run_info: dict) -> str:
    """The table with the most rows per ``run.json`` (``regions`` if it does not say)."""
    rows = (run_info.get("counts") or {}).get("rows") or {}
    rows = {table: n for table, n in rows.items() if table in TABLES}
    return max(rows, key=lambda table: (rows[table], table == "regions")) if rows else "regions"


def read_group(connection, paths: list[Path], table: str) -> tuple[pa.Table, list[int]]:
    """The rows of ``table`` in the shard files ``paths`` (consecutive shards, in shard
    order), one shard after the other, each shard's rows in ``STREAM_ORDER`` (``errors``: as
    written), with the contract schema; and how many rows each file gave.

    DuckDB reads them: one query per part and table (its cost per file is a fraction of
    reading each file apart with pyarrow), and it sorts with the very ``ORDER BY`` the
    export reader uses on a shard file."""
    files = "[" + ", ".join(sql_literal(sql_path(path)) for path in paths) + "]"
    order = ", ".join(STREAM_ORDER.get(table, ("file_row_number",)))
    relation = connection.sql(
        f"SELECT * FROM read_parquet({files}, filename = true, file_row_number = true, "
        f"hive_partitioning = false) ORDER BY filename, {order}"
    )
    data = relation.to_arrow_table()
    counted = pc.value_counts(data.column("filename").combine_chunks())
    by_file = dict(
        zip(
            (name.rsplit("/", 1)[-1] for name in counted.field("values").to_pylist()),
            counted.field("counts").to_pylist(),
            strict=True,
        )
    )
    names = [path.name for path in paths]
    if [name for name in names if name in by_file] != list(by_file):  # never, unless a bug
        raise CorpusError(f"{table}: shard files not read in shard order ({names[0]}...)")
    data = data.drop_columns(["filename", "file_row_number"]).replace_schema_metadata(None)
    try:
        data = data.cast(TABLES[table])
    except (pa.ArrowInvalid, ValueError) as exc:
        raise CorpusError(
            f"{table}: shard files {names[0]}..{names[-1]} do not have the contract schema: {exc}"
        ) from None
    return data, [by_file.get(name, 0) for name in names]


def write_part(path: Path, data: pa.Table) -> None:
    """Write a part file durably, then read it back: its rows must equal, value for value,
    the rows read from its shard files (a count alone would miss a corrupted value)."""
    atomic_write_parquet(path, data, durable=True)
    written = pq.read_table(parquet_source(path), schema=data.schema)
    if not written.equals(data):
        raise CorpusError(f"{path}: the rows read back differ from its shards' rows; not compacted")


def recorded_shard_rows(folder: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """Rows per table of each shard as its marker recorded them when it was written (the
    markers the engine writes, and the benchmarks' synthetic corpora, have them)."""
    recorded = {}
    for name in names:
        try:
            marker = json.loads((folder / "_shards" / f"{name}.json").read_text())
        except FileNotFoundError:
            continue
        if isinstance(marker.get("rows"), dict):
            recorded[name] = marker["rows"]
    return recorded


def superseded_files(corpus: Corpus, iteration: int, manifest: dict) -> list[Path]:
    """The shard data files still on disk that the manifest's parts replace."""
    listed = {shard for part in manifest["parts"] for shard in part["shards"]}
    return [
        path
        for name, files in corpus.shard_files(iteration).items()
        if name in listed
        for path in files.values()
    ]


def remove_compaction_leftovers(corpus: Corpus, iteration: int) -> int:
    """Part files and temporaries of a compaction that never wrote its manifest (invisible
    to readers), before a compaction writes them again."""
    folder = corpus.iteration_dir(iteration)
    leftovers = list(folder.glob(f".{COMPACTED}.tmp"))
    for table in TABLES:
        if (folder / table).is_dir():
            leftovers += (folder / table).glob("part=*.parquet")
            leftovers += (folder / table).glob(".part=*.parquet.tmp")
    return remove_files(leftovers)


def finish(corpus: Corpus, iteration: int, manifest: dict) -> int:
    """Step (c): delete the shard data files the manifest supersedes; returns how many."""
    return remove_files(superseded_files(corpus, iteration, manifest))


def remove_files(paths) -> int:
    """Delete ``paths``, skipping any already gone (a crashed earlier call removed them);
    returns how many this call removed."""
    removed = 0
    for path in paths:
        try:
            remove(path)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def compact_iteration(
    corpus: Corpus | str | Path,
    iteration: int,
    target_rows: int = DEFAULT_TARGET_ROWS,
    show_progress: bool = False,
) -> dict:
    """Compact committed iteration ``iteration`` (see the module's docstring); returns what
    it did: ``status`` (``compacted``, ``finished`` for a manifest whose step (c) was not
    done, ``already compacted``, ``nothing to do`` for one shard or none), ``files_before``
    and ``files_after`` (data files readers read), ``shards``, ``parts``, ``removed`` (shard
    files deleted), ``rows`` per table and ``seconds``."""
    began = time.perf_counter()
    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    if not corpus.is_committed(iteration):
        raise CorpusError(f"iteration {iteration} of {corpus.root} is not committed")
    folder = corpus.iteration_dir(iteration)

    def summary(status: str, manifest: dict | None, files_before: int, removed: int) -> dict:
        parts = len(manifest["parts"]) if manifest else None
        return {
            "iteration": iteration,
            "status": status,
            "shards": manifest["n_shards"] if manifest else len(corpus.shard_files(iteration)),
            "parts": parts,
            "files_before": files_before,
            "files_after": sum(len(g.files) for g in corpus.file_groups(iteration)),
            "removed": removed,
            "rows": manifest["rows"] if manifest else None,
            "target_rows": manifest["target_rows"] if manifest else target_rows,
            "seconds": time.perf_counter() - began,
        }

    manifest = corpus.compaction(iteration)
    if manifest is not None:  # compacted: at most step (c) is left
        files_before = sum(len(g.files) for g in corpus.file_groups(iteration))
        removed = finish(corpus, iteration, manifest)
        status = "finished" if removed else "already compacted"
        return summary(status, manifest, files_before, removed)

    shards = corpus.shard_files(iteration)
    files_before = sum(len(files) for files in shards.values())
    markers = {path.stem for path in (folder / "_shards").glob("*.json")}
    if markers and markers != set(shards):
        raise CorpusError(
            f"{folder}: the shard files ({len(shards)}) do not match the shard markers "
            f"({len(markers)}); the iteration is incomplete, so it is not compacted"
        )
    for name, files in shards.items():
        missing = sorted(set(TABLES) - set(files))
        if missing:
            raise CorpusError(f"{folder}: shard {name} has no file for {', '.join(missing)}")
    if len(shards) <= 1:
        return summary("nothing to do", None, files_before, 0)

    remove_compaction_leftovers(corpus, iteration)
    try:
        info = corpus.run_info(iteration)
    except FileNotFoundError:
        info = {}
    by_table = largest_table(info)
    names = list(shards)
    recorded = recorded_shard_rows(folder, names)
    if len(recorded) == len(names):
        driving = [int(recorded[name].get(by_table, 0)) for name in names]
    else:
        driving = [
            pq.read_metadata(parquet_source(shards[name][by_table])).num_rows for name in names
        ]
    groups = group_shards(driving, target_rows)

    parts = []
    totals = dict.fromkeys(TABLES, 0)
    # DuckDB reads and sorts the next file while a thread writes (compresses) the last one:
    # one write at a time, in order, each waited for before the next is handed over.
    connection = duckdb_connection(corpus.root)
    try:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="compact-write") as writer,
            tqdm(
                total=len(groups), unit="part", desc=f"compacting iteration {iteration}",
                disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
            ) as progress,
        ):  # fmt: skip
            writing = None
            for number, group in enumerate(groups):
                part_name = f"{number:05d}"
                members = [names[i] for i in group]
                part = {"name": part_name, "shards": members, "files": {}, "rows": {}, "shard_rows": {}}  # fmt: skip
                for table in TABLES:
                    data, per_shard = read_group(
                        connection, [shards[name][table] for name in members], table
                    )
                    for name, rows in zip(members, per_shard, strict=True):
                        if name in recorded and int(recorded[name].get(table, rows)) != rows:
                            raise CorpusError(
                                f"{shards[name][table]}: {rows} rows, its marker says "
                                f"{recorded[name][table]}; not compacted"
                            )
                    relative = f"{table}/part={part_name}.parquet"
                    if writing is not None:
                        writing.result()
                    writing = writer.submit(write_part, folder / relative, data)
                    del data
                    part["files"][table] = relative
                    part["shard_rows"][table] = per_shard
                    part["rows"][table] = sum(per_shard)
                    totals[table] += part["rows"][table]
                parts.append(part)
                progress.update(1)
            if writing is not None:
                writing.result()
    finally:
        connection.close()
    for table in TABLES:
        fsync_path(folder / table)

    # Before the switch: the written parts hold exactly the shard files' rows.
    for part in parts:
        for table, relative in part["files"].items():
            written = pq.read_metadata(parquet_source(folder / relative)).num_rows
            if written != part["rows"][table]:
                raise CorpusError(
                    f"{folder / relative}: {written} rows written, {part['rows'][table]} read"
                )
    committed_rows = (info.get("counts") or {}).get("rows")
    if committed_rows is not None:
        expected = {table: int(committed_rows.get(table, 0)) for table in TABLES}
        if expected != totals:
            raise CorpusError(
                f"{folder}: the shard files hold {totals} rows, run.json says {expected}; "
                "not compacted"
            )

    manifest = {
        "format": MANIFEST_FORMAT,
        "target_rows": target_rows,
        "by_table": by_table,
        "n_shards": len(names),
        "rows": totals,
        "parts": parts,
    }
    atomic_write_json(folder / COMPACTED, manifest, durable=True)  # (b) the switch
    fsync_path(folder)
    removed = finish(corpus, iteration, manifest)  # (c)
    return summary("compacted", manifest, files_before, removed)


def compaction_due(corpus: Corpus, iteration: int) -> int:
    """The ``run.compact_rows`` that iteration ``iteration`` was committed with, if it asks
    for a compaction that is not done (or not finished), else 0."""
    try:
        info = corpus.run_info(iteration)
    except FileNotFoundError:  # committed by hand (tests), not by annotate_corpus
        return 0
    compact_rows = int(((info.get("config") or {}).get("run") or {}).get("compact_rows") or 0)
    if compact_rows <= 0:
        return 0
    manifest = corpus.compaction(iteration)
    if manifest is not None:
        return compact_rows if superseded_files(corpus, iteration, manifest) else 0
    rows = (info.get("counts") or {}).get("rows") or {}
    return compact_rows if max(rows.values(), default=0) > compact_rows else 0


def compact_if_due(corpus: Corpus, iteration: int, show_progress: bool = False) -> dict | None:
    """Compact a committed iteration as its own config asks (``run.compact_rows``: when a
    table has more rows than that, into parts of that many), or finish an interrupted
    compaction; None when there is nothing to do (nothing is then written)."""
    target_rows = compaction_due(corpus, iteration)
    if not target_rows:
        return None
    return compact_iteration(corpus, iteration, target_rows, show_progress)


def describe(result: dict) -> str:
    """One line for a user."""
    k = result["iteration"]
    if result["status"] == "nothing to do":
        return f"iteration {k}: {result['shards']} shard(s), {result['files_before']} files: nothing to compact"  # fmt: skip
    if result["status"] == "already compacted":
        return f"iteration {k}: already compacted ({result['parts']} parts, {result['files_after']} files)"  # fmt: skip
    line = (
        f"iteration {k}: {result['files_before']} files -> {result['files_after']} "
        f"({result['shards']} shards in {result['parts']} parts of about "
        f"{result['target_rows']:,} rows), {result['seconds']:.1f} s"
    )
    if result["status"] == "finished":
        line = (
            f"iteration {k}: finished an interrupted compaction: {result['removed']} superseded "
            f"shard files deleted ({result['parts']} parts, {result['files_after']} files)"
        )
    return line
