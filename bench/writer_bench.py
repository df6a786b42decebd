"""A synthetic shard with the contract schemas, and timed writes of it: the engine's
``IterationWriter.write_shard`` against plain ``pyarrow.parquet.write_table``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from synthetic_corpus import shard_tables

from engine.corpus import Corpus, IterationWriter
from engine.schemas import table_from_rows


def synthetic_shard(n_regions: int, regions_per_image: int = 200, seed: int = 0) -> dict:
    """All five tables of one shard from the shared synthetic builder
    (``bench/synthetic_corpus.py``): ``n_regions`` region rows over about
    ``n_regions / regions_per_image`` images; texts, phrases and errors left empty, so the
    rows written are the regions and their images, as this benchmark has always measured."""
    return shard_tables(
        n_regions, seed=seed, regions_per_image=regions_per_image, tables=("images", "regions")
    )


def _seconds(write, *args, **kwargs) -> float:
    began = time.perf_counter()
    write(*args, **kwargs)
    return time.perf_counter() - began


def bench_writes(tables: dict[str, pa.Table], folder: Path, repeats: int) -> dict:
    """Median seconds to write the shard's five tables three ways, interleaved."""
    corpus_root = folder / "corpus"
    writer = IterationWriter(Corpus(corpus_root), 0)
    writer.prepare({"bench": "writer"})
    plain_dir = folder / "plain"
    plain_dir.mkdir(parents=True, exist_ok=True)

    def plain(attempt: int, **options) -> None:
        for name, table in tables.items():
            pq.write_table(table, plain_dir / f"{name}-{attempt}.parquet", **options)

    def engine(attempt: int) -> None:
        writer.write_shard(f"{attempt:05d}", tables, {"shard": attempt})

    results: dict[str, list[float]] = {"plain_default": [], "plain_zstd": [], "write_shard": []}
    for attempt in range(repeats):  # interleaved, so drift in machine load hits all three
        results["plain_default"].append(_seconds(plain, attempt))
        results["plain_zstd"].append(_seconds(plain, attempt, compression="zstd"))
        results["write_shard"].append(_seconds(engine, attempt))
    sizes = {
        "plain_default": sum(p.stat().st_size for p in plain_dir.glob("*-0.parquet")),
        "write_shard": sum(p.stat().st_size for p in writer.path.glob("*/shard=00000.parquet")),
    }
    return {
        "median_s": {key: statistics.median(values) for key, values in results.items()},
        "all_s": results,
        "bytes_written": sizes,
    }


def rows_build_seconds(tables: dict[str, pa.Table]) -> float:
    """Seconds ``table_from_rows`` takes to build the regions table from row dicts, as
    ``ShardProcessor.to_tables`` does (for the notes: a cost that sits before the writer)."""
    rows = tables["regions"].to_pylist()
    began = time.perf_counter()
    table_from_rows("regions", rows)
    return time.perf_counter() - began
