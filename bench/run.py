"""fld-engine benchmarks (``make bench``): every headline is a ratio of two measurements
taken in the same run, on the same images, on the same machine.

    .venv/bin/python bench/run.py                 # 48 images
    .venv/bin/python bench/run.py --quick         # smoke run: 8 images, smaller writer shard
    .venv/bin/python bench/run.py --only writer   # one benchmark (or a comma list)

Benchmarks:

- ``overhead``: engine wall time / standalone model time. Standalone: read, decode
  (``engine.imaging.decode_image``) and call the default config's annotators directly (and
  the filters whose kept rows later annotators read), in the engine's shards and
  batches, 1 thread, models loaded before the clock starts. Engine:
  ``annotate_corpus`` with the Ray executor, 1 worker, 1 thread. Two engine figures:
  (a) total: Ray start + the whole call (actor start, imports, model loading, shards,
  Parquet writes, commit); (b) steady: from the moment the worker has its models loaded
  to the end of the call. For batch sizes 1 and 8. Targets: <= 1.10 at batch 1, <= 1.05
  at batch >= 8.
- ``scaling``: throughput with 2 workers / with 1 worker (1 thread each), >= 4 shards.
  Target >= 1.7.

"Total" means one thing in every benchmark: Ray start (``ray.init``, once per bench run)
plus the whole ``annotate_corpus`` call. The two arms of a ratio alternate which runs
first, ``--repeats`` times (default 3); a headline is the median ratio with the spread
(min, max) of the single repeats, and "met" is judged on the median.
- ``writer``: ``IterationWriter.write_shard`` rows/s / plain ``pyarrow.parquet.write_table``
  rows/s on the same synthetic shard (regions with the contract schema). Target >= 0.6.
- ``sql_stats``: seconds per ``fld stats`` query over generated corpora of 1M, 10M and 50M
  region rows (bench/sql_stats.py); the one absolute headline (target: <= 1 s per query
  at 10M on this machine), plus growth ratios of summed query time between sizes.
- ``planning``: the driver's peak RSS and seconds planning 1M and 10M generated URIs, and
  the seconds of ``fld run`` on a committed 10M-image iteration (bench/planning.py; absolute
  headlines, targets < 1024 MB and < 5 s).
- ``ssd_speed``: ms per image of the torch SSD (``ssd_coco@2``) / OpenCV's ``cv2.dnn`` on
  the same graph, batch 1 and 8, 2 threads (bench/ssd_speed.py; the torch arm alone where
  OpenCV has no ``readNetFromTensorflow``).

Results: ``bench/results/<benchmark>.json`` (absolute seconds included) and
``bench/results/summary.json`` (machine, headlines): the latest run; every run is also
kept under ``bench/results/history/<run_id>/`` (``bench/results_store.py``).
"""

from __future__ import annotations

import os

# The thread budget of one engine worker, for the standalone loop in this process too; set
# before numpy, OpenCV or ONNX Runtime are imported.
os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(REPO), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

import machine  # noqa: E402
import workload  # noqa: E402
import writer_bench  # noqa: E402
from results_store import new_run_id, save_result  # noqa: E402

from pipelines.config import DEFAULT_CONFIG_PATH, ConfigError, EngineConfig, load_config  # noqa: E402

BENCHMARKS = (
    "overhead",
    "setup_overlap",
    "scaling",
    "writer",
    "text_filter",
    "export_memory",
    "naive_json",
    "memory",
    "sql_stats",
    "pipelined",
    "planning",
    "ssd_speed",
)
# Those that run the engine inside this process's Ray, and those that need the images.
RAY_BENCHMARKS = ("overhead", "setup_overlap", "scaling")
IMAGE_BENCHMARKS = (*RAY_BENCHMARKS, "naive_json", "memory")
RESULTS_DIR = BENCH_DIR / "results"
THREADS = 1


# --------------------------------------------------------------------------- helpers


def engine_config(
    ctx: argparse.Namespace,
    batch_size: int,
    workers: int,
    shard_size: int | None = None,
    setup: str = "before_work",
) -> EngineConfig:
    overrides = [
        "run.executor=ray",
        f"run.workers={workers}",
        f"run.threads_per_worker={THREADS}",
        f"run.batch_size={batch_size}",
        f"run.setup={setup}",
    ]
    if shard_size is not None:
        overrides.append(f"run.shard_size={shard_size}")
    return load_config(ctx.config_path, overrides)


def headline(
    measure: str,
    ratio: float,
    op: str | None = None,
    target: float | None = None,
    per_repeat: list[float] | None = None,
):
    """One headline: the median ``ratio``, whether it meets the target, and the spread
    (min, max) of the ratios of the single repeats when there are several."""
    met = None
    if op == "<=":
        met = ratio <= target
    elif op == ">=":
        met = ratio >= target
    return {
        "measure": measure,
        "ratio": round(ratio, 4),
        "target": f"{op} {target:.2f}" if op else None,
        "met": met,
        "repeats": len(per_repeat) if per_repeat else 1,
        "spread": [round(min(per_repeat), 4), round(max(per_repeat), 4)] if per_repeat else None,
    }


def median(values) -> float:
    return statistics.median(list(values))


def share(seconds: float, of: float) -> str:
    return f"{100 * seconds / of:+.1f}%"


def start_ray() -> float:
    """Start the local Ray the engine runs reuse; returns the seconds ``ray.init`` took."""
    import ray

    from engine.executors import environment
    from engine.offline import apply_offline_env

    env = apply_offline_env()
    env["OMP_NUM_THREADS"] = str(THREADS)
    began = time.perf_counter()
    with environment(env):  # as RayExecutor.start_ray does: workers inherit it
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    seconds = time.perf_counter() - began
    # bench/ is not an installed package: ship TimedShardProcessor's code to the workers.
    ray.cloudpickle.register_pickle_by_value(workload)
    return seconds


def set_bench_ray(ctx: argparse.Namespace, running: bool) -> None:
    """Start this process's Ray for the benchmarks that run the engine in it (its start-up
    time goes into ``ctx.ray_init_s``, measured once); stop it before those that launch
    their own ``fld run`` processes, which start their own."""
    import ray

    if running and not ray.is_initialized():
        seconds = start_ray()
        ctx.ray_init_s = ctx.ray_init_s or seconds
    elif not running and ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------- benchmarks


def cpu_note(standalone: dict, engine: dict) -> str:
    """CPU seconds per wall second: 1.0 is one busy core; under 1 the process waited (other
    load on the machine), over 1 it ran more than one thread."""
    return (
        "CPU per wall second (1.00 = one full core): "
        f"standalone {standalone['cpu_s'] / standalone['wall_s']:.2f}, "
        f"engine worker {engine['worker_cpu_s'] / engine['worker_busy_s']:.2f}"
    )


def filter_seconds(stage_s: dict) -> float:
    """Seconds the worker spent in filters (geometry, confidence, NMS, fusion, the spaCy
    text filter, phrase confidence): the ``filter:*`` timings of the shard markers."""
    return sum(seconds for key, seconds in stage_s.items() if key.startswith("filter:"))


def gap_breakdown(standalone: dict, engine: dict, config: EngineConfig) -> dict:
    """Seconds by which the engine's steady state exceeds the standalone loop, by cause."""
    s_stages, e_stages = standalone["stage_s"], engine["stage_s"]
    sources = [spec.build().source for spec in config.annotators]

    def total(stages: dict, keys) -> float:
        return sum(stages.get(key, 0.0) for key in keys)

    filters = {k for k in (*s_stages, *e_stages) if k.startswith("filter:")}
    io = ("read", "decode")
    busy = engine["worker_busy_s"]
    annotator_s, annotator_e = total(s_stages, sources), total(e_stages, sources)
    return {
        "annotator_ratio": annotator_e / annotator_s if annotator_s else float("nan"),
        "parts": {
            "annotator calls": annotator_e - annotator_s,
            "filters": total(e_stages, filters) - total(s_stages, filters),
            "read+decode": total(e_stages, io) - total(s_stages, io),
            "to_arrow": e_stages.get("to_arrow", 0.0),
            "rest of process() (hashing, markers, loop)": busy
            - sum(e_stages.values())
            - (standalone["wall_s"] - sum(s_stages.values())),
            "outside process() (Ray, Parquet writes, commit)": engine["steady_s"] - busy,
        },
    }


def bench_overhead(ctx: argparse.Namespace) -> dict:
    headlines, notes, measurements = [], [], {}
    for batch_size in (1, 8):
        config = engine_config(ctx, batch_size, workers=1)
        runs = []
        for repeat in range(ctx.repeats):
            # The two arms alternate which goes first, so neither always meets a warmer or
            # a colder machine (file cache, CPU clocks).
            engine_dir = ctx.tmp / f"overhead-b{batch_size}-r{repeat}"
            if repeat % 2 == 0:
                standalone = workload.run_standalone(config, ctx.images_dir)
                engine = workload.run_engine(config, ctx.images_dir, engine_dir)
            else:
                engine = workload.run_engine(config, ctx.images_dir, engine_dir)
                standalone = workload.run_standalone(config, ctx.images_dir)
            runs.append({"standalone": standalone, "engine": engine})
            same = all(engine[k] == standalone[k] for k in ("n_images", "n_regions", "n_texts"))
            if not same or engine["n_errors"]:
                notes.append(
                    f"batch {batch_size}: WARNING not the same work: engine wrote "
                    f"{engine['n_images']} images, {engine['n_regions']} regions, "
                    f"{engine['n_texts']} texts, {engine['n_errors']} errors; standalone made "
                    f"{standalone['n_images']}, {standalone['n_regions']}, {standalone['n_texts']}"
                )
        base = median(r["standalone"]["wall_s"] for r in runs)
        total = median(ctx.ray_init_s + r["engine"]["wall_s"] for r in runs)
        steady = median(r["engine"]["steady_s"] for r in runs)
        target = 1.10 if batch_size == 1 else 1.05
        total_each = [
            (ctx.ray_init_s + r["engine"]["wall_s"]) / r["standalone"]["wall_s"] for r in runs
        ]
        steady_each = [r["engine"]["steady_s"] / r["standalone"]["wall_s"] for r in runs]
        headlines.append(headline(f"batch {batch_size}: engine total (a) / standalone", total / base, "<=", target, total_each))  # fmt: skip
        headlines.append(headline(f"batch {batch_size}: engine steady (b) / standalone", steady / base, "<=", target, steady_each))  # fmt: skip

        # Where the steady-state gap goes (first repeat), as shares of the standalone time.
        run = runs[0]
        gap = gap_breakdown(run["standalone"], run["engine"], config)
        standalone_wall = run["standalone"]["wall_s"]
        headlines.append(headline(f"batch {batch_size}: annotator time in worker / standalone", gap["annotator_ratio"]))  # fmt: skip
        filter_s = median(filter_seconds(r["engine"]["stage_s"]) for r in runs)
        headlines.append(headline(f"batch {batch_size}: filter share (confidence, NMS, fusion, spaCy, ...) of engine total", filter_s / total, "<=", 0.05))  # fmt: skip
        startup = ctx.ray_init_s + run["engine"]["until_first_shard_s"]
        parts = ", ".join(
            f"{label} {share(seconds, standalone_wall)}" for label, seconds in gap["parts"].items()
        )
        notes.append(
            f"batch {batch_size}: startup before the first shard = "
            f"{startup / standalone_wall:.2f}x the standalone time (ray.init "
            f"{ctx.ray_init_s:.1f}s + actor start, imports, model loading "
            f"{run['engine']['until_first_shard_s']:.1f}s); steady gap "
            f"{share(run['engine']['steady_s'] - standalone_wall, standalone_wall)} = {parts}; "
            f"{cpu_note(run['standalone'], run['engine'])}"
        )
        measurements[f"batch_{batch_size}"] = {
            "ray_init_s": ctx.ray_init_s,
            "runs": runs,
            "median_standalone_s": base,
            "median_engine_total_s": total,
            "median_engine_steady_s": steady,
            "steady_gap_s_first_run": gap["parts"],
        }
    notes.insert(
        0,
        "overhead: standalone = read + decode + the configured annotators (and the filters whose "
        "kept rows later annotators read) called directly in a loop, same shards, batches and "
        "order, 1 thread, models loaded untimed; (a) total = ray.init + the whole "
        "annotate_corpus call (actor start, imports, model loading, shards, Parquet writes, "
        "commit); (b) steady = from the worker having its models loaded to the end of the "
        "call. Only the engine hashes for image_id, checks duplicates, isolates failures per "
        "image, builds Arrow tables and writes Parquet.",
    )
    return {"headlines": headlines, "notes": notes, "measurements": measurements}


def bench_setup_overlap(ctx: argparse.Namespace) -> dict:
    """``run.setup: overlapped`` (the worker's models load in a thread while the first
    batches run through those already loaded) against ``before_work`` (all loaded first),
    whole ``annotate_corpus`` calls on the workload, 1 worker, batch 1 and 8, alternated."""
    headlines, notes, measurements = [], [], {}
    for batch_size in (1, 8):
        pairs = []
        for repeat in range(ctx.repeats):
            arms = ("overlapped", "before_work") if repeat % 2 == 0 else ("before_work", "overlapped")  # fmt: skip
            pair = {}
            for arm in arms:
                config = engine_config(ctx, batch_size, workers=1, setup=arm)
                out = ctx.tmp / f"setup-{arm}-b{batch_size}-r{repeat}"
                pair[arm] = workload.run_engine(config, ctx.images_dir, out)
                shutil.rmtree(out, ignore_errors=True)
            same = all(pair["overlapped"][k] == pair["before_work"][k] for k in ("n_images", "n_regions", "n_texts", "n_phrase_rows", "n_errors"))  # fmt: skip
            if not same:
                notes.append(f"setup_overlap: batch {batch_size}: WARNING the two arms wrote different row counts")  # fmt: skip
            pairs.append(pair)
        each = [p["overlapped"]["wall_s"] / p["before_work"]["wall_s"] for p in pairs]
        ratio = median(each)
        headlines.append(headline(f"batch {batch_size}: whole run, setup overlapped / before_work", ratio, per_repeat=each))  # fmt: skip
        waits = [p["overlapped"]["stage_s"].get("setup_wait", 0.0) for p in pairs]
        saved = median(p["before_work"]["wall_s"] - p["overlapped"]["wall_s"] for p in pairs)
        notes.append(
            f"setup_overlap: batch {batch_size}: overlapped saves {saved:+.1f} s a run "
            f"(median of {len(pairs)} alternated pairs); its first batches waited "
            f"{median(waits):.1f} s in all for steps still loading"
        )
        measurements[f"batch_{batch_size}"] = pairs
    return {"headlines": headlines, "notes": notes, "measurements": measurements}


def bench_scaling(ctx: argparse.Namespace) -> dict:
    shard_size = max(1, ctx.n_images // 8)
    n_shards = -(-ctx.n_images // shard_size)
    results: dict[int, list[dict]] = {1: [], 2: []}
    configs = {w: engine_config(ctx, 8, workers=w, shard_size=shard_size) for w in (1, 2)}
    for repeat in range(ctx.repeats):
        # 1 and 2 workers alternate which goes first, repeat by repeat.
        for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
            results[workers].append(
                workload.run_engine(
                    configs[workers], ctx.images_dir, ctx.tmp / f"scaling-w{workers}-r{repeat}"
                )
            )
    # "total" as everywhere in this file: Ray start + the whole annotate_corpus call.
    total = {w: median(ctx.ray_init_s + r["wall_s"] for r in runs) for w, runs in results.items()}
    steady = {w: median(r["steady_s"] for r in runs) for w, runs in results.items()}
    pairs = list(zip(results[1], results[2], strict=True))
    total_each = [(ctx.ray_init_s + a["wall_s"]) / (ctx.ray_init_s + b["wall_s"]) for a, b in pairs]
    steady_each = [a["steady_s"] / b["steady_s"] for a, b in pairs]
    headlines = [
        headline(
            "2 workers / 1 worker throughput, total", total[1] / total[2], ">=", 1.7, total_each
        ),  # fmt: skip
        headline(
            "2 workers / 1 worker throughput, steady", steady[1] / steady[2], ">=", 1.7, steady_each
        ),  # fmt: skip
    ]
    pids = [len(r["worker_pids"]) for r in results[2]]
    cpu = {
        w: f"{median(r['worker_cpu_s'] / r['worker_busy_s'] for r in runs):.2f}"
        for w, runs in results.items()
    }
    notes = [
        f"scaling: {ctx.n_images} images in {n_shards} shards of {shard_size}, batch 8, 1 thread "
        f"per worker; total = Ray start + the whole call, as in overhead; steady = from the first "
        f"worker ready to the end. This machine has {ctx.machine['usable_cpus']} usable CPUs "
        f"(load average {ctx.machine['load_average_at_start']} at start): 2 workers plus the "
        f"driver's writes share them, so other load on the machine lowers this ratio. CPU per "
        f"wall second of each worker inside process() (1.00 = a full core): {cpu[1]} with 1 "
        f"worker, {cpu[2]} with 2.",
    ]
    if n_shards < 4:
        notes.append(f"scaling: WARNING only {n_shards} shards (use --images >= 4)")
    if min(pids) < 2:
        notes.append("scaling: WARNING the 2-worker run used only one worker process")
    return {
        "headlines": headlines,
        "notes": notes,
        "measurements": {"shard_size": shard_size, "n_shards": n_shards, "runs": results},
    }


def bench_writer(ctx: argparse.Namespace) -> dict:
    tables = writer_bench.synthetic_shard(ctx.rows)
    n_rows = sum(table.num_rows for table in tables.values())
    timing = writer_bench.bench_writes(tables, ctx.tmp / "writer", ctx.writer_repeats)
    median_s = timing["median_s"]
    build_s = writer_bench.rows_build_seconds(tables)
    headlines = [
        headline(
            "write_shard rows/s / plain write_table rows/s",
            median_s["plain_default"] / median_s["write_shard"],
            ">=",
            0.6,
        ),  # fmt: skip
        headline(
            "write_shard rows/s / write_table(zstd) rows/s",
            median_s["plain_zstd"] / median_s["write_shard"],
        ),  # fmt: skip
    ]
    notes = [
        f"writer: one shard of {ctx.rows} region rows (+{tables['images'].num_rows} image rows, "
        f"other tables empty), median of {ctx.writer_repeats} interleaved writes; plain = "
        f"pq.write_table per table with pyarrow defaults (snappy); write_shard uses zstd, a "
        f"temporary name + os.replace per file, a schema check and a JSON marker. Building the "
        f"regions table from row dicts (table_from_rows, as ShardProcessor.to_tables does) "
        f"takes {build_s / median_s['write_shard']:.1f}x the write_shard time.",
    ]
    return {
        "headlines": headlines,
        "notes": notes,
        "measurements": {
            "rows": n_rows,
            "region_rows": ctx.rows,
            "table_from_rows_s": build_s,
            "rows_per_s": {key: n_rows / value for key, value in median_s.items()},
            **timing,
        },
    }


def bench_text_filter(args: argparse.Namespace) -> dict:
    """The spaCy complexity filter's words/s against plain nlp.pipe (bench/text_filter.py)."""
    import text_filter

    result = text_filter.run(quick=args.quick)
    return {key: result[key] for key in ("headlines", "notes", "measurements")}


def bench_export_memory(args: argparse.Namespace) -> dict:
    """Peak memory of the exports at two corpus sizes (bench/export_memory.py)."""
    import export_memory

    result = export_memory.run(quick=args.quick)
    sizes = sorted(result["sizes"])
    headlines = [
        headline(
            f"{fmt}: peak RSS growth {sizes[-1]:,} / {sizes[0]:,} region rows", ratio, "<=", 1.5
        )
        for fmt, ratio in result["peak_growth_ratio"].items()
        if fmt != "naive"
    ]
    headlines.append(
        headline("naive (whole table fetched), for contrast", result["peak_growth_ratio"]["naive"])
    )
    notes = [
        f"export_memory: exports of synthetic corpora of {sizes[0]:,} and {sizes[-1]:,} region rows, "
        "each in a fresh process; ratio of peak RSS growth above the post-import baseline."
    ]
    return {"headlines": headlines, "notes": notes, "measurements": result}


def bench_naive_json(ctx: argparse.Namespace) -> dict:
    """A naive per-image JSON script against ``fld run`` (bench/naive_json.py)."""
    import naive_json

    result = naive_json.run(
        quick=ctx.quick, images_dir=ctx.images_dir, n_images=ctx.n_images, repeats=ctx.repeats
    )
    headlines = [
        headline(
            "naive per-image JSON script time / fld run time",
            result["speedup"],
            per_repeat=result["speedup_per_repeat"],
        ),
    ]
    return {"headlines": headlines, "notes": result.pop("notes"), "measurements": result}


def bench_memory(ctx: argparse.Namespace) -> dict:
    """Driver and worker peak RSS per image count (bench/memory_growth.py)."""
    import memory_growth

    result = memory_growth.run(quick=ctx.quick, images_dir=ctx.images_dir)
    small, large = result["sizes"]
    # The leak check is the slope of each worker's RSS per shard after set-up (the peaks
    # include ~1.6 GB of models, so a 10% threshold on them would hide a real leak).
    slopes = result["worker_rss_slope_mib_per_shard"]
    headlines = [
        headline(
            f"worker RSS slope after set-up, MiB per shard ({large} images)",
            max(slopes),
            "<=",
            1.0,
            slopes,
        ),  # fmt: skip
        *(
            headline(f"{role} peak RSS, {large} / {small} images", ratio)
            for role, ratio in result["peak_growth_ratio"].items()
        ),
    ]
    return {"headlines": headlines, "notes": result.pop("notes"), "measurements": result}


def bench_sql_stats(ctx: argparse.Namespace) -> dict:
    """``fld stats`` over generated corpora of 1M, 10M and 50M region rows (bench/sql_stats.py):
    seconds per standard query (target: <= 1 s at 10M) and growth with the corpus."""
    import sql_stats

    result = sql_stats.run(quick=ctx.quick)
    print(result["measurements"]["table"], flush=True)
    headlines = [
        headline(measure, value, "<=" if target else None, target)
        for measure, value, target in result["headlines"]
    ]
    notes, measurements = result["notes"], result["measurements"]
    return {"headlines": headlines, "notes": notes, "measurements": measurements}


def bench_pipelined(ctx: argparse.Namespace) -> dict:
    """Model step in its own pool vs one stage after another (bench/pipelined_stages.py)."""
    import pipelined_stages

    result = pipelined_stages.run(ctx.tmp, repeats=ctx.repeats, n_images=32 if ctx.quick else 128)
    headlines = [
        headline(
            "pipelined stages / sequential stages, processing time",
            result["ratio_median"],
            "<=",
            0.6,
            result["ratios"],
        ),
        headline(
            "pipelined / sequential, whole annotate_corpus call",
            result["wall_ratio_median"],
            per_repeat=result["wall_ratios"],
        ),
        headline(
            "model step busy fraction, pipelined",
            result["busy_median"],
            ">=",
            0.9,
            result["busy_fractions"],
        ),  # fmt: skip
    ]
    settings = result["settings"]
    notes = [
        f"pipelined: per image {settings['cpu_s']} s of CPU work (a spinning stand-in) in the "
        f"CPU workers and {settings['model_s']} s of a model step holding the one "
        "`accelerator` resource (sleeping, no real model); sequential = 1 worker running both "
        "in turn; pipelined = 2 CPU workers + a pool of 1 model replica. Processing time: from "
        "the first CPU batch's start to the last model batch's end (no actor start-up, set-up "
        "or commit); the whole call is given too. Ray started before either arm."
    ]
    return {"headlines": headlines, "notes": notes, "measurements": result}


def bench_planning(ctx: argparse.Namespace) -> dict:
    """The driver's planning at 1M and 10M URIs and a committed 10M rerun (bench/planning.py):
    peak RSS (target < 1 GB) and seconds (target < 5 s)."""
    import planning

    result = planning.run(quick=ctx.quick, repeats=ctx.repeats)
    headlines = [
        headline(measure, value, "<=" if target else None, target)
        for measure, value, target in result["headlines"]
    ]
    return {
        "headlines": headlines,
        "notes": result["notes"],
        "measurements": result["measurements"],
    }


def bench_ssd_speed(ctx: argparse.Namespace) -> dict:
    """The torch SSD / OpenCV's cv2.dnn on the same graph, ms per image at batch 1 and 8 on
    2 threads (bench/ssd_speed.py); the torch arm alone where OpenCV lacks the importer."""
    import ssd_speed

    result = ssd_speed.run(repeats=ctx.repeats)
    headlines = [
        headline(measure, value, per_repeat=per_repeat)
        for measure, value, per_repeat in result["headlines"]
    ]
    return {"headlines": headlines, "notes": result["notes"], "measurements": result["measurements"]}  # fmt: skip


RUNNERS = {
    "overhead": bench_overhead,
    "setup_overlap": bench_setup_overlap,
    "scaling": bench_scaling,
    "writer": bench_writer,
    "text_filter": bench_text_filter,
    "export_memory": bench_export_memory,
    "naive_json": bench_naive_json,
    "memory": bench_memory,
    "sql_stats": bench_sql_stats,
    "pipelined": bench_pipelined,
    "planning": bench_planning,
    "ssd_speed": bench_ssd_speed,
}


# --------------------------------------------------------------------------- main


def print_table(rows: list[dict]) -> None:
    header = ("benchmark", "measure", "ratio", "target", "result")
    lines = [
        (
            row["benchmark"],
            row["measure"],
            f"{row['ratio']:.3f}",
            row["target"] or "-",
            {True: "met", False: "MISSED", None: "info"}[row["met"]],
        )
        for row in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, tuple("-" * w for w in widths), *lines):
        cells = (str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="images per run (default 48)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 images, small writer")
    parser.add_argument("--only", default=None, help=f"comma list of {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per figure, arms alternating (median)"
    )
    parser.add_argument("--rows", type=int, default=None, help="writer region rows (200000)")
    parser.add_argument("--keep-temp", action="store_true", help="keep images and corpora")
    args = parser.parse_args(argv)
    args.n_images = args.images or (8 if args.quick else 48)
    args.rows = args.rows or (50_000 if args.quick else 200_000)
    args.writer_repeats = 3 if args.quick else 5
    selected = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown or args.n_images < 1 or args.repeats < 1:
        parser.error(f"--only takes {', '.join(BENCHMARKS)}; --images and --repeats >= 1")
    args.selected = selected
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.machine = machine.describe_machine()
    args.run_id = new_run_id()
    args.tmp = Path(tempfile.mkdtemp(prefix="fld-bench-"))
    args.images_dir = args.tmp / "images"
    args.ray_init_s = 0.0
    settings = {
        "images": args.n_images,
        "quick": args.quick,
        "repeats": args.repeats,
        "writer_rows": args.rows,
        "threads_per_worker": THREADS,
    }
    m = args.machine
    print(
        f"fld-engine bench: {args.n_images} images{' (quick)' if args.quick else ''}; "
        f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs, {m['ram_gib']} GiB RAM, "
        f"load {m['load_average_at_start']}; temp {args.tmp}",
        flush=True,
    )
    rows, notes, summaries, failed = [], [], {}, {}
    needs_engine = any(name in IMAGE_BENCHMARKS for name in args.selected)
    try:
        if needs_engine:
            # One snapshot of the default config for the whole run, so every engine run and
            # standalone loop uses the same annotators even if the file changes meanwhile.
            args.config_path = args.tmp / "config.yaml"
            shutil.copyfile(DEFAULT_CONFIG_PATH, args.config_path)
            try:
                settings["config"] = load_config(args.config_path).to_dict()
            except ConfigError as exc:
                raise SystemExit(f"the default config does not load: {exc}") from None
            workload.make_images(args.n_images, args.images_dir)
        for name in args.selected:
            print(f"running {name} ...", flush=True)
            set_bench_ray(args, running=name in RAY_BENCHMARKS)
            began = time.perf_counter()
            try:
                result = RUNNERS[name](args)
            except Exception as exc:  # noqa: BLE001 - report it, run the other benchmarks
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            result.update(
                benchmark=name,
                settings=settings,
                machine=args.machine,
                bench_seconds=round(time.perf_counter() - began, 1),
            )
            save_result(name, result, args.run_id, latest=not args.quick)
            rows.extend({"benchmark": name, **h} for h in result["headlines"])
            notes.extend(result["notes"])
            summaries[name] = result["headlines"]
    finally:
        set_bench_ray(args, running=False)
        if args.keep_temp:
            print(f"kept {args.tmp}")
        else:
            shutil.rmtree(args.tmp, ignore_errors=True)
    print()
    print_table(rows)
    print()
    for note in notes:
        print(f"- {note}")
    for name, error in failed.items():
        print(f"- {name}: FAILED: {error}")
    machine_info = {**args.machine, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
    busy = machine_info["load_average_at_start"][0]
    if needs_engine and busy > 0.5:
        warning = (
            f"WARNING: the machine was busy before the bench started (1-minute load average "
            f"{busy:.2f} on {machine_info['usable_cpus']} usable CPUs): if other processes "
            "shared the cores (CPU per wall second well under 1.00 above), these ratios are "
            "unreliable; rerun on a quiet machine"
        )
        notes.append(warning)
        print(f"- {warning}")
    save_result(
        "summary",
        {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": settings,
            "machine": machine_info,
            "headlines": summaries,
            "notes": notes,
            "failed": failed,
        },
        args.run_id,
        latest=not args.quick,
    )
    print(f"\nresults in {RESULTS_DIR.relative_to(REPO)}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
