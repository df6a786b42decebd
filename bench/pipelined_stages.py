"""Stages that scale separately (issue 14): a model step in its own actor pool, fed by CPU
workers, against the same work run one stage after another.

The work, per image: CPU work in the CPU workers (``hold`` with ``spin``: a core kept busy
for ``CPU_S`` seconds, standing in for decode, CPU annotators and filters) and a model
step (``hold`` sleeping ``MODEL_S`` seconds while it holds one unit of a custom resource
``accelerator`` that this Ray has exactly one of: a GPU, without a GPU). No real model.

- sequential: one worker runs both steps in turn, holding the accelerator throughout
  (the engine before stage pools: one actor runs every model one after the other);
- pipelined: two CPU workers, and the model step in a pool of one replica holding the
  accelerator; each CPU worker sends its batches to the replica.

Measured, from the two steps' logs: the processing time of each arm, from the first CPU
batch's start to the last model batch's end (actor start-up, model set-up and the commit
are outside it; the whole ``annotate_corpus`` call is kept as ``wall_s`` too); and the
model step's busy fraction in the pipelined arm: the time it held images over the time
from its first batch's start to its last batch's end. The two arms
alternate which runs first, ``repeats`` times; medians. Targets: pipelined / sequential
<= 0.6, busy fraction >= 0.9.

    .venv/bin/python bench/run.py --only pipelined
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

CPU_S = 0.1
MODEL_S = 0.1
SHARD_SIZE = 8
N_IMAGES = 128  # 16 shards: the tail where one CPU worker alone feeds the model is short
BATCH_SIZE = 4


def arm_config(pipelined: bool, log: Path, cpu_log: Path):
    from pipelines.config import load_config

    model = f"{{name: hold, seconds_per_image: {MODEL_S}, log: '{log}', " + (
        "replicas: 1, resources: {num_cpus: 0, custom: {accelerator: 1}}}" if pipelined else "}"
    )
    cpu = f"{{name: hold, seconds_per_image: {CPU_S}, spin: true, log: '{cpu_log}'}}"
    return load_config(
        None,
        [
            f"annotators=[{cpu}, {model}]",
            f"run.workers={2 if pipelined else 1}",
            f"run.shard_size={SHARD_SIZE}",
            f"run.batch_size={BATCH_SIZE}",
            *(f"filters.{key}.enabled=false" for key in ("text_complexity", "phrase_confidence")),
        ],
    )


def batches(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def busy_fraction(log: Path) -> float:
    held = batches(log)
    span = max(b["end"] for b in held) - min(b["start"] for b in held)
    return sum(b["end"] - b["start"] for b in held) / span


def processing_seconds(cpu_log: Path, model_log: Path) -> float:
    """From the first CPU batch's start to the last model batch's end."""
    return max(b["end"] for b in batches(model_log)) - min(b["start"] for b in batches(cpu_log))


def run_arm(pipelined: bool, images: Path, work: Path) -> dict:
    from pipelines.annotate import annotate_corpus

    log, cpu_log = work / "model.jsonl", work / "cpu.jsonl"
    config = arm_config(pipelined, log, cpu_log)
    began = time.perf_counter()
    summary = annotate_corpus(config, str(images), str(work / "corpus"), show_progress=False)
    wall = time.perf_counter() - began
    return {
        "wall_s": round(wall, 3),
        "processing_s": round(processing_seconds(cpu_log, log), 3),
        "images": summary.n_inputs,
        "busy_fraction": round(busy_fraction(log), 4),
    }


def run(tmp: Path, repeats: int = 3, n_images: int = N_IMAGES) -> dict:
    """Both arms on ``n_images`` distinct images made in ``tmp``; Ray must not be running
    (it is started here with the ``accelerator`` resource, and stopped)."""
    import ray
    import workload

    images = tmp / "pipelined-images"
    workload.make_images(n_images, images)

    from engine.offline import apply_offline_env

    ray.init(
        num_cpus=2, resources={"accelerator": 1}, include_dashboard=False,
        logging_level="WARNING", runtime_env={"env_vars": apply_offline_env()},
    )  # fmt: skip
    runs: dict[str, list[dict]] = {"sequential": [], "pipelined": []}
    try:
        for repeat in range(repeats):
            order = ("sequential", "pipelined") if repeat % 2 == 0 else ("pipelined", "sequential")
            for arm in order:
                work = tmp / f"pipelined-{arm}-r{repeat}"
                work.mkdir(parents=True)
                runs[arm].append(run_arm(arm == "pipelined", images, work))
    finally:
        ray.shutdown()
    pairs = list(zip(runs["pipelined"], runs["sequential"], strict=True))
    ratios = [p["processing_s"] / s["processing_s"] for p, s in pairs]
    wall_ratios = [p["wall_s"] / s["wall_s"] for p, s in pairs]
    busy = [r["busy_fraction"] for r in runs["pipelined"]]
    return {
        "runs": runs,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "wall_ratios": wall_ratios,
        "wall_ratio_median": statistics.median(wall_ratios),
        "busy_fractions": busy,
        "busy_median": statistics.median(busy),
        "settings": {
            "cpu_s": CPU_S,
            "model_s": MODEL_S,
            "shard_size": SHARD_SIZE,
            "batch_size": BATCH_SIZE,
        },
    }
