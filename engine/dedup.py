"""Duplicate images: the two hashes a worker records on every ``images`` row, and the
grouping of an iteration's images into exact and near-duplicate groups (the
``duplicates`` table), in DuckDB SQL over the iteration's Parquet files.

Hashes (``image_hashes``, computed once per image during decode):

- ``pixel_sha256``: SHA-256 (first 32 hex digits) of the decoded, upright RGB pixels and
  their shape: two files with the same pixels (a PNG and a lossless WebP of one picture,
  the same JPEG with other metadata) have the same one, whatever their container.
- ``phash_crops``: the same hash of ten crops of the image: 95 % and 90 % of each side,
  centred and in each of the four corners (``CROP_BOXES``), so that a copy trimmed around
  its centre or on two sides meets one of them (``bench/dedup.py`` measures both); a
  corpus written when there were only the two centre crops is still grouped with them;
- ``phash``: a 64-bit perceptual hash (the DCT hash of Zauner's thesis, as the
  ``imagehash`` library's ``phash``): the image in grey (ITU-R 601 luma), area-averaged to
  a 128x128 thumbnail and then to 32x32, its 2-D DCT, the 8x8 lowest frequencies, one bit per coefficient
  above their median; stored as a signed BIGINT (the 64 bits as they are). Computed with
  OpenCV, which the worker has loaded, not ``imagehash`` (measured in ``bench/dedup.py``:
  the same bits up to rounding, and faster on the worker's numpy array). A flat image (its
  32x32 grey standard deviation under ``FLAT_STD``: one colour, all black) has no
  ``phash`` (NULL): its hash would be all but constant and group it with every other flat
  image; it is grouped only by its exact hash.

Grouping (``find_duplicates``), never a Python loop over pairs:

1. **exact**: images with the same ``pixel_sha256`` (a ``GROUP BY``);
2. **near**: pairs of images whose ``phash`` differ in at most ``max_distance`` bits
   (default 6 of 64; an image's crop hashes (centred and cornered) compared with the other's own hash
   count too), found by **multi-index hashing**: the 64 bits are cut into
   ``max_distance + 1`` bands; two hashes within the distance agree exactly on at least
   one band (pigeonhole), so candidates are pairs that share a band's value (a join on
   ``(band, value)``), then each is checked with ``bit_count(a XOR b)``. Exact, but the
   candidates grow as n^2 / 2^(64 / (max_distance + 1)): with 7 bands of 9-10 bits,
   about 10^7 candidate pairs at 100,000 random hashes and 10^11 at 10 million. Above
   ``exact_limit`` images the candidates come instead from **sampled bits**
   (locality-sensitive hashing by bit sampling): ``tables`` keys of ``key_bits`` bits
   drawn at random (a fixed seed), each ``phash & mask``; two hashes at distance d share a
   key with probability C(64 - d, key_bits) / C(64, key_bits) per table, so a pair within
   the distance may be missed (``sampled_recall`` gives the chance it is found; the
   result records the mode and these figures);
3. **groups**: the connected components of the exact and near pairs (an image in both
   kinds of pair joins one group), by label propagation in SQL (each image takes the
   smallest image id among its neighbours' until nothing changes); the representative of
   a group is its largest image (width x height), then the earliest URI; every member
   gets its distance to the representative (``phash`` bits; 0 for the same pixels) and
   ``kind``: ``exact`` when its pixels equal the representative's, else ``near``.

The ``duplicates`` table (``engine.schemas.DUPLICATES``) lists every image that belongs to
a group of two or more, the representative included; an image in no group has no row.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

HASH_SIDE = 32  # the grey image the DCT sees
THUMBNAIL_SIDE = 128  # the grey thumbnail the hashes (and their crops) are made from
LOW_FREQUENCIES = 8  # the 8x8 corner of the DCT that makes the 64 bits
FLAT_STD = 2.0  # grey levels: a 32x32 image this uniform has no perceptual hash
DEFAULT_MAX_DISTANCE = 6
DEFAULT_EXACT_LIMIT = 100_000  # images; above, near pairs come from sampled bits
DEFAULT_TABLES = 16
SEED = 20261203


def pixel_sha256(pixels: np.ndarray) -> str:
    """SHA-256 of the pixels and their shape, first 32 hex digits (as ``image_id``)."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()[:32]


def grey_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The image in grey (ITU-R 601 luma), area-averaged to ``THUMBNAIL_SIDE`` square:
    what every hash of the image is computed from (one pass over the full image)."""
    import cv2

    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    return cv2.resize(grey, side, interpolation=cv2.INTER_AREA).astype(np.float32)


def dct_hash(grey: np.ndarray) -> int | None:
    """The 64-bit DCT hash of a grey float image (any size: area-averaged to 32x32 first),
    as a signed int64 value, or None when it is flat. Bit 63 is the DCT's (0, 0)
    coefficient, then row by row."""
    import cv2

    small = cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    if float(small.std()) < FLAT_STD:
        return None
    low = cv2.dct(small)[:LOW_FREQUENCIES, :LOW_FREQUENCIES]
    # 64 bits, most significant first, read as one big-endian int64.
    return int(np.packbits(low > np.median(low)).view(">i8")[0])


def perceptual_hash(pixels: np.ndarray) -> int | None:
    """The 64-bit DCT hash of an ``HxWx3`` uint8 RGB image (see ``dct_hash``)."""
    return dct_hash(grey_thumbnail(pixels))


def crop_boxes(keeps: tuple[float, ...] = (0.95, 0.90)) -> list[tuple[float, float, float, float]]:
    """The crop variants' boxes, as (left, top, right, bottom) fractions of the image: for
    each share of each side kept, the centre crop and the four corner crops (a copy
    trimmed on two sides meets the corner crop of its original; one trimmed all round the
    centre crop)."""
    boxes = []
    for keep in keeps:
        cut = 1 - keep
        boxes.append((cut / 2, cut / 2, 1 - cut / 2, 1 - cut / 2))
        boxes += [(0, 0, keep, keep), (cut, 0, 1, keep), (0, cut, keep, 1), (cut, cut, 1, 1)]
    return boxes


CROP_BOXES = crop_boxes()  # the order of ``phash_crops``: centre, then the corners TL TR BL BR


def crop(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    height, width = pixels.shape[:2]
    left, top, right, bottom = box
    rows = slice(round(height * top), round(height * bottom))
    return pixels[rows, round(width * left) : round(width * right)]


def image_hashes(pixels: np.ndarray) -> dict:
    """The ``images`` row's hash columns: ``pixel_sha256``, ``phash`` and
    ``phash_crops`` (the hashes of the ``CROP_BOXES`` of the image, 95 % and 90 % of each
    side, centred and in each corner, so that a copy trimmed at its edges is found; None
    with ``phash``). The crops are taken from the grey thumbnail, not the full image: one
    pass over the pixels for all of them."""
    thumbnail = grey_thumbnail(pixels)
    full = dct_hash(thumbnail)
    crops = None if full is None else [dct_hash(crop(thumbnail, box)) for box in CROP_BOXES]
    if crops is not None and None in crops:
        crops = None
    return {"pixel_sha256": pixel_sha256(pixels), "phash": full, "phash_crops": crops}


def as_int64(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 that stores the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


# --------------------------------------------------------------------------- grouping


def bands(max_distance: int) -> list[tuple[int, int]]:
    """``max_distance + 1`` contiguous bands covering the 64 bits: (shift, width)."""
    count = max_distance + 1
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    out, shift = [], 0
    for width in widths:
        out.append((shift, width))
        shift += width
    return out


def sampled_masks(tables: int, key_bits: int, seed: int = SEED) -> list[int]:
    """``tables`` masks of ``key_bits`` bits each, drawn at random (a fixed seed), as
    signed int64 values."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(tables):
        chosen = rng.choice(64, size=key_bits, replace=False)
        masks.append(as_int64(sum(1 << int(bit) for bit in chosen)))
    return masks


def sampled_key_bits(n_hashes: int) -> int:
    """About as many key values as hashes, so that a hash shares a key by chance with
    about one other: more bits would find fewer true pairs per key (each table costs one
    join over every hash, whatever its bits), fewer would check more false candidates."""
    return max(16, min(40, math.ceil(math.log2(max(n_hashes, 2)))))


def sampled_recall(distance: int, key_bits: int, tables: int) -> float:
    """The chance that two hashes ``distance`` bits apart share at least one of ``tables``
    sampled keys of ``key_bits`` bits."""
    one = math.comb(64 - distance, key_bits) / math.comb(64, key_bits)
    return 1 - (1 - one) ** tables


def sql_int64(value: int) -> str:
    return f"{value}::BIGINT"


def key_expressions(max_distance: int, mode: str, masks: list[int]) -> list[str]:
    """One SQL expression of ``phash`` per candidate key: the bands of multi-index hashing
    (``exact``) or the sampled masks."""
    if mode == "exact":
        return [
            f"(phash >> {shift}) & {sql_int64((1 << width) - 1)}"
            for shift, width in bands(max_distance)
        ]
    return [f"phash & {sql_int64(mask)}" for mask in masks]


def find_duplicates(connection, images_sql: str, settings: dict | None = None) -> tuple[object, dict]:  # fmt: skip
    """Group the images of ``images_sql`` (a query with ``image_id``, ``uri``, ``width``,
    ``height``, ``pixel_sha256``, ``phash``, ``phash_crops``) on a DuckDB ``connection``. Returns (a pyarrow
    table of ``engine.schemas.DUPLICATES`` rows without ``iteration``, facts: counts, the
    mode and, for sampled bits, its recall figures). ``settings``: ``max_distance``,
    ``exact_limit``, ``tables``, ``crop_hashes`` (false: only the images' own hashes are
    compared, so trimmed copies are missed; measured in ``bench/dedup.py``: 4x faster at
    10M images, whose 11 hashes each make the probe side of every join).

    Images are numbered (``n``) first, so that keys, pairs and components are integers;
    one key at a time, a hash join with the images' own hashes as its build side pairs an
    image's own hash with another's own hash (once per pair) or crop hash, never two crop
    hashes; only the pairs within the distance are kept."""
    settings = {"max_distance": DEFAULT_MAX_DISTANCE, "exact_limit": DEFAULT_EXACT_LIMIT,
                "tables": DEFAULT_TABLES, "crop_hashes": True, **(settings or {})}  # fmt: skip
    max_distance = int(settings["max_distance"])
    crops = "phash_crops IS NOT NULL" if settings["crop_hashes"] else "false"
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE dedup_images AS "
        f"SELECT (row_number() OVER ())::INTEGER AS n, * FROM ({images_sql})"
    )
    # Every hash of an image: its own (variant 0) and its crops' (variant 1).
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE dedup_hashed AS "
        "SELECT n, 0::TINYINT AS variant, phash FROM dedup_images WHERE phash IS NOT NULL "
        f"UNION ALL SELECT n, 1::TINYINT, unnest(phash_crops) FROM dedup_images WHERE {crops}"
    )
    n_hashed = connection.execute("SELECT count(*) FROM dedup_images WHERE phash IS NOT NULL").fetchone()[0]  # fmt: skip
    facts: dict = {"images": connection.execute("SELECT count(*) FROM dedup_images").fetchone()[0],
                   "hashed": n_hashed, "max_distance": max_distance}  # fmt: skip
    if n_hashed <= settings["exact_limit"]:
        mode, masks = "exact", []
        facts["near_mode"] = "multi-index hashing, exact"
    else:
        key_bits = sampled_key_bits(n_hashed)
        masks = sampled_masks(int(settings["tables"]), key_bits)
        mode = "sampled"
        facts["near_mode"] = (
            f"sampled bits: {len(masks)} keys of {key_bits} bits; chance a pair d bits apart "
            "is found: "
            + ", ".join(
                f"d={d} {sampled_recall(d, key_bits, len(masks)):.3f}"
                for d in range(1, max_distance + 1)
            )  # fmt: skip
        )
    # Exact copies: each member paired with its group's first (a star, not every pair).
    # (a GROUP BY then a join back costs half the window PARTITION BY over every image)
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE dedup_pairs AS
        WITH shared AS (
            SELECT pixel_sha256, min(n) AS first_n FROM dedup_images
            WHERE pixel_sha256 IS NOT NULL GROUP BY pixel_sha256 HAVING count(*) > 1
        )
        SELECT s.first_n AS a, i.n AS b FROM dedup_images i JOIN shared s USING (pixel_sha256)
        WHERE i.n <> s.first_n"""
    )
    # One hash join per key: the images' own hashes are the build side, every hash (own
    # and crop) probes it; a GROUP BY of the keys first (to drop unshared ones) cost 3-4x
    # the join at 10M hashes, because nearly every sampled key is unique.
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE dedup_own AS SELECT n, phash FROM dedup_hashed WHERE variant = 0"
    )
    for key in key_expressions(max_distance, mode, masks):
        connection.execute(
            f"""INSERT INTO dedup_pairs
            SELECT least(x.n, y.n), greatest(x.n, y.n)
            FROM (SELECT n, phash, {key} AS key FROM dedup_own) x
            JOIN (SELECT n, variant, phash, {key} AS key FROM dedup_hashed) y
              ON x.key = y.key AND (y.variant = 1 OR x.n < y.n)
            WHERE x.n <> y.n AND bit_count(xor(x.phash, y.phash)) <= {max_distance}"""
        )
    connection.execute("CREATE OR REPLACE TEMP TABLE dedup_pairs AS SELECT DISTINCT a, b FROM dedup_pairs")  # fmt: skip
    facts["pairs"] = connection.execute("SELECT count(*) FROM dedup_pairs").fetchone()[0]
    label_components(connection)
    table = connection.sql(
        """
        WITH members AS (
            SELECT c.component, i.*
            FROM dedup_components c JOIN dedup_images i USING (n)
        ),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY component
                ORDER BY width::BIGINT * height DESC, uri, image_id) AS place,
                count(*) OVER (PARTITION BY component) AS size
            FROM members
        ),
        representatives AS (SELECT component, image_id, pixel_sha256, phash FROM ranked WHERE place = 1)
        SELECT m.image_id, r.image_id AS group_id, r.image_id AS representative,
               (m.image_id = r.image_id) AS is_representative,
               CASE WHEN m.pixel_sha256 = r.pixel_sha256 THEN 0
                    WHEN m.phash IS NULL OR r.phash IS NULL THEN NULL
                    ELSE bit_count(xor(m.phash, r.phash))::INTEGER END AS distance,
               CASE WHEN m.pixel_sha256 = r.pixel_sha256 THEN 'exact' ELSE 'near' END AS kind,
               m.size::INTEGER AS group_size
        FROM ranked m JOIN representatives r USING (component)
        WHERE m.size > 1
        ORDER BY group_id, is_representative DESC, m.image_id
        """
    ).to_arrow_table()
    facts["groups"] = connection.execute(
        "SELECT count(DISTINCT component) FROM dedup_components"
    ).fetchone()[0]
    facts["duplicates"] = table.num_rows - facts["groups"]  # members that are not representatives
    for name in ("dedup_images", "dedup_hashed", "dedup_own", "dedup_pairs", "dedup_components"):
        connection.execute(f"DROP TABLE IF EXISTS {name}")
    return table, facts


def label_components(connection) -> None:
    """``dedup_components(n, component)``: for every image in a pair, the smallest number
    of its connected component (label propagation over ``dedup_pairs``, in SQL, until no
    label changes; each round is a join over the pairs, so the rounds are the longest
    chain's length, a handful for groups of copies)."""
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE dedup_components AS
        SELECT n, min(other) AS component FROM (
            SELECT a AS n, a AS other FROM dedup_pairs
            UNION ALL SELECT b, a FROM dedup_pairs
        ) GROUP BY n"""
    )
    while True:
        connection.execute(
            """CREATE OR REPLACE TEMP TABLE dedup_next AS
            SELECT c.n, least(c.component, coalesce(min(o.component), c.component)) AS component
            FROM dedup_components c
            LEFT JOIN (
                SELECT p.a AS n, c.component FROM dedup_pairs p JOIN dedup_components c ON c.n = p.b
                UNION ALL
                SELECT p.b, c.component FROM dedup_pairs p JOIN dedup_components c ON c.n = p.a
            ) o USING (n)
            GROUP BY c.n, c.component"""
        )
        changed = connection.execute(
            "SELECT count(*) FROM dedup_next x JOIN dedup_components c USING (n) "
            "WHERE x.component <> c.component"
        ).fetchone()[0]
        connection.execute("CREATE OR REPLACE TEMP TABLE dedup_components AS SELECT * FROM dedup_next")  # fmt: skip
        if not changed:
            connection.execute("DROP TABLE IF EXISTS dedup_next")
            return


# --------------------------------------------------------------------------- the table

DUPLICATES_FILE = "duplicates.parquet"
HASHES_DIR = "_dedup"  # fld dedup's hashes of a corpus written before images had them


def hashes_schema():
    import pyarrow as pa

    return pa.schema([pa.field("image_id", pa.string(), nullable=False),
                      pa.field("pixel_sha256", pa.string()), pa.field("phash", pa.int64()),
                      pa.field("phash_crops", pa.list_(pa.int64()))])  # fmt: skip


def duplicates_path(corpus, iteration: int):
    return corpus.iteration_dir(iteration) / DUPLICATES_FILE


def write_duplicates(corpus, iteration: int, settings: dict | None = None) -> dict:
    """Group ``iteration``'s images (its shard or part files, committed or not) and write
    ``iteration=K/duplicates.parquet``; returns the facts (``find_duplicates``). Images
    without hashes (a corpus written before them, or images of ``fld dedup`` not yet
    hashed) are grouped by nothing."""
    import pyarrow as pa

    from engine.corpus import atomic_write_parquet
    from engine.query import connect, sql_literal
    from engine.schemas import DUPLICATES
    from engine.storage import sql_path

    connection = connect(corpus.root, [iteration], duplicates="none")
    try:
        columns = {row[0] for row in connection.execute("DESCRIBE images").fetchall()}
        if {"pixel_sha256", "phash", "phash_crops"} <= columns:
            hashes = "pixel_sha256, phash, phash_crops"
        else:  # written before the hashes existed: NULL unless `fld dedup` hashed them
            hashes = "NULL::VARCHAR AS pixel_sha256, NULL::BIGINT AS phash, NULL::BIGINT[] AS phash_crops"
        images_sql = f"SELECT image_id, uri, width, height, {hashes} FROM images"
        side = corpus.iteration_dir(iteration) / HASHES_DIR
        side_files = [p for p in side.iterdir() if p.name.endswith(".parquet")] if side.exists() else []  # fmt: skip
        if side_files:
            listed = ", ".join(sql_literal(sql_path(path)) for path in sorted(side_files, key=str))
            images_sql = (
                "SELECT b.image_id, b.uri, b.width, b.height, "
                "coalesce(b.pixel_sha256, h.pixel_sha256) AS pixel_sha256, "
                "coalesce(b.phash, h.phash) AS phash, "
                f"coalesce(b.phash_crops, h.phash_crops) AS phash_crops FROM ({images_sql}) b "
                f"LEFT JOIN read_parquet([{listed}]) h USING (image_id)"
            )
        table, facts = find_duplicates(connection, images_sql, settings)
    finally:
        connection.close()
    table = table.append_column("iteration", pa.array([iteration] * table.num_rows, pa.int32()))
    table = table.select(DUPLICATES.names).cast(DUPLICATES)
    atomic_write_parquet(duplicates_path(corpus, iteration), table)
    return facts


# --------------------------------------------------------------------------- copied labels

ID_COLUMNS = ("region_id", "text_id", "triplet_id", "phrase_id")  # "<image_id[:16]>:<k>:..."


def rows_for_copy(table, original_id: str, copy_id: str):
    """``table``'s rows of image ``original_id`` as the rows of ``copy_id`` (an image with
    the same pixels, ``run.dedup: before_annotation``): ``image_id`` and the image prefix of
    every id column (``ID_COLUMNS``, ``engine.records``) rewritten; nothing else changes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.filter(pc.equal(table.column("image_id"), original_id))
    for name in ("image_id", *ID_COLUMNS):
        if name not in rows.column_names:
            continue
        index = rows.schema.get_field_index(name)
        if name == "image_id":
            column = pa.array([copy_id] * rows.num_rows, pa.string())
        else:  # the first 16 characters are the image's
            column = pc.utf8_replace_slice(rows.column(name), start=0, stop=16, replacement=copy_id[:16])  # fmt: skip
        rows = rows.set_column(index, rows.schema.field(index), column)
    return rows
