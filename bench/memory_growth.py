"""Peak resident memory of the driver and of each Ray worker, per image count (issue 7,
benchmark 7: it must not grow with the number of images).

Each size is a fresh ``annotate_corpus`` run in its own driver process (what ``fld run``
does, with ``workload.TimedShardProcessor`` so every shard's marker carries its worker's
memory), on the first N of the same distinct images, 2 workers, small shards so the larger
run has many more shards per worker. Measured:

- driver: the driver process's peak resident memory (``VmHWM``) at the end of the run;
- workers: each worker's ``VmHWM`` after its last shard (its peak since the actor
  started, model loading included), and its resident memory after each shard, so growth
  within a run shows too.

Ray's own daemons (GCS, raylet) are not the engine's and are not counted.

    .venv/bin/python bench/memory_growth.py            # 24 and 96 images
    .venv/bin/python bench/memory_growth.py --quick    # 8 and 24 images
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(REPO), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

SHARD_SIZE = 4
WORKERS = 2
MIB = 1024 * 1024


def child_run(images: Path, out: Path) -> dict:
    """The driver side of one run (in this process): what ``fld run`` does, then this
    process's peak RSS."""
    import ray
    import workload

    from pipelines.config import load_config

    ray.cloudpickle.register_pickle_by_value(workload)
    config = load_config(
        None,
        [
            "run.executor=ray",
            f"run.workers={WORKERS}",
            "run.threads_per_worker=1",
            f"run.shard_size={SHARD_SIZE}",
        ],
    )
    result = workload.run_engine(config, images, out)
    ray.shutdown()
    return {
        "driver_peak_rss_bytes": workload.peak_rss_bytes(),
        "n_images": result["n_images"],
        "n_shards": result["n_shards"],
        "n_errors": result["n_errors"],
        "wall_s": result["wall_s"],
        "worker_memory": result["worker_memory"],
    }


def measure(n_images: int, images: Path, out: Path) -> dict:
    """One run in a fresh driver process (so the driver's peak is this run's alone)."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", str(images), str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory run on {n_images} images failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    per_worker: dict[int, list[dict]] = {}
    for stamp in result["worker_memory"]:
        per_worker.setdefault(stamp["pid"], []).append(stamp)
    workers = {
        pid: {
            "shards": len(stamps),
            "peak_rss_mib": round(stamps[-1]["peak_rss_bytes"] / MIB, 1),
            "rss_after_first_shard_mib": round(stamps[0]["rss_bytes"] / MIB, 1),
            "rss_after_last_shard_mib": round(stamps[-1]["rss_bytes"] / MIB, 1),
            "rss_after_each_shard_mib": [round(s["rss_bytes"] / MIB) for s in stamps],
        }
        for pid, stamps in per_worker.items()
    }
    return {
        "n_images": result["n_images"],
        "n_shards": result["n_shards"],
        "n_errors": result["n_errors"],
        "wall_s": round(result["wall_s"], 1),
        "driver_peak_rss_mib": round(result["driver_peak_rss_bytes"] / MIB, 1),
        "worker_peak_rss_mib": max(w["peak_rss_mib"] for w in workers.values()),
        "workers": list(workers.values()),
    }


def shard_slope(rss_after_each_shard: list[float]) -> float:
    """Least-squares slope of resident memory over shard number (MiB per shard)."""
    import numpy as np

    shards = np.arange(len(rss_after_each_shard), dtype=float)
    return round(float(np.polyfit(shards, np.asarray(rss_after_each_shard, float), 1)[0]), 3)


def run(quick: bool = False, images_dir: Path | None = None) -> dict:
    """Both sizes; ``images_dir`` (at least the larger count of distinct images) is reused
    when given, otherwise made in a temporary folder."""
    import workload

    sizes = (8, 24) if quick else (24, 96)
    with tempfile.TemporaryDirectory(prefix="fld-memory-") as temporary:
        tmp = Path(temporary)
        folders = workload.image_folders(sizes, images_dir, tmp)
        runs = {}
        for n_images, folder in folders.items():
            print(f"  memory: {n_images} images ...", flush=True)
            runs[n_images] = measure(n_images, folder, tmp / f"corpus-{n_images}")
    small, large = (runs[n] for n in sizes)
    growth = {
        "driver": large["driver_peak_rss_mib"] / small["driver_peak_rss_mib"],
        "worker": large["worker_peak_rss_mib"] / small["worker_peak_rss_mib"],
    }
    within = [
        w["rss_after_last_shard_mib"] - w["rss_after_first_shard_mib"] for w in large["workers"]
    ]
    # A leak shows as a slope: resident memory after each shard, from the first shard on (the
    # models are loaded by then), fitted by least squares; MiB per shard, per worker.
    slopes = [
        shard_slope(w["rss_after_each_shard_mib"]) for w in large["workers"] if w["shards"] >= 3
    ]
    notes = [
        f"memory: fresh driver process per size, {WORKERS} workers, shards of {SHARD_SIZE} "
        f"({small['n_shards']} and {large['n_shards']} shards); driver peak "
        f"{small['driver_peak_rss_mib']:.0f} -> {large['driver_peak_rss_mib']:.0f} MiB, worker "
        f"peak {small['worker_peak_rss_mib']:.0f} -> {large['worker_peak_rss_mib']:.0f} MiB "
        f"(models loaded included) for {sizes[0]} -> {sizes[1]} images; in the {sizes[1]}-image "
        f"run each worker's RSS changed by {', '.join(f'{d:+.0f}' for d in within)} MiB "
        "from its first shard to its last (least-squares slope "
        f"{', '.join(f'{v:+.2f}' for v in slopes)} MiB per shard). Ray's own daemons are not "
        "counted."
    ]
    if any(r["n_errors"] for r in runs.values()):
        notes.append("memory: WARNING some images became errors rows")
    return {
        "sizes": list(sizes),
        "runs": {str(n): r for n, r in runs.items()},
        "peak_growth_ratio": growth,
        "within_run_worker_rss_change_mib": within,
        "worker_rss_slope_mib_per_shard": slopes,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 and 24 images")
    parser.add_argument("--child", nargs=2, metavar=("IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_run(Path(args.child[0]), Path(args.child[1]))))
        return 0
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
