"""The five tables of the corpus, as explicit pyarrow schemas (the contract SQL users rely on).

Every table has ``image_id``, ``iteration`` and a row id unique within the table
(``image_id`` for ``images``, ``text_id``, ``region_id``, ``triplet_id``, ``error_id``).

Coordinates are pixels of the decoded, EXIF-upright image, as float32, with
``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height``.  ``quad`` is eight floats
``[x_tl, y_tl, x_tr, y_tr, x_br, y_br, x_bl, y_bl]`` (clockwise from top-left in image
coordinates, y down).  ``polygon`` is a flat ``[x, y, x, y, ...]`` list, empty when there is none.

Rows that a filter rejected stay in the tables with ``kept = false`` and a
``drop_reason``; ``drop_reason`` is null on kept rows.
"""

from __future__ import annotations

import pyarrow as pa

BOX = pa.struct(
    [
        pa.field("x0", pa.float32()),
        pa.field("y0", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
    ]
)

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # sha256 of the encoded bytes, 32 hex
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field(
            "uri", pa.string(), nullable=False
        ),  # where the bytes were read (see engine.sources)
        pa.field("width", pa.int32(), nullable=False),  # of the decoded, EXIF-upright image
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string()),  # Pillow's format name: JPEG, PNG, TIFF, ...
        pa.field("bytes", pa.int64(), nullable=False),  # size of the encoded image in bytes
        # Duplicate detection (engine/dedup.py): SHA-256 of the decoded pixels and their
        # shape (32 hex), and the 64-bit DCT perceptual hash as a signed BIGINT, NULL for a
        # flat image. Both NULL in corpora written before they existed (``fld dedup``).
        pa.field("pixel_sha256", pa.string()),
        pa.field("phash", pa.int64()),
        pa.field(
            "phash_crops", pa.list_(pa.int64())
        ),  # phash of 10 crops: 95 % and 90 %, centre and corners
        # With ``run.dedup: before_annotation``: the image_id whose rows this image's were
        # copied from (the same pixels, annotated in this iteration before); NULL when the
        # models ran on the image (and in corpora written before the column existed).
        pa.field("labels_from", pa.string()),
    ]
)

TEXTS = pa.schema(
    [
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("granularity", pa.string(), nullable=False),  # brief | detailed | more_detailed
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # annotator name@version
        pa.field("score", pa.float32(), nullable=False),  # in [0, 1]
        pa.field("n_objects", pa.int32()),
        pa.field("n_attributes", pa.int32()),
        pa.field("n_actions", pa.int32()),
        pa.field("object_complexity", pa.float32()),
        pa.field("action_complexity", pa.float32()),
        # The same two measures under DiHT's definition (largest number of children of a
        # token) beside FLD-5B's (degree in the undirected dependency tree).
        pa.field("object_complexity_diht", pa.float32()),
        pa.field("action_complexity_diht", pa.float32()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("drop_reason", pa.string()),
    ]
)

REGIONS = pa.schema(
    [
        pa.field("region_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # object | ocr | dense | proposal
        pa.field("x0", pa.float32(), nullable=False),
        pa.field("y0", pa.float32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("quad", pa.list_(pa.float32())),  # 8 floats, OCR only, else null
        pa.field("polygon", pa.list_(pa.float32()), nullable=False),  # may be empty
        pa.field("label", pa.string(), nullable=False),  # category, OCR text, or region caption
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # name@version, or "fused"
        pa.field("sources", pa.list_(pa.string()), nullable=False),
        pa.field("n_sources", pa.int32(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("drop_reason", pa.string()),
    ]
)

PHRASES = pa.schema(
    [
        pa.field("triplet_id", pa.string(), nullable=False),
        pa.field("phrase_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("phrase", pa.string(), nullable=False),
        pa.field("char_start", pa.int32(), nullable=False),
        pa.field("char_end", pa.int32(), nullable=False),
        pa.field("box", BOX),  # null when the phrase grounds to nothing
        pa.field("polygon", pa.list_(pa.float32()), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("drop_reason", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("error_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),  # null when the bytes could not be read
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field(
            "stage", pa.string(), nullable=False
        ),  # read | decode | <annotator or filter name>
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)

# An iteration's duplicate groups (``iteration=K/duplicates.parquet``, written by the
# commit or ``fld dedup``; engine/dedup.py): one row per image in a group of two or more.
DUPLICATES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),  # the representative's image_id
        pa.field("representative", pa.string(), nullable=False),
        pa.field("is_representative", pa.bool_(), nullable=False),
        # perceptual-hash bits from the representative; 0: the same pixels; NULL: a flat
        # image, grouped by its pixels alone
        pa.field("distance", pa.int32()),
        pa.field(
            "kind", pa.string(), nullable=False
        ),  # exact (same pixels as the representative) | near
        pa.field("group_size", pa.int32(), nullable=False),
    ]
)

# People's judgements of a corpus's labels (``corpus/reviews/reviews.parquet``, written by
# ``fld import-reviews``; engine/reviews.py): one row per region a reviewer saw or drew.
# Corpus-level, not per iteration: ``iteration`` is the one whose regions were sent.
REVIEWS = pa.schema(
    [
        pa.field("review_id", pa.string(), nullable=False),  # project:task:region key
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),  # the iteration that was shown
        pa.field("project", pa.string(), nullable=False),  # server URL and project id
        pa.field("task_id", pa.int64(), nullable=False),
        pa.field("annotation_id", pa.int64(), nullable=False),
        pa.field("reviewer", pa.string(), nullable=False),  # e-mail, else the user id
        pa.field("reviewed_at", pa.string(), nullable=False),  # the annotation's updated_at
        # accepted | corrected | rejected (a sent region the reviewer deleted) | added
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("region_id", pa.string()),  # the sent region; null for an added one
        pa.field("kind", pa.string(), nullable=False),  # object | ocr
        pa.field("x0", pa.float32(), nullable=False),  # the reviewer's box (for rejected:
        pa.field("y0", pa.float32(), nullable=False),  # the model's), in pixels as regions
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # class name, or the OCR line's text
        pa.field("holdout", pa.bool_(), nullable=False),  # kept out of training: judges
        pa.field("source", pa.string(), nullable=False),  # human@1
    ]
)

TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "texts": TEXTS,
    "regions": REGIONS,
    "phrases": PHRASES,
    "errors": ERRORS,
}

ROW_ID: dict[str, str] = {
    "images": "image_id",
    "texts": "text_id",
    "regions": "region_id",
    "phrases": "triplet_id",
    "errors": "error_id",
}

# The order of one image's rows when the exporters stream them (pipelines/exports/reader.py
# reads a shard file ``ORDER BY`` these columns), and the order in which compaction
# (engine/compact.py) stores each shard's rows in a part file, so that a part streams in
# the same order without a sort. ``errors`` is not streamed and keeps the order it was
# written in.
STREAM_ORDER: dict[str, tuple[str, ...]] = {
    "images": ("image_id", "uri"),
    "texts": ("image_id", "granularity", "text_id"),
    "regions": ("image_id", "kind", "y0", "x0", "region_id"),
    "phrases": ("image_id", "text_id", "char_start", "phrase_id", "triplet_id"),
}


def table_from_rows(name: str, rows: list[dict]) -> pa.Table:
    """Build table ``name`` from row dicts with its declared schema (never inferred)."""
    return pa.Table.from_pylist(rows, schema=TABLES[name])
