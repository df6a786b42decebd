"""Planning at scale: what the driver of ``fld run`` costs before and around the images, for
1M and 10M generated URIs (a Parquet list of paths, as an img2dataset-style list; no image
is needed, none is read).

Two measurements, each in a fresh child process (``resource.getrusage`` peak RSS is per
process; the child is what ``fld run``'s driver does, through the same functions):

- ``plan``: ``IterationWriter.plan_for`` (the input listed in batches, sorted out of core by
  DuckDB, ``_plan.parquet`` and ``_plan.json`` written), ``prepare``, ``done_indexes``, then
  every shard streamed from the plan (``iter_shards``, as the executor consumes them):
  driver peak RSS and seconds. Arms 1M and 10M alternate; 3 repeats; medians.
- ``rerun``: the whole ``fld run LIST --out CORPUS`` command line (Python start, imports,
  config, the committed check) on a committed 10M-image iteration: seconds, 3 repeats,
  median. The iteration is made by the engine's own writer: the real plan, one real marker
  per shard (156,250 of shard size 64), the compacted state a 10M-image run leaves (one part
  file per table, here with no rows, and ``_COMPACTED.json`` listing every shard), the
  real commit. A committed rerun reads ``_plan.json``, ``run.json`` and the compaction
  manifest, lists the table folders; no marker, no data file, no input.

Targets (issue 15): driver peak RSS at 10M under 1 GB; committed rerun under 5 s.

    python bench/planning.py            # 1M and 10M; bench/results/planning.json
    python bench/planning.py --quick    # 20k and 100k, history only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_store import new_run_id, save_result  # noqa: E402

SHARD_SIZE = 64
RSS_TARGET_MB = 1024
RERUN_TARGET_S = 5.0


def generate_list(path: Path, n: int, seed: int = 15) -> None:
    """``n`` distinct paths in random order, ``/data/part-XXXX/<16 hex digits>.jpg`` (about
    44 bytes each), written in row groups of 500k (this process never holds them all)."""
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, pa.schema([("path", pa.string())])) as writer:
        for start in range(0, n, 500_000):
            count = min(500_000, n - start)
            ids = rng.permutation(count) + start
            keys = rng.integers(0, 2**62, count, dtype=np.int64)
            values = [f"/data/part-{i % 4096:04d}/{k:016x}-{i}.jpg" for i, k in zip(ids, keys, strict=True)]  # fmt: skip
            writer.write_table(pa.table({"path": values}))


def child_plan(listing: str, out: str) -> dict:
    """In a child process: the driver's planning, as ``annotate_corpus`` does it."""
    import resource

    from engine.corpus import Corpus, IterationWriter
    from engine.plan import build_plan, iter_shards

    began = time.perf_counter()
    writer = IterationWriter(Corpus(out), 0)
    request = {"input": listing, "shard_size": SHARD_SIZE, "config_hash": "bench"}
    plan = writer.plan_for(request, lambda target: build_plan(listing, None, SHARD_SIZE, target))
    planned = time.perf_counter() - began
    writer.prepare(plan)
    done = writer.done_indexes()
    shards = uris = 0
    for shard in iter_shards(writer.path / plan["plan_file"], int(plan["digits"]), skip=done):
        shards += 1
        uris += len(shard.uris)
    assert shards == plan["n_shards"] and uris == plan["n_inputs"], (shards, uris, plan)
    return {
        "n_inputs": plan["n_inputs"],
        "n_shards": plan["n_shards"],
        "plan_seconds": round(planned, 2),
        "total_seconds": round(time.perf_counter() - began, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_child(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=REPO
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def committed_corpus(listing: Path, out: Path) -> float:
    """A committed 10M-image iteration made by the engine's writer (see the docstring);
    returns the seconds it took."""
    from engine.compact import MANIFEST_FORMAT
    from engine.corpus import COMPACTED, Corpus, IterationWriter, atomic_write_json
    from engine.plan import build_plan
    from engine.schemas import TABLES
    from pipelines.annotate import normalized_input, output_config_hash
    from pipelines.config import load_config

    began = time.perf_counter()
    config = load_config(None, [f"run.shard_size={SHARD_SIZE}"])
    writer = IterationWriter(Corpus(out), 0)
    request = {
        "input": normalized_input(str(listing)),
        "shard_size": SHARD_SIZE,
        "config_hash": output_config_hash(config),
    }
    plan = writer.plan_for(request, lambda target: build_plan(str(listing), None, SHARD_SIZE, target))  # fmt: skip
    writer.prepare(plan)
    n_shards, digits = int(plan["n_shards"]), int(plan["digits"])
    names = [f"{k:0{digits}d}" for k in range(n_shards)]
    for k, name in enumerate(names):
        rows = min(SHARD_SIZE, int(plan["n_inputs"]) - k * SHARD_SIZE)
        writer.write_marker(name, {"shard": k, "n_inputs": rows, "rows": {"images": rows}})
    parts = []
    for table, schema in TABLES.items():
        pq.write_table(schema.empty_table(), writer.path / table / "part=00000.parquet")
    parts.append(
        {
            "name": "00000",
            "shards": names,
            "files": {table: f"{table}/part=00000.parquet" for table in TABLES},
            "shard_rows": {table: [0] * n_shards for table in TABLES},
            "rows": {table: 0 for table in TABLES},
        }
    )
    atomic_write_json(
        writer.path / COMPACTED,
        {
            "format": MANIFEST_FORMAT,
            "target_rows": 250_000,
            "by_table": "images",
            "n_shards": n_shards,
            "rows": {},
            "parts": parts,
        },  # fmt: skip
    )
    counts = {"rows": {"images": int(plan["n_inputs"])}, "n_inputs": int(plan["n_inputs"])}
    writer.commit({"iteration": 0, "plan": plan, "config": config.to_dict(), "counts": counts})
    return time.perf_counter() - began


def rerun_seconds(listing: Path, out: Path) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fld"), "run", str(listing), "--out", str(out),
         "--shard-size", str(SHARD_SIZE), "--quiet"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if result.returncode != 0 or "nothing to do" not in result.stdout:
        raise RuntimeError(result.stdout + result.stderr[-3000:])
    return seconds, result.stdout.strip()


def run(quick: bool = False, repeats: int = 3, work: str | None = None) -> dict:
    """Both measurements (see the module docstring); the result's ``headlines`` are
    ``(measure, value, target)``."""
    sizes = [20_000, 100_000] if quick else [1_000_000, 10_000_000]
    scratch = Path(work or tempfile.mkdtemp(prefix="fld-planning-"))
    lists = {}
    for n in sizes:
        lists[n] = scratch / f"list-{n}.parquet"
        if not lists[n].exists():
            print(f"generating {n:,} paths", file=sys.stderr)
            generate_list(lists[n], n)
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for repeat in range(repeats):  # the arms alternate
        for n in sizes if repeat % 2 == 0 else reversed(sizes):
            out = scratch / f"corpus-{n}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            runs[n].append(run_child(str(lists[n]), str(out)))
            shutil.rmtree(out, ignore_errors=True)
            print(f"plan {n:,}: {runs[n][-1]}", file=sys.stderr)
    largest = sizes[-1]
    committed = scratch / f"committed-{largest}"
    shutil.rmtree(committed, ignore_errors=True)
    made = committed_corpus(lists[largest], committed)
    reruns = [rerun_seconds(lists[largest], committed) for _ in range(repeats)]
    shutil.rmtree(committed, ignore_errors=True)
    if not work:
        shutil.rmtree(scratch, ignore_errors=True)
    plan = {
        str(n): {
            "runs": runs[n],
            "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs[n]),
            "median_plan_seconds": statistics.median(r["plan_seconds"] for r in runs[n]),
            "median_total_seconds": statistics.median(r["total_seconds"] for r in runs[n]),
        }
        for n in sizes
    }
    rerun_median = round(statistics.median(seconds for seconds, _ in reruns), 2)
    rss = plan[str(largest)]["median_peak_rss_mb"]
    return {
        "headlines": [
            (f"driver peak RSS planning {largest:,} URIs, MB", rss, RSS_TARGET_MB),
            (
                f"seconds to plan {largest:,} URIs and stream its shards",
                plan[str(largest)]["median_total_seconds"],
                None,
            ),  # fmt: skip
            (
                f"rerun of a committed {largest:,}-image iteration, seconds (fld run)",
                rerun_median,
                RERUN_TARGET_S,
            ),  # fmt: skip
        ],
        "notes": [
            f"planning: {', '.join(f'{n:,}' for n in sizes)} generated paths in a Parquet list, "
            f"shard size {SHARD_SIZE}; each arm in a fresh child process (peak RSS is its "
            "ru_maxrss), arms alternating, median of the repeats; the committed rerun is the "
            "whole `fld run` command line"
        ],
        "measurements": {
            "what": __doc__.split("\n\n")[1].strip(),
            "shard_size": SHARD_SIZE,
            "plan": plan,
            "committed_rerun": {
                "n_inputs": largest,
                "seconds": [round(seconds, 2) for seconds, _ in reruns],
                "median_seconds": rerun_median,
                "answer": reruns[0][1],
                "corpus_made_in_seconds": round(made, 1),
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k and 100k URIs, history only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=None, help="scratch folder (kept; default: a temporary one)")  # fmt: skip
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_plan(*args.child)))
        return 0
    run_id = new_run_id()
    result = run(args.quick, args.repeats, args.work)
    headlines = [
        {"measure": m, "value": v, "target": t, "met": None if t is None else v <= t}
        for m, v, t in result["headlines"]
    ]
    payload = {**result, "headlines": headlines, "benchmark": "planning", "machine": {"cpus": os.cpu_count()}}  # fmt: skip
    kept = save_result("planning", payload, run_id, latest=not args.quick)
    print(json.dumps(headlines, indent=2))
    print(f"kept: {kept}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
