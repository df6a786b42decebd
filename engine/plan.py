"""An iteration's plan: which URI goes to which shard, computed once and stored with it.

``_plan.parquet`` (two columns, ``shard: int64`` and ``uri: string``, sorted by ``uri``)
holds every input URI; shard ``k`` is rows ``[k*shard_size, (k+1)*shard_size)``. It is
made without holding the URIs in memory: the input is listed in batches
(``engine.sources.iter_inputs``) into a scratch Parquet file, DuckDB sorts that out of core
(``memory_limit``, spilling to the scratch folder), and one streaming pass numbers the
shards and computes the fingerprints. ``_plan.json`` (the summary: input, counts, shard
size, name width, fingerprints, config hash) is written after ``_plan.parquet``, so its
presence says the plan is whole.

A resumed run reads the stored plan; the input is not listed again (inputs added since
are not part of the iteration). A committed iteration's rerun reads only ``_plan.json``.

Order: URIs sort by their UTF-8 bytes (DuckDB's string order), which is Python's ``str``
order, so the shards are those ``engine.sources.make_shards`` gives.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.sources import LIST_SUFFIXES, TAR_SEP, Shard, iter_inputs, row_group_batches
from engine.storage import StorePath, is_remote, location

PLAN_FILE = "_plan.parquet"
PLAN_SCHEMA = pa.schema([pa.field("shard", pa.int64()), pa.field("uri", pa.string())])
SORT_MEMORY = "192MB"  # DuckDB's limit while sorting; the rest spills to the scratch folder
MIN_DIGITS = 5


@dataclass(frozen=True)
class PlanSummary:
    """What ``_plan.json`` records (with ``input`` and ``config_hash`` added by the run)."""

    n_inputs: int
    n_shards: int
    shard_size: int
    digits: int  # the width of shard names: names sort as indexes do
    fingerprint: str  # the sorted URIs and the shard size (engine.sources.fingerprint)
    content_fingerprint: str  # sizes and modification times (see content_stamp)
    plan_file: str = PLAN_FILE

    def to_dict(self) -> dict:
        return asdict(self)


def shard_digits(n_shards: int) -> int:
    return max(MIN_DIGITS, len(str(max(n_shards - 1, 0))))


def build_plan(
    input_path: str,
    parquet_column: str | None,
    shard_size: int,
    target: Path | StorePath,
    allow_outside: bool = False,
) -> PlanSummary:
    """List ``input_path``, sort it out of core and write ``target`` (the iteration's
    ``_plan.parquet``); return the summary. Peak memory: one listing batch plus DuckDB's
    ``SORT_MEMORY``."""
    with tempfile.TemporaryDirectory(prefix="fld-plan-") as scratch:
        listed = Path(scratch) / "listed.parquet"
        with pq.ParquetWriter(listed, pa.schema([("uri", pa.string())])) as writer:
            for batch in iter_inputs(str(input_path), parquet_column, allow_outside):
                writer.write_table(pa.table({"uri": pa.array(batch, pa.string())}))
        ordered = Path(scratch) / "sorted.parquet"
        connection = duckdb.connect()
        try:
            connection.execute(f"SET memory_limit = '{SORT_MEMORY}'")
            connection.execute(f"SET temp_directory = '{scratch}/spill'")
            connection.execute("SET preserve_insertion_order = true")
            connection.execute(
                f"COPY (SELECT uri FROM read_parquet('{listed}') ORDER BY uri) TO '{ordered}' "
                "(FORMAT parquet, ROW_GROUP_SIZE 100000)"
            )
        finally:
            connection.close()
        listed.unlink()
        local_plan = Path(scratch) / PLAN_FILE
        summary = number_shards(ordered, local_plan, shard_size, list_stamp(input_path))
        publish(local_plan, target)
    return summary


def number_shards(ordered: Path, out: Path, shard_size: int, stamp: str | None) -> PlanSummary:
    """One pass over the sorted URIs: the shard column, both fingerprints."""
    names = hashlib.sha256(str(shard_size).encode())
    contents = hashlib.sha256()
    stats: dict[str, bytes] = {}
    total = 0
    with pq.ParquetWriter(out, PLAN_SCHEMA, compression="zstd") as writer:
        for batch in row_group_batches(pq.ParquetFile(ordered), ["uri"], 100_000):
            uris = batch.column(0)
            count = len(uris)
            if count == 0:
                continue
            shard = pc.divide(pa.array(range(total, total + count), pa.int64()), shard_size)
            writer.write_table(pa.Table.from_arrays([shard, uris], schema=PLAN_SCHEMA))
            values = uris.to_pylist()
            names.update(("\n".join(values) + "\n").encode())
            if stamp is None:
                for uri in values:
                    contents.update(uri.encode() + b"\t" + container_stamp(uri, stats) + b"\n")
            total += count
    if stamp is not None:
        contents.update(stamp.encode())
    n_shards = -(-total // shard_size)
    return PlanSummary(
        n_inputs=total,
        n_shards=n_shards,
        shard_size=shard_size,
        digits=shard_digits(n_shards),
        fingerprint=names.hexdigest()[:16],
        content_fingerprint=contents.hexdigest()[:16],
    )


def list_stamp(input_path: str) -> str | None:
    """For an input that is a list (a Parquet, CSV or TSV file naming paths or URLs): the
    list file's own size and modification time, which is what the run was made of (one
    ``stat``, not one per listed file: a list of 10M URLs cannot be stat'ed). None for
    folders and tars, whose files are stamped one by one (``container_stamp``)."""
    text = str(input_path)
    if any(ch in text for ch in "*?[") or not text.lower().endswith((".parquet", *LIST_SUFFIXES)):
        return None
    return f"{text}\t{file_stamp(text).decode()}"


def container_stamp(uri: str, cache: dict[str, bytes]) -> bytes:
    container = uri.split(TAR_SEP, 1)[0]
    if container not in cache:
        cache[container] = file_stamp(container)
    return cache[container]


def file_stamp(path: str) -> bytes:
    """``size:mtime_ns`` of a local file or a stored object, ``missing`` if it is gone,
    ``url`` for web addresses (nothing to stat)."""
    try:
        if is_remote(path):
            if path.lower().startswith(("http://", "https://")):
                return b"url"
            info = location(path).info()
            if info.type.name == "NotFound":
                return b"missing"
            return f"{info.size}:{info.mtime_ns}".encode()
        status = os.stat(path)
        return f"{status.st_size}:{status.st_mtime_ns}".encode()
    except OSError:
        return b"missing"


def publish(local: Path, target: Path | StorePath) -> None:
    """Move the finished plan to the iteration folder (a rename where there is one)."""
    if isinstance(target, StorePath):
        target.write_bytes(local.read_bytes())
        return
    temporary = target.with_name(f".{target.name}.tmp")
    os.replace(local, temporary) if same_device(local, temporary) else temporary.write_bytes(local.read_bytes())  # fmt: skip
    os.replace(temporary, target)


def same_device(a: Path, b: Path) -> bool:
    return os.stat(a.parent).st_dev == os.stat(b.parent).st_dev


def iter_shards(plan: Path | StorePath, digits: int, skip: set[int] | None = None) -> Iterator[Shard]:  # fmt: skip
    """The plan's shards in order, each with its URIs, streamed (one row group at a time);
    shards whose index is in ``skip`` (already done) are passed over."""
    skip = skip or set()
    source = plan.open_input() if isinstance(plan, StorePath) else plan
    current: int | None = None
    uris: list[str] = []
    for batch in row_group_batches(pq.ParquetFile(source), ["shard", "uri"], 65_536):
        shards = batch.column(0).to_numpy()
        values = batch.column(1).to_pylist()
        cuts = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(values)]
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):  # runs of one shard
            shard = int(shards[start])
            if shard != current:
                if current is not None and current not in skip:
                    yield Shard(current, tuple(uris), digits)
                current, uris = shard, []
            uris.extend(values[start:stop])
    if current is not None and current not in skip:
        yield Shard(current, tuple(uris), digits)
