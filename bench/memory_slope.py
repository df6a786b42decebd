"""Does a worker's memory grow with the shards it does? Resident memory after each of many
shards, in one process that runs the engine's own shard processor (the code a Ray worker
runs, here in-process: ``run.executor=local``), default config, one image per shard.

    .venv/bin/python bench/memory_slope.py                    # 500 shards, two arms
    .venv/bin/python bench/memory_slope.py --shards 100 --arms default
    .venv/bin/python bench/memory_slope.py --tracemalloc      # + Python allocations that grew

Arms (each a fresh process): ``default`` (glibc malloc as is) and ``arena2``
(``MALLOC_ARENA_MAX=2``: fewer malloc arenas, a common cure for RSS that creeps in
multi-threaded processes). The images are 200 of ``workload.make_images`` (the demo
photos cycled, every copy distinct), copied under new names up to ``--shards``. Per arm: resident memory (``VmRSS``) after every shard; the
least-squares slope over the shards after the first ``--warmup`` (allocators and caches
fill during the first shards; a leak is what goes on growing), in MiB per shard; the rise
from the end of warm-up to the last shard; peak (``VmHWM``). With ``--tracemalloc``, the
Python allocations that grew most between the end of warm-up and the last shard (file and
line), which names a leak in Python code (not one in a native library).

Writes ``bench/results/memory_slope.json`` (and its history copy). Goal (issue 27): slope
<= 0.2 MiB per shard over >= 500 shards.
"""

from __future__ import annotations

import argparse
import json
import os
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

from results_store import new_run_id, save_result  # noqa: E402

MIB = 1024 * 1024
ARMS = {"default": {}, "arena2": {"MALLOC_ARENA_MAX": "2"}}


def child(images: Path, out: Path, warmup: int, trace: bool) -> dict:
    """One arm, in this process: the run, then RSS per shard (in the order they ended)."""
    import tracemalloc

    import workload

    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config

    config = load_config(None, ["run.executor=local", "run.shard_size=1"])
    snapshots = {}
    original = workload.TimedShardProcessor.process
    done = [0]

    def process(self, shard):
        result = original(self, shard)
        done[0] += 1
        if trace and done[0] == warmup:
            tracemalloc.start(8)
            snapshots["warm"] = tracemalloc.take_snapshot()
        return result

    workload.TimedShardProcessor.process = process
    with workload.timed_processor():
        annotate_corpus(config, str(images), str(out), False)
    if trace:
        snapshots["end"] = tracemalloc.take_snapshot()
    markers = [json.loads(p.read_text()) for p in (out / "iteration=0" / "_shards").glob("*.json")]  # fmt: skip
    stamps = sorted((m["bench"] for m in markers), key=lambda b: b["process_end"])
    grown = []
    if trace:
        for stat in snapshots["end"].compare_to(snapshots["warm"], "lineno")[:10]:
            frame = stat.traceback[0]
            grown.append({"where": f"{frame.filename}:{frame.lineno}", "kib": round(stat.size_diff / 1024, 1), "count": stat.count_diff})  # fmt: skip
    return {
        "rss_mib": [round(s["rss_bytes"] / MIB, 2) for s in stamps],
        "peak_mib": round(max(s["peak_rss_bytes"] for s in stamps) / MIB, 1),
        "python_grown": grown,
    }


def slope(values: list[float]) -> float:
    import numpy as np

    x = np.arange(len(values), dtype=float)
    return round(float(np.polyfit(x, np.asarray(values, float), 1)[0]), 4)


def run_arm(name: str, images: Path, work: Path, args) -> dict:
    out = work / f"corpus-{name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **ARMS[name]}
    started = time.time()
    completed = subprocess.run(
        [sys.executable, __file__, "--child", str(images), str(out), str(args.warmup),
         "1" if args.tracemalloc else "0"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"arm {name} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    after = result["rss_mib"][args.warmup :]
    return {
        "env": ARMS[name],
        "shards": len(result["rss_mib"]),
        "slope_mib_per_shard": slope(after) if len(after) >= 3 else None,
        "rise_after_warmup_mib": round(after[-1] - after[0], 1) if after else None,
        "rss_at_warmup_mib": after[0] if after else None,
        "rss_last_mib": result["rss_mib"][-1],
        "peak_mib": result["peak_mib"],
        "rss_mib": result["rss_mib"],
        "python_grown": result["python_grown"],
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        images, out, warmup, trace = args.child
        print(json.dumps(child(Path(images), Path(out), int(warmup), trace == "1")))
        return

    import workload
    from machine import describe_machine

    run_id = new_run_id()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fld-memslope-") as temp:
        work = Path(temp)
        images = work / "images"
        distinct = workload.make_images(min(args.shards, 200), work / "distinct")
        images.mkdir()
        for index in range(args.shards):  # copies under new names: one shard each still
            source = distinct[index % len(distinct)]
            (images / f"{index:05d}_{source.name}").write_bytes(source.read_bytes())
        arms = {}
        for name in args.arms:
            print(f"memory_slope: arm {name}, {args.shards} shards ...", file=sys.stderr, flush=True)  # fmt: skip
            arms[name] = run_arm(name, images, work, args)
            print(f"  slope {arms[name]['slope_mib_per_shard']} MiB/shard, rise "
                  f"{arms[name]['rise_after_warmup_mib']} MiB after shard {args.warmup}", file=sys.stderr)  # fmt: skip
    headlines = [
        {
            "measure": f"RSS slope after shard {args.warmup}, MiB per shard ({name}, {arm['shards']} shards)",  # fmt: skip
            "ratio": arm["slope_mib_per_shard"],
            "target": "<= 0.2",
            "met": arm["slope_mib_per_shard"] is not None and arm["slope_mib_per_shard"] <= 0.2,
        }
        for name, arm in arms.items()
    ]
    result = {
        "benchmark": "memory_slope",
        "run_id": run_id,
        "shards": args.shards,
        "warmup": args.warmup,
        "arms": arms,
        "headlines": headlines,
        "bench_seconds": round(time.time() - started, 1),
        "machine": describe_machine(),
    }
    kept = save_result("memory_slope", result, run_id)
    print(json.dumps(headlines, indent=2))
    print(f"kept: {kept}")


if __name__ == "__main__":
    main()
