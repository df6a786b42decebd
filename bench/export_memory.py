"""Exports do not hold the corpus in memory: peak RSS of ``fld export`` on a small and on
a large synthetic corpus (the same shard size, ten times the shards).

    .venv/bin/python bench/export_memory.py            # 100k vs 1M region rows
    .venv/bin/python bench/export_memory.py --quick    # 50k vs 200k

The corpora come from the shared synthetic builder (``bench/synthetic_corpus.py``: the
contract schemas, committed through ``IterationWriter``): shards of 10k region rows over
about 50 images (200 regions per image on average; objects, OCR lines with quads and dense
captions, kept objects partly with polygons, about 38% dropped), 3 texts and the brief
caption's phrases per image.

Each export runs in a fresh Python process, which reports its RSS after imports
(``baseline``) and its peak RSS (``VmHWM``) after the export; the figure that must
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
for path in (str(REPO), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

REGIONS_PER_SHARD = 10_000
REGIONS_PER_IMAGE = 200  # mean; about 50 images per shard
FORMATS = ("florence2", "coco", "yolo")


def write_corpus(root: Path, n_regions: int) -> Path:
    """A committed corpus of ``n_regions`` region rows from the shared synthetic builder."""
    from synthetic_corpus import write_corpus as write_synthetic

    write_synthetic(
        root, n_regions, rows_per_shard=REGIONS_PER_SHARD, regions_per_image=REGIONS_PER_IMAGE
    )
    return root


CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import duckdb, pyarrow, yaml  # noqa: F401  (imports before the baseline)
from pipelines.exports import export_corpus
from pipelines.exports import coco, florence2, yolo  # noqa: F401
from engine.query import connect

def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

baseline = status_mb("VmRSS")
began = time.perf_counter()
mode, corpus, out = sys.argv[1:4]
if mode == "naive":
    rows = connect(corpus).execute("SELECT * FROM regions").fetchall()
    counts = {{"rows": len(rows)}}
else:
    counts = export_corpus(corpus, mode, out)["counts"]
# VmHWM, not ru_maxrss: Linux carries the parent's RSS at spawn into the child's
# ru_maxrss (see workload.peak_rss_bytes); launched from `make bench`, whose process holds
# the loaded models, every mode measured the parent's ~2 GB.
peak = status_mb("VmHWM")
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
        results: dict = {"regions_per_shard": REGIONS_PER_SHARD, "sizes": {}}
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
