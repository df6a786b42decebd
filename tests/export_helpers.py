"""Corpora for the export and report tests.

- ``demo_corpus(tmp_path_factory)``: the default offline ensemble run in-process
  (``run.executor=local``, no Ray) over three demo photos (bus, sign, zidane), two shards.
  Built once per test session (kept under the session's base temp folder) and shared by
  the export and report test modules.
- ``write_synthetic_corpus(root, images)``: a hand-written corpus with every annotation
  type the exports read (texts at three granularities, object / dense / OCR / proposal
  regions, polygons, phrases with and without boxes, dropped rows), over real image files,
  a tar member and a Parquet row, written with the engine's own ``IterationWriter``.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import DEMO_IMAGES
from PIL import Image

from engine.corpus import Corpus, IterationWriter
from engine.schemas import table_from_rows
from pipelines.config import load_config

DEMO_NAMES = ("bus.jpg", "sign.png", "zidane.jpg")


def demo_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "export-demo"
    corpus = root / "corpus"
    if (corpus / "iteration=0" / "_COMMITTED").exists():
        return corpus
    from pipelines.annotate import annotate_corpus

    shutil.rmtree(root, ignore_errors=True)
    photos = root / "photos"
    photos.mkdir(parents=True)
    for name in DEMO_NAMES:
        shutil.copy(DEMO_IMAGES / name, photos / name)
    config = load_config(None, ["run.executor=local", "run.shard_size=2"])
    annotate_corpus(config, str(photos), str(corpus), show_progress=False)
    return corpus


def region(image_id, n, kind, box, label, score=0.9, kept=True, quad=None, polygon=()):
    return {
        "region_id": f"{image_id[:16]}:0:r{n}",
        "image_id": image_id,
        "iteration": 0,
        "kind": kind,
        "x0": box[0],
        "y0": box[1],
        "x1": box[2],
        "y1": box[3],
        "quad": quad,
        "polygon": list(polygon),
        "label": label,
        "score": score,
        "source": "fused" if kind == "object" else f"{kind}_test@1",
        "sources": ["a@1", "b@1"],
        "n_sources": 2,
        "kept": kept,
        "drop_reason": None if kept else "low_score",
    }


def text(image_id, n, granularity, value, kept=True):
    return {
        "text_id": f"{image_id[:16]}:0:t{n}",
        "image_id": image_id,
        "iteration": 0,
        "granularity": granularity,
        "text": value,
        "source": "captioner_test@1",
        "score": 0.8,
        "n_objects": 2,
        "n_attributes": 1,
        "n_actions": 0,
        "object_complexity": 1.0,
        "action_complexity": 0.0,
        "object_complexity_diht": 1.0,
        "action_complexity_diht": 0.0,
        "kept": kept,
        "drop_reason": None if kept else "low_complexity",
    }


def phrase(image_id, n, phrase_n, text_n, value, start, box, polygon=(), kept=True):
    return {
        "triplet_id": f"{image_id[:16]}:0:g{n}",
        "phrase_id": f"{image_id[:16]}:0:p{phrase_n}",
        "image_id": image_id,
        "iteration": 0,
        "text_id": f"{image_id[:16]}:0:t{text_n}",
        "phrase": value,
        "char_start": start,
        "char_end": start + len(value),
        "box": None if box is None else dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
        "polygon": list(polygon),
        "score": 0.7,
        "source": "grounder_test@1",
        "kept": kept and box is not None,
        "drop_reason": None if kept and box is not None else "no_match",
    }


def image_row(image_id, uri, size, fmt):
    return {
        "image_id": image_id,
        "iteration": 0,
        "uri": uri,
        "width": size[0],
        "height": size[1],
        "format": fmt,
        "bytes": 1000,
    }


def annotations_for(image_id: str, width: int, height: int) -> tuple[list, list, list]:
    """Texts, regions and phrases of one synthetic image (coordinates scaled to its size)."""
    sx, sy = width / 100, height / 100

    def box(x0, y0, x1, y1):
        return [x0 * sx, y0 * sy, x1 * sx, y1 * sy]

    def poly(*points):
        return [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(points)]

    caption = "A dog and two cats near a sign"
    texts = [
        text(image_id, 0, "brief", caption),
        text(image_id, 1, "detailed", "A brown dog sits left of two grey cats; a sign reads OPEN."),
        text(image_id, 2, "more_detailed", "Long text. " * 5),
        text(image_id, 3, "brief", "a dropped caption", kept=False),
    ]
    dog_poly = poly(5, 10, 30, 10, 35, 50, 5, 55)
    regions = [
        region(image_id, 0, "object", box(5, 10, 35, 55), "dog", polygon=dog_poly),
        region(image_id, 1, "object", box(40, 20, 60, 60), "cat"),
        region(image_id, 2, "object", box(62, 22, 99.5, 100), "cat", score=0.6),
        region(image_id, 3, "object", box(0, 0, 100, 100), "tv", score=0.1, kept=False),
        region(image_id, 4, "dense", box(5, 10, 35, 55), "brown dog on the left"),
        region(image_id, 5, "proposal", box(1, 1, 20, 20), "region"),
        region(
            image_id,
            6,
            "ocr",
            box(10, 70, 40, 80),
            "OPEN <24h>",
            quad=poly(10, 70, 40, 71, 40, 80, 10, 79),
        ),  # fmt: skip
        region(image_id, 7, "ocr", box(50, 70, 90, 85), "Café\nBar", quad=None),
    ]
    phrases = [
        phrase(image_id, 0, 0, 0, "A dog", 0, box(5, 10, 35, 55), polygon=dog_poly),
        phrase(image_id, 1, 1, 0, "two cats", 10, box(40, 20, 60, 60)),
        phrase(image_id, 2, 1, 0, "two cats", 10, box(62, 22, 99.5, 100)),
        phrase(image_id, 3, 2, 0, "a sign", 24, None),  # grounds to nothing
        phrase(image_id, 4, 3, 3, "a dropped caption", 0, box(1, 1, 5, 5)),  # text dropped
    ]
    return texts, regions, phrases


def write_synthetic_corpus(root: Path, work: Path) -> Path:
    """Three images in two shards: a plain JPEG file, a PNG inside a tar, a JPEG in a
    Parquet row. Returns the corpus folder."""
    work.mkdir(parents=True, exist_ok=True)
    bus = DEMO_IMAGES / "bus.jpg"
    tar_path = work / "signs.tar"
    with tarfile.open(tar_path, "w") as archive:
        archive.add(DEMO_IMAGES / "sign.png", arcname="000001.png")
    parquet_path = work / "photos.parquet"
    pq.write_table(pa.table({"image": [(DEMO_IMAGES / "zidane.jpg").read_bytes()]}), parquet_path)

    def size_of(path: Path) -> tuple[int, int]:
        with Image.open(path) as image:
            return image.size

    images = [
        ("b" * 32, str(bus), size_of(bus), "JPEG"),
        ("a" * 32, f"{tar_path}::000001.png", size_of(DEMO_IMAGES / "sign.png"), "PNG"),
        ("c" * 32, f"{parquet_path}::row=0", size_of(DEMO_IMAGES / "zidane.jpg"), "JPEG"),
    ]
    writer = IterationWriter(Corpus(root), 0)
    writer.prepare({"fingerprint": "synthetic", "config_hash": "synthetic"})
    for shard_index, shard_images in enumerate((images[:2], images[2:])):
        tables = {"images": [], "texts": [], "regions": [], "phrases": [], "errors": []}
        for image_id, uri, (width, height), fmt in shard_images:
            tables["images"].append(image_row(image_id, uri, (width, height), fmt))
            texts, regions, phrases = annotations_for(image_id, width, height)
            tables["texts"] += texts
            tables["regions"] += regions
            tables["phrases"] += phrases
        writer.write_shard(
            f"{shard_index:05d}",
            {name: table_from_rows(name, rows) for name, rows in tables.items()},
            {"shard": shard_index},
        )
    writer.commit({"config": {}, "counts": {}})
    return root
