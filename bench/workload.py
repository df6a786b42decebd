"""The workloads the benchmarks compare: a folder of distinct images, the standalone model
loop, and an engine run that also reports when its workers were ready and how much CPU
they got.

``TimedShardProcessor`` is the engine's own ``ShardProcessor`` with three timestamps added
to each shard's marker (``marker["bench"]``): when the worker finished ``setup()`` (with
``run.setup: overlapped`` its models then still load in a thread while the
first batches run; ``models_loaded`` says when they all were), when it began and when it ended ``process(shard)``; and the worker's resident
memory after the shard, now and at its peak. Nothing else changes. It is
swapped in for ``pipelines.annotate.ShardProcessor`` only while ``run_engine`` runs, and
pickled by value to the Ray workers (``bench/`` is not an installed package).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

import pipelines.annotate as annotate_module
from engine.imaging import DecodeLimits, decode_image
from engine.records import Sample, content_id
from engine.sources import list_inputs, make_shards
from engine.steps import WorkerContext, order_steps
from pipelines.annotate import ShardProcessor, annotate_corpus
from pipelines.config import EngineConfig, build_steps

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGES = REPO / "demo" / "images"


# --------------------------------------------------------------------------- images


def make_images(count: int, folder: Path) -> list[Path]:
    """``count`` images made by cycling the demo photos; every copy is re-encoded with one
    pixel set from its index, so no two files have the same bytes (nor ``image_id``)."""
    sources = sorted(p for p in DEMO_IMAGES.iterdir() if not p.name.startswith("."))
    if not sources:
        raise SystemExit(f"no demo images in {DEMO_IMAGES}")
    folder.mkdir(parents=True, exist_ok=True)
    written, digests = [], set()
    for index in range(count):
        source = sources[index % len(sources)]
        with Image.open(source) as opened:
            image = opened.convert("RGB")
            image_format = opened.format
        image.putpixel((0, 0), (index % 256, (index // 256) % 256, 255 - index % 256))
        target = folder / f"{index:05d}_{source.name}"
        if image_format == "JPEG":
            image.save(target, format="JPEG", quality=95)
        else:
            image.save(target, format=image_format or "PNG")
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest in digests:
            raise RuntimeError(f"{target} has the same bytes as an earlier copy")
        digests.add(digest)
        written.append(target)
    return written


def image_folders(counts, images_dir: Path | None, tmp: Path) -> dict[int, Path]:
    """A folder of the first N distinct images for each N in ``counts`` (symlinks), taken
    from ``images_dir`` when it holds enough of them, else made in ``tmp``."""
    largest = max(counts)
    source = sorted(images_dir.iterdir()) if images_dir else []
    if len(source) < largest:
        source = make_images(largest, tmp / "all")
    folders = {}
    for count in counts:
        folder = tmp / f"images-{count}"
        folder.mkdir()
        for image in source[:count]:
            os.symlink(image, folder / image.name)
        folders[count] = folder
    return folders


# --------------------------------------------------------------------------- standalone


def limit_threads(threads: int) -> None:
    """The thread budget the engine gives a worker, applied to this process."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def pipeline_steps(config: EngineConfig) -> list:
    """The configured annotators and filters, built and set up (not timed), in the order
    the engine runs them (``engine.steps.order_steps``)."""
    threads = config.run.threads_per_worker
    limit_threads(threads)
    steps = order_steps(build_steps(config))
    for step in steps:
        step.setup(WorkerContext(threads=threads))
    return steps


def run_standalone(config: EngineConfig, folder: Path) -> dict:
    """Read + decode every image and call the configured annotators (and the filters whose
    kept rows later annotators read) directly, in the engine's shards, order and batches. No
    Ray, no duplicate check, no per-image error isolation, no Arrow tables, no writes.
    Building and ``setup()`` are not timed; fresh instances each call, so the first batch
    pays the same warm-up as the engine's first batch does."""
    steps = pipeline_steps(config)
    limits = DecodeLimits(config.decode.min_side, config.decode.max_pixels)
    shards = make_shards(list_inputs(str(folder)), config.run.shard_size)
    batch_size = config.run.batch_size
    stages: Counter = Counter()
    n_regions = n_texts = n_phrases = n_images = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    for shard in shards:
        samples = []
        for uri in shard.uris:
            began = time.perf_counter()
            data = Path(uri).read_bytes()
            stages["read"] += time.perf_counter() - began
            began = time.perf_counter()
            decoded = decode_image(data, limits)
            stages["decode"] += time.perf_counter() - began
            samples.append(Sample(content_id(data), uri, decoded.pixels, decoded.format, len(data)))
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            for step in steps:
                began = time.perf_counter()
                step.run(batch)  # the step itself: no per-image failure isolation
                stages[step.timing_key] += time.perf_counter() - began
        n_images += len(samples)
        n_regions += sum(len(sample.regions) for sample in samples)
        n_texts += sum(len(sample.texts) for sample in samples)
        n_phrases += sum(len(getattr(sample, "phrases", ())) for sample in samples)
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu_started,
        "n_images": n_images,
        "n_regions": n_regions,
        "n_texts": n_texts,
        "n_phrases": n_phrases,
        "stage_s": {key: round(value, 4) for key, value in sorted(stages.items())},
    }


# --------------------------------------------------------------------------- engine


def proc_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (Linux; given in kB there), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def current_rss_bytes() -> int:
    """This process's resident memory now."""
    return proc_status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """This process's peak resident memory since its program started (``VmHWM``).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the parent's resident size at
    fork/exec into the child's ``ru_maxrss``, so a process launched by a 2 GB parent
    reports at least 2 GB whatever it does itself (measured: a child of a 1.5 GB parent
    reported 1,513 MB of ``ru_maxrss`` with a VmHWM of 13 MB)."""
    return proc_status_bytes("VmHWM")


class TimedShardProcessor(ShardProcessor):
    """The engine's processor, plus timestamps in the marker (see the module docstring)."""

    def setup(self) -> None:
        super().setup()
        self.bench_setup_done = time.time()

    def process(self, shard):
        began = time.time()
        cpu_began = time.process_time()
        result = super().process(shard)
        result.marker["bench"] = {
            "process_cpu_s": time.process_time() - cpu_began,
            "setup_done": self.bench_setup_done,
            # run.setup: overlapped: setup() returned before this; None: not all loaded yet
            "models_loaded": self.loader.loaded_at if self.loader else None,
            "process_start": began,
            "process_end": time.time(),
            "pid": os.getpid(),
            "rss_bytes": current_rss_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
        }
        return result


@contextmanager
def timed_processor():
    original = annotate_module.ShardProcessor
    annotate_module.ShardProcessor = TimedShardProcessor
    try:
        yield
    finally:
        annotate_module.ShardProcessor = original


def run_engine(config: EngineConfig, folder: Path, out: Path) -> dict:
    """One ``annotate_corpus`` run into a fresh corpus, with its time split into:

    - ``until_first_shard_s``: call -> the first worker is ready for a shard (listing,
      actor start; with ``run.setup: before_work`` also imports and model loading, which
      ``overlapped`` does while the first batches run);
    - ``steady_s``: that moment -> the call returns (every shard's processing, results
      coming back through Ray, Parquet writes, the commit);
    - ``worker_busy_s``: sum over shards of the time inside ``process(shard)``, and
      ``worker_cpu_s`` the CPU time the worker process used meanwhile (all its threads).
    """
    with timed_processor():
        started = time.time()
        summary = annotate_corpus(config, str(folder), str(out), show_progress=False)
        ended = time.time()
    iteration_dir = out / f"iteration={config.run.iteration}"
    markers = [
        json.loads(p.read_text()) for p in sorted((iteration_dir / "_shards").glob("*.json"))
    ]
    stamps = [marker["bench"] for marker in markers]
    first_ready = min(stamp["setup_done"] for stamp in stamps)
    stage_s: Counter = Counter()
    for marker in markers:
        stage_s.update(marker.get("timings", {}))
    return {
        "wall_s": ended - started,
        "until_first_shard_s": first_ready - started,
        "steady_s": ended - first_ready,
        "worker_busy_s": sum(s["process_end"] - s["process_start"] for s in stamps),
        "worker_cpu_s": sum(s["process_cpu_s"] for s in stamps),
        "after_last_shard_s": ended - max(s["process_end"] for s in stamps),
        "n_shards": summary.n_shards,
        "n_images": summary.counts.get("rows", {}).get("images", 0),
        "n_regions": summary.counts.get("rows", {}).get("regions", 0),
        "n_texts": summary.counts.get("rows", {}).get("texts", 0),
        "n_phrase_rows": summary.counts.get("rows", {}).get("phrases", 0),
        "n_errors": summary.counts.get("rows", {}).get("errors", 0),
        "worker_pids": sorted({s["pid"] for s in stamps}),
        "stage_s": {key: round(value, 4) for key, value in sorted(stage_s.items())},
        "worker_memory": [
            {key: stamp[key] for key in ("pid", "process_end", "rss_bytes", "peak_rss_bytes")}
            for stamp in sorted(stamps, key=lambda stamp: stamp["process_end"])
        ],
    }
