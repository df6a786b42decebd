"""Synthetic, realistic corpus rows with the contract schemas (``engine/schemas.py``), built
column-wise with numpy and pyarrow (no Python row dicts), shard by shard, so that tens of
millions of region rows generate in minutes with bounded memory. The one builder the
benchmarks share (``sql_stats``, ``export_memory``, ``writer_bench``).

    from synthetic_corpus import shard_tables, write_corpus
    tables = shard_tables(200_000)                       # the five tables of one shard
    summary = write_corpus(root, 10_000_000)             # a committed corpus, 50 shards

What a shard holds, per image (one ``images`` row each; ``regions_per_image`` is the mean,
drawn per image from a skewed distribution, 1 to 400):

- ``regions``: 65% ``object`` (80 COCO labels, Zipf-skewed with ``person`` first;
  sources ``ssd_coco@1`` 75%, ``yolo@1`` 20%, ``fused`` 5% with two ``sources``; 30% of the
  kept ones with a 6-20 point polygon), 15% ``ocr`` (a quad, words and numbers from a
  vocabulary of about 300 lines, ``rapidocr@1``), 20% ``dense`` (captions such as "large
  blue bus in the center", ``dense_captioner@1``, always kept). About 62% kept; the rest
  dropped with ``low_score``, ``nms``, ``too_small``, ``too_large``, ``fused_into`` (object)
  or ``low_score``, ``too_small`` (OCR). Boxes lie inside the image
  (``0 <= x0 < x1 <= width``), sizes log-uniform; kept scores >= 0.3, ``low_score`` < 0.3.
- ``texts``: three per image (brief, detailed, more detailed; each longer one starts with
  the shorter one), from a pool of 256 composed captions, about 88% kept (dropped:
  ``low_complexity``, ``excessive_objects``), object/attribute/action counts by granularity.
- ``phrases``: the noun phrases of the image's brief caption (2-5), with the char spans
  where they stand in the text; 0-3 boxes each (0: one row with no box, dropped with
  ``blacklist`` or ``no_match``; boxed rows kept but 5% ``low_phrase_score``); kept boxes
  have an 8-point polygon.
- ``errors``: about 0.4% as many rows as images (inputs that failed: decode and read
  errors, annotator failures).

Row ids follow the engine's rules (``<image_id[:16]>:<iteration>:r<n>`` and likewise
``t``, ``g``, ``p``; ``error_id`` 24 hex digits). Everything is deterministic in
``(seed, iteration, shard)``.

``write_corpus`` writes through the engine's own ``IterationWriter`` (``prepare``, one
``write_shard`` per shard with the pre-built Arrow tables and a marker with the same
counts as the engine's markers, ``commit`` with a ``run.json``), so the corpus on disk is
exactly what ``fld run`` commits: same layout, temporary names + ``os.replace``, zstd
Parquet, ``_COMMITTED`` last.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.corpus import Corpus, IterationWriter
from engine.schemas import TABLES

COCO_LABELS = [
    "person", "car", "chair", "cup", "bottle", "dining table", "book", "cell phone",
    "traffic light", "bowl", "truck", "handbag", "potted plant", "bench", "dog", "bus",
    "clock", "tv", "backpack", "umbrella", "couch", "bicycle", "motorcycle", "cat", "laptop",
    "sink", "vase", "wine glass", "bird", "boat", "knife", "spoon", "fork", "tie", "bed",
    "remote", "keyboard", "mouse", "oven", "refrigerator", "horse", "sheep", "cow",
    "elephant", "giraffe", "zebra", "bear", "kite", "airplane", "train", "fire hydrant",
    "stop sign", "parking meter", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "toilet", "microwave", "toaster", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip
# Zipf-like skew, as detections on photos are (person far ahead, a long tail).
LABEL_WEIGHTS = 1.0 / np.arange(1, len(COCO_LABELS) + 1) ** 1.1
LABEL_WEIGHTS /= LABEL_WEIGHTS.sum()

SIZES = ["small", "medium-sized", "large"]
COLOURS = ["black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple", "brown", "pink"]  # fmt: skip
POSITIONS = ["in the center", "on the left", "on the right", "at the top", "at the bottom", "at the top left", "at the top right", "at the bottom left", "at the bottom right"]  # fmt: skip
# One string per (size, colour, label, position), indexed in that order.
DENSE_CAPTIONS = [
    f"{size} {colour} {label} {position}"
    for size in SIZES
    for colour in COLOURS
    for label in COCO_LABELS
    for position in POSITIONS
]
_WORDS = ["EXIT", "STOP", "OPEN", "SALE", "Main St", "No parking", "Café", "PUSH", "PULL", "Bus Stop", "POLICE", "TAXI", "HOTEL", "Pharmacy", "ONE WAY", "Platform", "Bakery", "Menu", "Coffee", "Welcome"]  # fmt: skip
OCR_LINES = (
    _WORDS
    + [f"{word} {n}" for word in _WORDS[:10] for n in (1, 2, 3, 12, 24, 100, 2024)]
    + [f"{n:04d}" for n in range(0, 10_000, 47)]
)

OBJECT_SOURCES = ["ssd_coco@1", "yolo@1", "fused"]
OBJECT_SOURCE_P = [0.75, 0.20, 0.05]
SOURCES = [*OBJECT_SOURCES, "rapidocr@1", "dense_captioner@1"]
KINDS = ["object", "ocr", "dense"]
KIND_P = [0.65, 0.15, 0.20]
KEPT_P = {"object": 0.5, "ocr": 0.7, "dense": 1.0}
OBJECT_REASONS = ["low_score", "nms", "too_small", "too_large", "fused_into"]
OBJECT_REASON_P = [0.60, 0.25, 0.08, 0.02, 0.05]
OCR_REASON_P = [0.8, 0.2]  # low_score, too_small: indices 0 and 2 of OBJECT_REASONS
OCR_REASONS = np.array([0, 2])

IMAGE_SIZES = np.array([(640, 480), (800, 600), (1024, 768), (1280, 720), (1920, 1080), (480, 640), (1080, 1350), (512, 512)])  # fmt: skip
IMAGE_SIZE_P = [0.30, 0.10, 0.15, 0.10, 0.15, 0.08, 0.07, 0.05]
FORMATS = ["JPEG", "PNG", "WEBP"]
FORMAT_P = [0.85, 0.10, 0.05]
EXTENSIONS = [".jpg", ".png", ".webp"]

GRANULARITIES = ["brief", "detailed", "more_detailed"]
TEXT_REASONS = ["low_complexity", "excessive_objects"]
PHRASE_REASONS = ["blacklist", "no_match", "low_phrase_score"]
ERROR_TYPES = [  # (stage, error_type, message, has image_id, weight)
    ("decode", "truncated", "image file is truncated", True, 0.30),
    ("decode", "not_an_image", "cannot identify image file", True, 0.25),
    ("decode", "too_small", "image smaller than 16 px on a side", True, 0.10),
    ("decode", "empty", "file is empty", True, 0.05),
    ("decode", "undecodable", "broken data stream when reading image file", True, 0.05),
    ("decode", "decompression_bomb", "image has more than 89478485 pixels", True, 0.02),
    ("read", "unreadable", "[Errno 13] Permission denied", False, 0.08),
    ("read", "duplicate", "the same bytes appeared earlier in the shard", True, 0.10),
    ("rapidocr@1", "annotator_failed", "RuntimeError: onnxruntime failed", True, 0.05),
]
ERROR_RATE = 0.004  # error rows per image row


def _caption_pool(n: int = 256, seed: int = 12345) -> tuple[list[list[str]], list[list[tuple]]]:
    """``n`` caption triples (brief, detailed, more detailed; each starts with the one
    before) and the noun phrases of each brief caption with their char spans."""
    rng = np.random.default_rng(seed)
    numbers = ["a", "two", "three", "four", "several"]
    verbs = ["next to", "in front of", "behind", "near", "on top of", "beside"]
    texts, phrases = [], []
    for _ in range(n):
        picks = rng.choice(
            len(COCO_LABELS), size=rng.integers(2, 6), replace=False, p=LABEL_WEIGHTS
        )
        parts, spans, position = [], [], 0
        for k, label_index in enumerate(picks):
            count = numbers[rng.integers(0, len(numbers))]
            label = COCO_LABELS[label_index]
            noun = f"{label}s" if count != "a" else label
            colour = COLOURS[rng.integers(0, len(COLOURS))]
            article = "an" if count == "a" and colour[0] in "aeiou" else count
            phrase = f"{article} {colour} {noun}"
            if k:
                joiner = f" {verbs[rng.integers(0, len(verbs))]} " if k % 2 else " and "
                parts.append(joiner)
                position += len(joiner)
            parts.append(phrase)
            spans.append((phrase, position, position + len(phrase)))
            position += len(phrase)
        brief = "".join(parts) + "."
        brief = brief[0].upper() + brief[1:]
        where = POSITIONS[rng.integers(0, len(POSITIONS))]
        detailed = (
            f"{brief} The {COCO_LABELS[picks[0]]} stands {where}, in {COLOURS[rng.integers(0, 11)]}"
            f" light, and the scene is seen from {['eye level', 'above', 'a distance'][rng.integers(0, 3)]}."
        )
        more = detailed + "".join(
            f" A {SIZES[rng.integers(0, 3)]} {COLOURS[rng.integers(0, 11)]} "
            f"{COCO_LABELS[rng.integers(0, len(COCO_LABELS))]} is {POSITIONS[rng.integers(0, 9)]}"
            f", {verbs[rng.integers(0, len(verbs))]} the {COCO_LABELS[picks[-1]]}."
            for _ in range(rng.integers(3, 8))
        )
        texts.append([brief, detailed, more])
        phrases.append([(brief[s:e], s, e) for _, s, e in spans])  # as written ("A red cup")
    return texts, phrases


CAPTIONS, CAPTION_PHRASES = _caption_pool()
# Flat phrase pool: the phrases of caption c are PHRASE_*[PHRASE_START[c]:PHRASE_START[c + 1]].
PHRASE_COUNT = np.array([len(p) for p in CAPTION_PHRASES], dtype=np.int64)
PHRASE_START = np.concatenate([[0], np.cumsum(PHRASE_COUNT)])
PHRASE_TEXT = [p for spans in CAPTION_PHRASES for p, _, _ in spans]
PHRASE_CHAR_START = np.array([s for spans in CAPTION_PHRASES for _, s, _ in spans], dtype=np.int32)
PHRASE_CHAR_END = np.array([e for spans in CAPTION_PHRASES for _, _, e in spans], dtype=np.int32)


# --------------------------------------------------------------------------- helpers


def _strings(values: list[str]) -> pa.Array:
    return pa.array(values, type=pa.string())


def _take(vocabulary: list[str] | pa.Array, index: np.ndarray, null: np.ndarray | None = None):
    """Strings ``vocabulary[index]`` (null where ``null``), vectorised."""
    vocab = vocabulary if isinstance(vocabulary, pa.Array) else _strings(vocabulary)
    return pc.take(vocab, pa.array(index, type=pa.int32(), mask=null))


def _join(*parts) -> pa.Array:
    """Element-wise string concatenation of arrays and scalars."""
    return pc.binary_join_element_wise(*parts, "")


def _int_strings(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values, type=pa.int64()), pa.string())


def _hex_ids(rng: np.random.Generator, n: int, digits: int) -> pa.Array:
    """``n`` random ids of ``digits`` hex digits (as a SHA-256 prefix looks)."""
    raw = np.frombuffer(rng.bytes(n * digits // 2), dtype=np.uint8).reshape(n, digits // 2)
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, digits), dtype=np.uint8)
    chars[:, 0::2] = alphabet[raw >> 4]
    chars[:, 1::2] = alphabet[raw & 15]
    return pc.cast(pa.array(chars.view(f"S{digits}").ravel(), type=pa.binary()), pa.string())


def _lists(lengths: np.ndarray, values: pa.Array | np.ndarray, null: np.ndarray | None = None):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = None if null is None else pa.array(null)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def _within(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of ``counts`` (runs laid end to end)."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(starts, counts)


def _boxes(rng, width: np.ndarray, height: np.ndarray, min_side: float = 4.0):
    """Boxes inside their images, sides log-uniform from ``min_side`` to 80% of the image."""
    n = len(width)
    w = np.exp(rng.uniform(np.log(min_side), np.log(0.8 * width)))
    h = np.exp(rng.uniform(np.log(min_side), np.log(0.8 * height)))
    x0 = rng.uniform(0, width - w).astype(np.float32)
    y0 = rng.uniform(0, height - h).astype(np.float32)
    x1 = np.minimum(x0 + w, width).astype(np.float32)
    y1 = np.minimum(y0 + h, height).astype(np.float32)
    assert len(x0) == n
    return x0, y0, x1, y1


def _polygons(rng, lengths, x0, y0, x1, y1) -> np.ndarray:
    """Flat ``[x, y, ...]`` values of clockwise polygons (``lengths`` points each) inscribed
    in their boxes."""
    row = np.repeat(np.arange(len(lengths)), lengths)
    point = _within(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    angle = 2 * np.pi * point / lengths[row] + rng.uniform(-0.1, 0.1, len(row))
    rx, ry = (x1 - x0)[row] / 2, (y1 - y0)[row] / 2
    radius = rng.uniform(0.8, 1.0, len(row))
    xs = (x0[row] + rx) + rx * radius * np.cos(angle)
    ys = (y0[row] + ry) + ry * radius * np.sin(angle)  # y down: increasing angle is clockwise
    return np.stack([xs, ys], axis=1).astype(np.float32).ravel()


# --------------------------------------------------------------------------- tables


def _image_counts(rng, n_regions: int, mean: float) -> np.ndarray:
    """Region rows per image (1 to 400, mean about ``mean``, skewed), summing to ``n_regions``."""
    counts = np.empty(0, dtype=np.int64)
    while counts.sum() < n_regions:
        more = int((n_regions - counts.sum()) / mean * 1.2) + 16
        # 1 + negative binomial(r = 2): mean ``mean``, a long tail of crowded images.
        p = 2.0 / (2.0 + max(mean - 1.0, 1e-9))
        counts = np.concatenate([counts, np.minimum(1 + rng.negative_binomial(2, p, more), 400)])
    cumulative = np.cumsum(counts)
    n_images = int(np.searchsorted(cumulative, n_regions)) + 1
    counts = counts[:n_images].copy()
    counts[-1] -= cumulative[n_images - 1] - n_regions
    return counts


def _images(rng, n: int, shard: int, iteration: int) -> tuple[pa.Table, dict]:
    image_id = _hex_ids(rng, n, 32)
    size = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), n, p=IMAGE_SIZE_P)]
    fmt = rng.choice(len(FORMATS), n, p=FORMAT_P)
    uri = _join(f"/data/photos/{shard:05d}/", _int_strings(np.arange(n)), _take(EXTENSIONS, fmt))
    table = pa.table(
        {
            "image_id": image_id,
            "iteration": np.full(n, iteration, dtype=np.int32),
            "uri": uri,
            "width": size[:, 0].astype(np.int32),
            "height": size[:, 1].astype(np.int32),
            "format": _take(FORMATS, fmt),
            "bytes": np.round(rng.lognormal(11.5, 0.8, n)).astype(np.int64) + 1000,
            # No pixels, so no hashes: the duplicate columns are null (grouped by nothing).
            "pixel_sha256": pa.nulls(n, pa.string()),
            "phash": pa.nulls(n, pa.int64()),
            "phash_crops": pa.nulls(n, pa.list_(pa.int64())),
            "labels_from": pa.nulls(n, pa.string()),  # every image annotated
        },
        schema=TABLES["images"],
    )
    prefix = _join(pc.utf8_slice_codeunits(image_id, 0, 16), f":{iteration}:")
    return table, {"prefix": prefix, "width": size[:, 0], "height": size[:, 1]}


def _regions(rng, counts: np.ndarray, image: dict, iteration: int) -> pa.Table:
    n = int(counts.sum())
    image_of = np.repeat(np.arange(len(counts)), counts)
    index = _within(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    kind = rng.choice(3, n, p=KIND_P)
    is_object, is_ocr, is_dense = kind == 0, kind == 1, kind == 2
    kept = rng.random(n) < np.choose(kind, [KEPT_P[k] for k in KINDS])
    width, height = image["width"][image_of], image["height"][image_of]
    x0, y0, x1, y1 = _boxes(rng, width, height)
    # OCR lines are wide: at most 0.3 as high as long (at least 2 px).
    y1 = np.where(is_ocr, np.minimum(y1, y0 + np.maximum(0.3 * (x1 - x0), 2.0)), y1)

    # label: one index into COCO labels + OCR lines + dense captions.
    label_index = rng.choice(len(COCO_LABELS), n, p=LABEL_WEIGHTS)
    dense_index = (
        (rng.integers(0, len(SIZES), n) * len(COLOURS) + rng.integers(0, len(COLOURS), n))
        * len(COCO_LABELS)
        + label_index
    ) * len(POSITIONS) + rng.integers(0, len(POSITIONS), n)
    ocr_index = rng.integers(0, len(OCR_LINES), n)
    vocabulary = _strings(COCO_LABELS + OCR_LINES + DENSE_CAPTIONS)
    label = np.where(
        is_object,
        label_index,
        np.where(
            is_ocr, len(COCO_LABELS) + ocr_index, len(COCO_LABELS) + len(OCR_LINES) + dense_index
        ),
    )

    object_source = rng.choice(3, n, p=OBJECT_SOURCE_P)
    source = np.choose(kind, [object_source, np.full(n, 3), np.full(n, 4)])
    fused = is_object & (object_source == 2)
    n_sources = np.where(fused, 2, 1).astype(np.int32)
    # sources: [source] (a dense caption names the detector of its box), or both detectors.
    first = np.where(fused, 0, np.where(is_dense, np.where(rng.random(n) < 0.8, 0, 1), source))
    second = np.ones(n, dtype=np.int64)
    source_values = np.stack([first, second], axis=1).ravel()[
        np.stack([np.ones(n, bool), fused], axis=1).ravel()
    ]
    sources = _lists(n_sources, _take(SOURCES, source_values))

    reason = np.where(
        is_ocr,
        OCR_REASONS[rng.choice(len(OCR_REASONS), n, p=OCR_REASON_P)],
        rng.choice(len(OBJECT_REASONS), n, p=OBJECT_REASON_P),
    )
    reason = np.where(fused & (reason == 4), 0, reason)  # a fused box is not fused_into
    low = (~kept) & (reason == 0)
    score = np.where(
        kept,
        0.3 + 0.7 * rng.beta(4, 2, n),
        np.where(low, rng.uniform(0.05, 0.3, n), 0.3 + 0.7 * rng.beta(2, 3, n)),
    ).astype(np.float32)

    quad = _lists(
        np.where(is_ocr, 8, 0),
        np.stack([x0, y0, x1, y0, x1, y1, x0, y1], axis=1)[is_ocr].ravel(),
        null=~is_ocr,
    )
    has_polygon = is_object & kept & (rng.random(n) < 0.3)
    points = np.where(has_polygon, rng.integers(6, 21, n), 0)
    polygon = _lists(
        2 * points,
        _polygons(rng, points[has_polygon], x0[has_polygon], y0[has_polygon], x1[has_polygon], y1[has_polygon]),
    )  # fmt: skip
    return pa.table(
        {
            "region_id": _join(pc.take(image["prefix"], image_of), "r", _int_strings(index)),
            "image_id": pc.take(image["image_id"], image_of),
            "iteration": np.full(n, iteration, dtype=np.int32),
            "kind": _take(KINDS, kind),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "quad": quad,
            "polygon": polygon,
            "label": pc.take(vocabulary, pa.array(label, type=pa.int32())),
            "score": score,
            "source": _take(SOURCES, source),
            "sources": sources,
            "n_sources": n_sources,
            "kept": kept,
            "drop_reason": _take(OBJECT_REASONS, reason, null=kept),
        },
        schema=TABLES["regions"],
    )


def _texts(rng, caption: np.ndarray, image: dict, iteration: int) -> pa.Table:
    n_images = len(caption)
    n = 3 * n_images
    image_of = np.repeat(np.arange(n_images), 3)
    granularity = np.tile(np.arange(3), n_images)
    pool = _strings([text for triple in CAPTIONS for text in triple])
    kept = rng.random(n) < 0.88
    reason = (rng.random(n) < 0.2).astype(np.int64)  # 80% low_complexity
    mean_objects = np.choose(granularity, [2.7, 11.6, 26.4])
    n_objects = rng.poisson(mean_objects).astype(np.int32)
    n_attributes = rng.poisson(np.choose(granularity, [0.7, 8.7, 18.6])).astype(np.int32)
    n_actions = rng.poisson(np.choose(granularity, [0.4, 3.6, 8.6])).astype(np.int32)
    complexity = (1 + rng.poisson(np.choose(granularity, [1.9, 2.9, 3.4]), (4, n))).astype(
        np.float32
    )
    return pa.table(
        {
            "text_id": _join(pc.take(image["prefix"], image_of), "t", _int_strings(granularity)),
            "image_id": pc.take(image["image_id"], image_of),
            "iteration": np.full(n, iteration, dtype=np.int32),
            "granularity": _take(GRANULARITIES, granularity),
            "text": pc.take(pool, pa.array(3 * caption[image_of] + granularity)),
            "source": _take(["region_captioner@1"], np.zeros(n, dtype=np.int64)),
            "score": (0.4 + 0.6 * rng.beta(3, 2, n)).astype(np.float32),
            "n_objects": n_objects,
            "n_attributes": n_attributes,
            "n_actions": n_actions,
            "object_complexity": complexity[0],
            "action_complexity": complexity[1],
            "object_complexity_diht": complexity[2],
            "action_complexity_diht": complexity[3],
            "kept": kept,
            "drop_reason": _take(TEXT_REASONS, reason, null=kept),
        },
        schema=TABLES["texts"],
    )


def _phrases(rng, caption: np.ndarray, image: dict, iteration: int) -> pa.Table:
    # One entry per phrase of each image's brief caption ...
    per_image = PHRASE_COUNT[caption]
    phrase_image = np.repeat(np.arange(len(caption)), per_image)
    phrase_k = _within(np.concatenate([[0], np.cumsum(per_image)[:-1]]), per_image)
    pool_index = PHRASE_START[caption[phrase_image]] + phrase_k
    boxes = rng.choice(4, len(phrase_image), p=[0.4, 0.4, 0.12, 0.08])
    # ... and one row per (phrase, box), one row with no box for a phrase with none.
    rows = np.maximum(boxes, 1)
    row_phrase = np.repeat(np.arange(len(phrase_image)), rows)
    n = len(row_phrase)
    image_of = phrase_image[row_phrase]
    rows_per_image = np.bincount(image_of, minlength=len(caption))
    triplet = _within(np.concatenate([[0], np.cumsum(rows_per_image)[:-1]]), rows_per_image)
    boxed = boxes[row_phrase] > 0
    kept = boxed & (rng.random(n) >= 0.05)
    reason = np.where(boxed, 2, (rng.random(n) < 0.3).astype(np.int64))  # blacklist 70%
    x0, y0, x1, y1 = _boxes(rng, image["width"][image_of], image["height"][image_of], 8.0)
    box = pa.StructArray.from_arrays(
        [pa.array(v) for v in (x0, y0, x1, y1)],
        fields=list(TABLES["phrases"].field("box").type),
        mask=pa.array(~boxed),
    )
    points = np.where(kept, 8, 0)
    polygon = _lists(
        2 * points, _polygons(rng, points[kept], x0[kept], y0[kept], x1[kept], y1[kept])
    )
    score = np.where(
        kept, 0.3 + 0.7 * rng.beta(3, 2, n), np.where(boxed, rng.uniform(0, 0.3, n), 0.0)
    ).astype(np.float32)
    prefix = pc.take(image["prefix"], image_of)
    return pa.table(
        {
            "triplet_id": _join(prefix, "g", _int_strings(triplet)),
            "phrase_id": _join(prefix, "p", _int_strings(phrase_k[row_phrase])),
            "image_id": pc.take(image["image_id"], image_of),
            "iteration": np.full(n, iteration, dtype=np.int32),
            # Every caption of an image starts with its brief one: the spans hold in all three.
            "text_id": _join(
                prefix, "t", _int_strings(rng.integers(0, 3, len(phrase_image))[row_phrase])
            ),
            "phrase": pc.take(_strings(PHRASE_TEXT), pa.array(pool_index[row_phrase])),
            "char_start": PHRASE_CHAR_START[pool_index[row_phrase]],
            "char_end": PHRASE_CHAR_END[pool_index[row_phrase]],
            "box": box,
            "polygon": polygon,
            "score": score,
            "source": _take(["phrase_extractor@1"], np.zeros(n, dtype=np.int64)),
            "kept": kept,
            "drop_reason": _take(PHRASE_REASONS, reason, null=kept),
        },
        schema=TABLES["phrases"],
    )


def _errors(rng, n_images: int, shard: int, iteration: int) -> pa.Table:
    n = int(rng.binomial(n_images, ERROR_RATE))
    weights = np.array([e[4] for e in ERROR_TYPES])
    kind = rng.choice(len(ERROR_TYPES), n, p=weights / weights.sum())
    has_id = np.array([e[3] for e in ERROR_TYPES])[kind]
    image_id = _hex_ids(rng, n, 32)
    return pa.table(
        {
            "error_id": _hex_ids(rng, n, 24),
            "image_id": pc.if_else(
                pa.array(has_id, type=pa.bool_()), image_id, pa.scalar(None, pa.string())
            ),
            "iteration": np.full(n, iteration, dtype=np.int32),
            "uri": _join(f"/data/photos/{shard:05d}/bad_", _int_strings(np.arange(n)), ".jpg"),
            "stage": _take([e[0] for e in ERROR_TYPES], kind),
            "error_type": _take([e[1] for e in ERROR_TYPES], kind),
            "message": _take([e[2] for e in ERROR_TYPES], kind),
        },
        schema=TABLES["errors"],
    )


def shard_tables(
    n_regions: int,
    shard: int = 0,
    seed: int = 0,
    iteration: int = 0,
    regions_per_image: float = 25.0,
    tables: tuple[str, ...] = tuple(TABLES),
) -> dict[str, pa.Table]:
    """The five tables of one shard with exactly ``n_regions`` region rows, over as many
    images as the drawn per-image counts need (mean ``regions_per_image``). Tables not in
    ``tables`` are left empty. Deterministic in ``(seed, iteration, shard)``."""
    rng = np.random.default_rng([seed, iteration, shard])
    counts = _image_counts(rng, n_regions, regions_per_image)
    images, image = _images(rng, len(counts), shard, iteration)
    image["image_id"] = images.column("image_id").combine_chunks()
    caption = rng.integers(0, len(CAPTIONS), len(counts))
    build = {
        "images": lambda: images,
        "regions": lambda: _regions(rng, counts, image, iteration),
        "texts": lambda: _texts(rng, caption, image, iteration),
        "phrases": lambda: _phrases(rng, caption, image, iteration),
        "errors": lambda: _errors(rng, len(counts), shard, iteration),
    }
    return {
        name: build[name]() if name in tables else schema.empty_table()
        for name, schema in TABLES.items()
    }


# --------------------------------------------------------------------------- corpus


def shard_marker(shard: int, tables: dict[str, pa.Table]) -> dict:
    """The counts the engine's shard markers carry (rows, kept, drop reasons, error types)."""
    marker: dict = {"shard": shard, "rows": {}, "kept": {}, "drop_reasons": {}, "timings": {}}
    for name, table in tables.items():
        marker["rows"][name] = table.num_rows
        if "kept" in table.column_names:
            marker["kept"][name] = pc.sum(table.column("kept")).as_py() or 0
            reasons = pc.value_counts(table.column("drop_reason").drop_null())
            marker["drop_reasons"][name] = {
                item["values"].as_py(): item["counts"].as_py() for item in reasons
            }
    errors = pc.value_counts(tables["errors"].column("error_type"))
    marker["error_types"] = {item["values"].as_py(): item["counts"].as_py() for item in errors}
    marker["n_inputs"] = tables["images"].num_rows + tables["errors"].num_rows
    return marker


def _sum_markers(markers: list[dict]) -> dict:
    totals = {key: Counter() for key in ("rows", "kept", "error_types")}
    reasons: dict[str, Counter] = defaultdict(Counter)
    for marker in markers:
        for key, counter in totals.items():
            counter.update(marker[key])
        for table, counts in marker["drop_reasons"].items():
            reasons[table].update(counts)
    summary = {key: dict(counter) for key, counter in totals.items()}
    summary["drop_reasons"] = {table: dict(counts) for table, counts in reasons.items()}
    summary["n_inputs"] = sum(marker["n_inputs"] for marker in markers)
    return summary


def _write_shard(
    root: str, iteration: int, shard: int, rows: int, seed: int, regions_per_image: float
) -> dict:
    tables = shard_tables(rows, shard, seed, iteration, regions_per_image)
    marker = shard_marker(shard, tables)
    IterationWriter(Corpus(root), iteration).write_shard(f"{shard:05d}", tables, marker)
    return marker


def write_corpus(
    root: str | Path,
    n_regions: int,
    rows_per_shard: int = 200_000,
    regions_per_image: float = 25.0,
    seed: int = 0,
    iteration: int = 0,
    processes: int | None = None,
) -> dict:
    """Write and commit iteration ``iteration`` of a corpus at ``root`` with exactly
    ``n_regions`` region rows, ``rows_per_shard`` per shard (the last one the remainder),
    through ``IterationWriter``: shards built and written by ``processes`` forked workers
    (default: 2 if the machine has them and there are several shards), one shard in memory
    per worker; the markers come back and the parent commits. Returns the counts (as in
    ``run.json``), the shard and file counts, the seconds it took and the bytes on disk."""
    began = time.perf_counter()
    shard_rows = [rows_per_shard] * (n_regions // rows_per_shard)
    if n_regions % rows_per_shard or not shard_rows:
        shard_rows.append(n_regions % rows_per_shard)
    plan = {
        "input": "synthetic",
        "fingerprint": f"synthetic-{n_regions}-{rows_per_shard}-{regions_per_image}-{seed}",
        "config_hash": "synthetic",
        "n_inputs": None,
        "n_shards": len(shard_rows),
        "shard_size": None,
    }
    corpus = Corpus(root)
    writer = IterationWriter(corpus, iteration)
    writer.prepare(plan)
    if processes is None:
        processes = min(2, os.cpu_count() or 1, len(shard_rows))
    jobs = [(str(root), iteration, k, rows, seed, regions_per_image) for k, rows in enumerate(shard_rows)]  # fmt: skip
    if processes <= 1:
        markers = [_write_shard(*job) for job in jobs]
    else:
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers need no imports of their own (pyarrow's thread pool is fork-safe).
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            markers = list(pool.map(_write_shard, *zip(*jobs, strict=True)))
    counts = _sum_markers(markers)
    writer.commit(
        {
            "engine": "synthetic (bench/synthetic_corpus.py)",
            "iteration": iteration,
            "plan": plan,
            "config": {"synthetic": {"regions_per_image": regions_per_image, "seed": seed}},
            "counts": counts,
        }
    )
    files = list(writer.path.rglob("*.parquet"))
    return {
        "counts": counts,
        "n_shards": len(shard_rows),
        "n_files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--rows-per-shard", type=int, default=200_000)
    args = parser.parse_args()
    summary = write_corpus(args.root, args.regions, args.rows_per_shard)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
