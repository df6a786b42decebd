"""Duplicate detection (``engine.dedup``): the hashes a worker records, and the grouping
in DuckDB (exact pixels, near perceptual hashes, connected components, representatives)."""

from __future__ import annotations

import io
import itertools

import duckdb
import numpy as np
import pytest
from PIL import Image

from engine.dedup import (
    find_duplicates,
    hamming,
    image_hashes,
    perceptual_hash,
    pixel_sha256,
    sampled_recall,
)
from engine.imaging import decode_image
from tests.fixtures.common import DEMO_IMAGES


def pixels_of(image: Image.Image, fmt: str = "PNG", **options) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return decode_image(buffer.getvalue()).pixels


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {p.stem: Image.open(p).convert("RGB") for p in sorted(DEMO_IMAGES.glob("*.jpg"))}


def test_edits_that_keep_the_image_stay_within_six_bits(photos):
    """Re-encoding and resizing; crops move the DCT more (measured in bench/dedup.py)."""
    for photo in photos.values():
        original = perceptual_hash(np.asarray(photo))
        width, height = photo.size
        edits = {
            "jpeg 30": pixels_of(photo, "JPEG", quality=30),
            "half size": np.asarray(photo.resize((width // 2, height // 2))),
            "double size": np.asarray(photo.resize((width * 2, height * 2))),
        }
        for name, edited in edits.items():
            assert hamming(original, perceptual_hash(edited)) <= 6, name


def test_different_photos_are_far_apart(photos):
    hashes = [perceptual_hash(np.asarray(photo)) for photo in photos.values()]
    for a, b in itertools.combinations(hashes, 2):
        assert hamming(a, b) > 12


def test_same_pixels_in_another_container_have_the_same_pixel_hash(photos):
    photo = photos["bus"]
    png, webp = pixels_of(photo, "PNG"), pixels_of(photo, "WEBP", lossless=True)
    assert pixel_sha256(png) == pixel_sha256(webp)
    assert pixel_sha256(png) != pixel_sha256(pixels_of(photo, "JPEG", quality=90))


def test_a_flat_image_has_no_perceptual_hash():
    for colour in ((0, 0, 0), (255, 255, 255), (12, 200, 40)):
        flat = np.full((50, 70, 3), colour, np.uint8)
        assert image_hashes(flat)["phash"] is None
        assert image_hashes(flat)["pixel_sha256"]


def images_table(rows: list[tuple]):
    """A DuckDB connection with ``imgs``: (image_id, uri, width, height, pixel_sha256,
    phash, phash_crops) rows, the columns ``find_duplicates`` reads."""
    connection = duckdb.connect()
    connection.execute(
        "CREATE TABLE imgs (image_id VARCHAR, uri VARCHAR, width INT, height INT, "
        "pixel_sha256 VARCHAR, phash BIGINT, phash_crops BIGINT[])"
    )
    connection.executemany("INSERT INTO imgs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return connection


def group(rows: list[tuple], **settings):
    """Group rows without crop hashes."""
    connection = images_table([(*row, None) for row in rows])
    table, facts = find_duplicates(connection, "SELECT * FROM imgs", settings)
    return table.to_pylist(), facts


def trimmed(photo: Image.Image, cut: float, corner: str) -> np.ndarray:
    """``photo`` with ``cut`` of each side's length cut off: around the centre (``"c"``)
    or off the two edges away from ``corner`` (``"tl"`` keeps the top left)."""
    width, height = photo.size
    keep_w, keep_h = int(width * (1 - cut)), int(height * (1 - cut))
    if corner == "c":
        left, top = (width - keep_w) // 2, (height - keep_h) // 2
    else:
        left = 0 if corner[1] == "l" else width - keep_w
        top = 0 if corner[0] == "t" else height - keep_h
    return np.asarray(photo.crop((left, top, left + keep_w, top + keep_h)))


def test_copies_trimmed_at_the_centre_or_a_corner_join_their_original(photos):
    """Up to 10 % of each side cut off, around the centre or off two edges: each copy is
    grouped with its photo (through its crop hashes), and the photos stay apart."""
    rows, origin = [], {}
    for name, photo in photos.items():
        copies = {name: np.asarray(photo)}
        for cut, corner in itertools.product((0.05, 0.10), ("c", "tl", "tr", "bl", "br")):
            copies[f"{name}~{corner}{cut}"] = trimmed(photo, cut, corner)
        for image_id, pixels in copies.items():
            hashes = image_hashes(pixels)
            rows.append((image_id, image_id, pixels.shape[1], pixels.shape[0], *hashes.values()))
            origin[image_id] = name
    connection = images_table(rows)
    table, _ = find_duplicates(connection, "SELECT * FROM imgs")
    group_of = {row["image_id"]: row["group_id"] for row in table.to_pylist()}
    for image_id, name in origin.items():
        assert group_of.get(image_id) is not None, image_id
        assert group_of[image_id] == group_of[name], image_id
    assert len(set(group_of.values())) == len(photos)
    # dedup.crop_hashes: false compares the own hashes alone: most corner copies are missed
    own_only, _ = find_duplicates(connection, "SELECT * FROM imgs", {"crop_hashes": False})
    grouped = set(own_only.column("image_id").to_pylist())
    corner_copies = [image_id for image_id in origin if "~" in image_id and "~c" not in image_id]
    assert sum(image_id in grouped for image_id in corner_copies) < len(corner_copies) / 2


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def flip(value: int, bits: list[int]) -> int:
    unsigned = value & ((1 << 64) - 1)
    for bit in bits:
        unsigned ^= 1 << int(bit)
    return signed(unsigned)


def test_groups_components_representatives_and_flat_images():
    base = signed(0x0F0F_3C3C_A5A5_5A5A)
    rows = [
        ("a", "u/3", 100, 100, "pa", base),
        ("b", "u/2", 200, 100, "pb", flip(base, [1, 9, 17, 30])),  # 4 bits from a
        (
            "c",
            "u/1",
            200,
            100,
            "pc",
            flip(base, [1, 9, 17, 30, 40, 50, 60, 62]),
        ),  # 4 from b, 8 from a
        ("d", "u/4", 50, 50, "pd", flip(base, list(range(0, 64, 2)))),  # far from all
        ("e", "u/5", 64, 64, "flat", None),  # a flat image ...
        ("f", "u/6", 64, 64, "flat", None),  # ... with the same pixels: exact
        ("g", "u/7", 80, 80, "flat2", None),  # another flat image: no group
        ("h", "u/8", 100, 100, "pa", base),  # a's pixels again
    ]
    members, facts = group(rows)
    by_id = {row["image_id"]: row for row in members}
    assert set(by_id) == {"a", "b", "c", "e", "f", "h"}
    # a-b-c is one chain (a and c are 8 bits apart); the largest is b or c (200x100), the
    # earliest URI of those is c's.
    assert {by_id[i]["group_id"] for i in "abch"} == {"c"}
    assert by_id["c"]["is_representative"] and by_id["c"]["group_size"] == 4
    assert by_id["a"]["distance"] == 8 and by_id["a"]["kind"] == "near"
    assert by_id["b"]["distance"] == 4
    assert by_id["e"]["group_id"] == by_id["f"]["group_id"] == "e"  # the earlier URI
    assert by_id["f"]["kind"] == "exact" and by_id["f"]["distance"] == 0
    assert facts["groups"] == 2 and facts["duplicates"] == 4
    assert facts["near_mode"].startswith("multi-index hashing")


def test_multi_index_hashing_finds_every_pair_brute_force_finds():
    rng = np.random.default_rng(7)
    hashes = [signed(int(v)) for v in rng.integers(0, 2**63, 1500, dtype=np.int64) * 2 + rng.integers(0, 2, 1500)]  # fmt: skip
    for index in range(0, 300, 3):  # planted copies at 0-8 bits
        distance = index % 9
        hashes.append(flip(hashes[index], list(rng.choice(64, distance, replace=False))))
    rows = [(f"i{n:05d}", f"u{n:05d}", 10, 10, f"p{n}", h) for n, h in enumerate(hashes)]
    members, facts = group(rows, max_distance=6)
    expected_pairs = {
        (a, b) for (a, ha), (b, hb) in itertools.combinations(((r[0], r[5]) for r in rows), 2)
        if hamming(ha, hb) <= 6
    }  # fmt: skip
    assert facts["pairs"] == len(expected_pairs) > 50
    grouped = {row["image_id"] for row in members}
    assert grouped == {i for pair in expected_pairs for i in pair}


def test_sampled_bits_mode_finds_close_copies_and_says_how_likely():
    rng = np.random.default_rng(3)
    hashes = [signed(int(v)) for v in rng.integers(0, 2**63, 500, dtype=np.int64)]
    planted = {}
    for index in range(50):
        planted[f"c{index}"] = (f"i{index:04d}", flip(hashes[index], list(rng.choice(64, 2, replace=False))))  # fmt: skip
    rows = [(f"i{n:04d}", f"u{n:04d}", 20, 20, f"p{n}", h) for n, h in enumerate(hashes)]
    rows += [(name, f"v{name}", 10, 10, f"q{name}", h) for name, (_, h) in planted.items()]
    members, facts = group(rows, exact_limit=0, tables=24)
    assert facts["near_mode"].startswith("sampled bits")
    found = {row["image_id"]: row["group_id"] for row in members if not row["is_representative"]}
    hits = sum(found.get(name) == original for name, (original, _) in planted.items())
    assert hits >= 48, hits  # 2 bits apart: found with probability > 0.999 per pair
    assert sampled_recall(2, 16, 24) > 0.999
    assert sampled_recall(6, 26, 24) < sampled_recall(2, 26, 24)


def test_run_dedup_changes_the_config_hash_only_when_it_copies_labels():
    """``run.dedup: before_annotation`` writes other rows (copied, ``labels_from``), so a run
    must not resume over shards made without it; the default hashes as the same settings
    without the key, as before the setting existed, so that older interrupted runs resume."""
    from types import SimpleNamespace

    from pipelines.annotate import output_config_hash
    from pipelines.config import load_config

    default = load_config(None, ["annotators=[{name: ssd_coco}]"])
    before = load_config(None, ["annotators=[{name: ssd_coco}]", "run.dedup=before_annotation"])
    assert output_config_hash(default) != output_config_hash(before)
    without_the_key = default.to_dict()
    del without_the_key["run"]["dedup"]
    older = SimpleNamespace(to_dict=lambda: without_the_key)  # all output_config_hash reads
    assert output_config_hash(default) == output_config_hash(older)
