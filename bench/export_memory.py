"""Exports do not hold the corpus in memory: peak RSS of ``fld export`` on a small and on
a large synthetic corpus (the same shard size, ten times the shards).

    .venv/bin/python bench/export_memory.py            # 100k vs 1M region rows
    .venv/bin/python bench/export_memory.py --quick    # 50k vs 200k

The corpora are written directly with the contract schemas and ``IterationWriter``:
shards of 50 images x 200 regions (10k region rows; 20% OCR lines with quads, 10% of
objects with an 8-point polygon, 30% dropped), 3 texts and 4 phrase rows per image.

Each export runs in a fresh Python process, which reports its RSS after imports
(``baseline``) and its peak RSS (``ru_maxrss``) after the export; the figure that must
not grow with the corpus is ``peak - baseline``. A control measures the same on a naive
reader (``SELECT * FROM regions`` fetched whole), to show that the measurement does see
a corpus held in memory.

Results: ``bench/results/export_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

IMAGES_PER_SHARD = 50
REGIONS_PER_IMAGE = 200
FORMATS = ("florence2", "coco", "yolo")
LABELS = ["person", "car", "bus", "dog", "cat", "chair", "cup", "bottle", "tv", "book"]
WORDS = ["EXIT", "STOP", "Main St", "OPEN 24h", "No parking", "SALE", "Café", "1200"]


def synthetic_shard(shard: int, seed: int = 0) -> dict:
    """The five tables of one shard (numpy-built, no per-row Python dicts for regions)."""
    import numpy as np
    import pyarrow as pa

    from engine.schemas import TABLES

    rng = np.random.default_rng(seed + shard)
    n_images, n = IMAGES_PER_SHARD, IMAGES_PER_SHARD * REGIONS_PER_IMAGE
    image_ids = [f"{shard:08x}{i:08x}{seed:016x}" for i in range(n_images)]
    width, height = 640, 480
    image_of = np.arange(n) // REGIONS_PER_IMAGE
    ids = np.array(image_ids, dtype=object)[image_of]
    is_ocr = rng.random(n) < 0.2
    has_polygon = (~is_ocr) & (rng.random(n) < 0.1)
    x0 = rng.uniform(0, width - 60, n).astype(np.float32)
    y0 = rng.uniform(0, height - 60, n).astype(np.float32)
    x1 = np.minimum(x0 + rng.uniform(4, 200, n), width).astype(np.float32)
    y1 = np.minimum(y0 + rng.uniform(4, 200, n), height).astype(np.float32)
    quads = [
        [float(a), float(b), float(c), float(b), float(c), float(d), float(a), float(d)]
        if ocr
        else None
        for ocr, a, b, c, d in zip(is_ocr, x0, y0, x1, y1, strict=True)
    ]
    polygons = [
        [float(a), float(b), float(c), float(b), float(c), float(d), float(a), float(d)]
        if polygon
        else []
        for polygon, a, b, c, d in zip(has_polygon, x0, y0, x1, y1, strict=True)
    ]
    labels = np.where(
        is_ocr,
        np.array(WORDS, dtype=object)[rng.integers(0, len(WORDS), n)],
        np.array(LABELS, dtype=object)[rng.integers(0, len(LABELS), n)],
    )
    dropped = rng.random(n) < 0.3
    sources = np.where(is_ocr, "rapidocr@1", "ssd_coco@1")
    regions = pa.table(
        {
            "region_id": [f"{ids[i][:16]}:0:r{i % REGIONS_PER_IMAGE}" for i in range(n)],
            "image_id": ids,
            "iteration": np.zeros(n, dtype=np.int32),
            "kind": np.where(is_ocr, "ocr", "object"),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "quad": quads,
            "polygon": polygons,
            "label": labels,
            "score": rng.random(n).astype(np.float32),
            "source": sources,
            "sources": [[s] for s in sources],
            "n_sources": np.ones(n, dtype=np.int32),
            "kept": ~dropped,
            "drop_reason": np.where(dropped, "low_score", None),
        },
        schema=TABLES["regions"],
    )
    images = pa.table(
        {
            "image_id": image_ids,
            "iteration": [0] * n_images,
            "uri": [f"/data/images/{shard:05d}_{i:03d}.jpg" for i in range(n_images)],
            "width": [width] * n_images,
            "height": [height] * n_images,
            "format": ["JPEG"] * n_images,
            "bytes": [100_000] * n_images,
        },
        schema=TABLES["images"],
    )
    text_rows, phrase_rows = [], []
    for image_id in image_ids:
        for k, granularity in enumerate(("brief", "detailed", "more_detailed")):
            text_rows.append(
                {
                    "text_id": f"{image_id[:16]}:0:t{k}",
                    "image_id": image_id,
                    "iteration": 0,
                    "granularity": granularity,
                    "text": "A person and a dog near a bus. " * (1 + 3 * k),
                    "source": "region_captioner@1",
                    "score": 0.8,
                    "kept": True,
                }
            )
        for k in range(4):
            phrase_rows.append(
                {
                    "triplet_id": f"{image_id[:16]}:0:g{k}",
                    "phrase_id": f"{image_id[:16]}:0:p{k // 2}",
                    "image_id": image_id,
                    "iteration": 0,
                    "text_id": f"{image_id[:16]}:0:t0",
                    "phrase": ["A person", "a dog"][k // 2],
                    "char_start": 0,
                    "char_end": 8,
                    "box": {"x0": 10.0 * k, "y0": 10.0, "x1": 10.0 * k + 50, "y1": 90.0},
                    "polygon": [10.0 * k, 10.0, 10.0 * k + 50, 10.0, 10.0 * k + 50, 90.0],
                    "score": 0.7,
                    "source": "phrase_extractor@1",
                    "kept": True,
                }
            )
    return {
        "images": images,
        "texts": pa.Table.from_pylist(text_rows, schema=TABLES["texts"]),
        "regions": regions,
        "phrases": pa.Table.from_pylist(phrase_rows, schema=TABLES["phrases"]),
        "errors": TABLES["errors"].empty_table(),
    }


def write_corpus(root: Path, n_regions: int) -> Path:
    from engine.corpus import Corpus, IterationWriter

    shards = max(1, n_regions // (IMAGES_PER_SHARD * REGIONS_PER_IMAGE))
    writer = IterationWriter(Corpus(root), 0)
    writer.prepare({"fingerprint": f"bench-{n_regions}", "config_hash": "bench"})
    for shard in range(shards):
        writer.write_shard(f"{shard:05d}", synthetic_shard(shard), {"shard": shard})
    writer.commit({"config": {}, "counts": {}})
    return root


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import duckdb, pyarrow, yaml  # noqa: F401  (imports before the baseline)
from pipelines.exports import export_corpus
from pipelines.exports import coco, florence2, yolo  # noqa: F401
from engine.query import connect

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

baseline = rss_mb()
began = time.perf_counter()
mode, corpus, out = sys.argv[1:4]
if mode == "naive":
    rows = connect(corpus).execute("SELECT * FROM regions").fetchall()
    counts = {{"rows": len(rows)}}
else:
    counts = export_corpus(corpus, mode, out)["counts"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"baseline_mb": baseline, "peak_mb": peak, "growth_mb": peak - baseline,
                  "seconds": time.perf_counter() - began, "counts": counts}}))
"""


def measure(mode: str, corpus: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    script = CHILD.format(repo=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script, mode, str(corpus), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(quick: bool = False, folder: Path | None = None) -> dict:
    small, large = (50_000, 200_000) if quick else (100_000, 1_000_000)
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="fld-export-memory-")) if own else folder
    try:
        results: dict = {"regions_per_shard": IMAGES_PER_SHARD * REGIONS_PER_IMAGE, "sizes": {}}
        for n in (small, large):
            began = time.perf_counter()
            corpus = write_corpus(folder / f"corpus-{n}", n)
            size = {"write_seconds": round(time.perf_counter() - began, 1)}
            size["parquet_mb"] = round(
                sum(p.stat().st_size for p in corpus.rglob("*.parquet")) / 1e6, 1
            )
            for mode in (*FORMATS, "naive"):
                size[mode] = measure(mode, corpus, folder / f"out-{n}-{mode}")
            results["sizes"][n] = size
            shutil.rmtree(corpus)
        results["peak_growth_ratio"] = {
            mode: round(
                max(results["sizes"][large][mode]["growth_mb"], 1.0)
                / max(results["sizes"][small][mode]["growth_mb"], 1.0),
                2,
            )
            for mode in (*FORMATS, "naive")
        }
        results["rows_ratio"] = large / small
        return results
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k vs 200k region rows")
    args = parser.parse_args()
    results = run(quick=args.quick)
    results["quick"] = args.quick
    out = BENCH_DIR / "results" / "export_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for n, size in results["sizes"].items():
        line = ", ".join(
            f"{mode} +{size[mode]['growth_mb']:.0f} MB ({size[mode]['seconds']:.1f} s)"
            for mode in (*FORMATS, "naive")
        )
        print(
            f"{n:>9,} region rows ({size['parquet_mb']} MB Parquet): peak RSS above baseline: {line}"
        )
    print(
        f"growth ratio large/small (rows x{results['rows_ratio']:.0f}): {results['peak_growth_ratio']}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
