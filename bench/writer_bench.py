"""A synthetic shard with the contract schemas, and timed writes of it: the engine's
``IterationWriter.write_shard`` against plain ``pyarrow.parquet.write_table``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.corpus import Corpus, IterationWriter
from engine.schemas import REGIONS, TABLES, table_from_rows

LABELS = ["person", "car", "bus", "dog", "cat", "chair", "cup", "bottle", "tv", "book"]
SOURCES = ["ssd_coco@1", "rapidocr@1", "yolo@1"]
WORDS = ["EXIT", "STOP", "Main St", "OPEN 24h", "No parking", "SALE", "Café", "1200"]


def synthetic_shard(n_regions: int, regions_per_image: int = 200, seed: int = 0) -> dict:
    """All five tables of one shard: ``n_regions`` region rows over
    ``n_regions / regions_per_image`` images, 20% of them OCR lines with quads, 30% dropped."""
    rng = np.random.default_rng(seed)
    n_images = max(1, n_regions // regions_per_image)
    image_ids = np.array([f"{i:032x}" for i in rng.integers(0, 2**62, n_images)], dtype=object)
    image_of = np.minimum(np.arange(n_regions) // regions_per_image, n_images - 1)
    is_ocr = rng.random(n_regions) < 0.2
    x0 = rng.uniform(0, 600, n_regions).astype(np.float32)
    y0 = rng.uniform(0, 400, n_regions).astype(np.float32)
    x1 = x0 + rng.uniform(2, 200, n_regions).astype(np.float32)
    y1 = y0 + rng.uniform(2, 200, n_regions).astype(np.float32)
    quads = [
        [float(a), float(b), float(c), float(b), float(c), float(d), float(a), float(d)]
        if ocr
        else None
        for ocr, a, b, c, d in zip(is_ocr, x0, y0, x1, y1, strict=True)
    ]
    labels = np.where(
        is_ocr,
        np.array(WORDS, dtype=object)[rng.integers(0, len(WORDS), n_regions)],
        np.array(LABELS, dtype=object)[rng.integers(0, len(LABELS), n_regions)],
    )
    sources = np.where(
        is_ocr, SOURCES[1], np.array(SOURCES, dtype=object)[rng.integers(0, 3, n_regions) % 3]
    )
    dropped = rng.random(n_regions) < 0.3
    reasons = np.array(["low_score", "nms", "too_small"], dtype=object)
    drop_reason = [
        reasons[k] if d else None
        for d, k in zip(dropped, rng.integers(0, 3, n_regions), strict=True)
    ]
    ids = image_ids[image_of]
    regions = pa.table(
        {
            "region_id": [f"{ids[i][:16]}:0:r{i % regions_per_image}" for i in range(n_regions)],
            "image_id": ids,
            "iteration": np.zeros(n_regions, dtype=np.int32),
            "kind": np.where(is_ocr, "ocr", "object"),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "quad": quads,
            "polygon": [[] for _ in range(n_regions)],
            "label": labels,
            "score": rng.random(n_regions).astype(np.float32),
            "source": sources,
            "sources": [[s] for s in sources],
            "n_sources": np.ones(n_regions, dtype=np.int32),
            "kept": ~dropped,
            "drop_reason": drop_reason,
        },
        schema=REGIONS,
    )
    image_rows = [
        {
            "image_id": image_id,
            "iteration": 0,
            "uri": f"/data/images/{index:08d}.jpg",
            "width": 640,
            "height": 480,
            "format": "JPEG",
            "bytes": 100_000 + index,
        }
        for index, image_id in enumerate(image_ids)
    ]
    tables = {name: schema.empty_table() for name, schema in TABLES.items()}
    tables["regions"] = regions
    tables["images"] = table_from_rows("images", image_rows)
    return tables


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
