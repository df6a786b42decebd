"""Duplicate images end to end: copies across shards are grouped when the iteration
commits, ``fld stats`` counts them, exports and the report skip them unless told, and a
corpus written before images had hashes gets them from ``fld dedup``."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from engine.query import connect
from tests.fixtures.common import DEMO_IMAGES, SSD_ONLY, run_fld


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    photos = root / "photos"
    photos.mkdir()
    for name in ("bus.jpg", "zidane.jpg", "coffee.jpg", "sign.png"):
        shutil.copy(DEMO_IMAGES / name, photos / name)
    bus = Image.open(DEMO_IMAGES / "bus.jpg")
    bus.save(photos / "z1_bus_q35.jpg", quality=35)  # re-encoded
    bus.resize((bus.width // 2, bus.height // 2)).save(photos / "z2_bus_half.jpg", quality=90)
    Image.open(DEMO_IMAGES / "sign.png").save(photos / "z3_sign.webp", lossless=True)  # same pixels
    out = root / "corpus"
    # Two images per shard: every copy is in another shard than its original.
    run_fld("run", str(photos), "--out", str(out), "--shard-size", "2", "--quiet", *SSD_ONLY, timeout=600)  # fmt: skip
    return out


def uri_groups(out) -> dict[str, tuple[str, bool, str]]:
    rows = (
        connect(out)
        .execute(
            "SELECT i.uri, r.uri, d.is_representative, d.kind FROM duplicates d "
            "JOIN images i USING (image_id) JOIN images r ON r.image_id = d.representative"
        )
        .fetchall()
    )
    return {uri.rsplit("/", 1)[1]: (rep.rsplit("/", 1)[1], first, kind) for uri, rep, first, kind in rows}  # fmt: skip


def test_copies_across_shards_are_grouped_with_their_original(corpus):
    groups = uri_groups(corpus)
    assert groups == {
        "bus.jpg": ("bus.jpg", True, "exact"),
        "z1_bus_q35.jpg": ("bus.jpg", False, "near"),
        "z2_bus_half.jpg": ("bus.jpg", False, "near"),
        "sign.png": ("sign.png", True, "exact"),
        "z3_sign.webp": ("sign.png", False, "exact"),
    }
    run = json.loads((corpus / "iteration=0" / "run.json").read_text())
    assert run["duplicates"]["groups"] == 2 and run["duplicates"]["duplicates"] == 3
    stats = run_fld("stats", str(corpus)).stdout
    section = stats.split("== duplicate images (groups of copies) ==")[1]
    assert section.split("\n")[3].split() == ["0", "2", "3", "1", "2", "3"]


def test_exports_and_the_report_skip_copies_unless_told(corpus, tmp_path):
    run_fld("export", str(corpus), "--format", "coco", "--out", str(tmp_path / "coco"))
    images = json.loads((tmp_path / "coco" / "instances.json").read_text())["images"]
    assert sorted(i["file_name"].rsplit("/", 1)[-1] for i in images) == [
        "bus.jpg", "coffee.jpg", "sign.png", "zidane.jpg",
    ]  # fmt: skip
    summary = json.loads((tmp_path / "coco" / "export.json").read_text())
    assert summary["duplicates_skipped"] == 3
    run_fld("export", str(corpus), "--format", "coco", "--out", str(tmp_path / "all"), "--keep-duplicates")  # fmt: skip
    assert len(json.loads((tmp_path / "all" / "instances.json").read_text())["images"]) == 7
    connection = connect(corpus, duplicates="skip")
    assert connection.execute("SELECT count(*) FROM images").fetchone()[0] == 4
    assert connection.execute("SELECT count(*) FROM _all_images").fetchone()[0] == 7


def test_a_corpus_written_before_hashes_gets_them_from_fld_dedup(corpus, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(corpus, old)
    (old / "iteration=0" / "duplicates.parquet").unlink()
    for path in (old / "iteration=0" / "images").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["pixel_sha256", "phash"]), path)
    assert connect(old).execute("SELECT count(*) FROM duplicates").fetchone()[0] == 0
    result = run_fld("dedup", str(old), "--quiet")
    assert "2 duplicate groups, 3 copies of 7 images (7 hashed now" in result.stdout
    assert uri_groups(old) == uri_groups(corpus)
    again = run_fld("dedup", str(old), "--quiet")  # resumed: nothing to hash again
    assert "(0 hashed now" in again.stdout


ROW_COLUMNS = {  # what a copy must share with its original: every column but the ids
    "regions": "kind, x0, y0, x1, y1, quad, polygon, label, score, source, sources, kept, drop_reason",
    "texts": "granularity, text, source, score, kept, drop_reason",
    "phrases": "phrase, char_start, char_end, box, score, source, kept, drop_reason",
}


def rows_by_uri(out, table: str) -> dict[str, list[tuple]]:
    connection = connect(out)
    try:
        rows = connection.execute(
            f"SELECT i.uri, {ROW_COLUMNS[table]} FROM {table} t JOIN images i USING (image_id) "
            "ORDER BY ALL"
        ).fetchall()
    finally:
        connection.close()
    found: dict[str, list[tuple]] = {}
    for uri, *rest in rows:
        found.setdefault(uri.rsplit("/", 1)[1], []).append(tuple(rest))
    return found


def test_before_annotation_copies_the_rows_of_the_same_pixels_and_skips_the_models(tmp_path):
    """``run.dedup: before_annotation`` (default config, in process, shards of 3): a PNG
    of bus.jpg's pixels in the same shard, one of zidane.jpg's in the next shard; both get their original's rows (ids rewritten, ``images.labels_from`` set),
    and their boxes equal what the models give them when they run."""
    photos = tmp_path / "photos"
    photos.mkdir()
    # Shards of 3 in name order: a_bus.jpg, a_bus_copy.png, a_zidane.jpg | b_coffee.jpg,
    # b_zidane_copy.png.
    for name, target in (("bus.jpg", "a_bus.jpg"), ("zidane.jpg", "a_zidane.jpg"), ("coffee.jpg", "b_coffee.jpg")):  # fmt: skip
        shutil.copy(DEMO_IMAGES / name, photos / target)
    Image.open(DEMO_IMAGES / "bus.jpg").save(photos / "a_bus_copy.png")
    Image.open(DEMO_IMAGES / "zidane.jpg").save(photos / "b_zidane_copy.png")
    before, after = tmp_path / "before", tmp_path / "after"
    common = ("--shard-size", "3", "--executor", "local", "--quiet")
    run_fld("run", str(photos), "--out", str(before), *common, "--set", "run.dedup=before_annotation")  # fmt: skip
    run_fld("run", str(photos), "--out", str(after), *common)

    connection = connect(before)
    images = {
        uri.rsplit("/", 1)[1]: (image_id, labels_from)
        for uri, image_id, labels_from in connection.execute(
            "SELECT uri, image_id, labels_from FROM images"
        ).fetchall()
    }
    connection.close()
    assert images["a_bus_copy.png"][1] == images["a_bus.jpg"][0]
    assert images["b_zidane_copy.png"][1] == images["a_zidane.jpg"][0]
    annotated = sorted(name for name, (_, source) in images.items() if source is None)
    assert annotated == ["a_bus.jpg", "a_zidane.jpg", "b_coffee.jpg"]
    markers = sorted((before / "iteration=0" / "_shards").glob("*.json"))
    assert [json.loads(m.read_text())["labels_copied"] for m in markers] == [1, 1]

    for table in ROW_COLUMNS:
        copied = rows_by_uri(before, table)
        for copy, original in (
            ("a_bus_copy.png", "a_bus.jpg"),
            ("b_zidane_copy.png", "a_zidane.jpg"),
        ):
            assert copied[copy] and copied[copy] == copied[original], (table, copy)
    # The ids are the copy's own: no row id is shared between two images.
    ids = connect(before).execute("SELECT count(*), count(DISTINCT region_id) FROM regions").fetchone()  # fmt: skip
    assert ids[0] == ids[1]
    # The models, had they run, give the copies the same boxes.
    computed = rows_by_uri(after, "regions")
    for copy in ("a_bus_copy.png", "b_zidane_copy.png"):
        assert rows_by_uri(before, "regions")[copy] == computed[copy]
    stats = run_fld("stats", str(before)).stdout
    section = stats.split("(run.dedup: before_annotation) ==")[1]
    assert section.split("\n")[3].split() == ["0", "2", "2"]
