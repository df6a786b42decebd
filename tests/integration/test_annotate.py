"""End-to-end runs of the real pipeline (SSD + RapidOCR, filters, Parquet, DuckDB) on
real photos, through Ray workers on the session's local cluster."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.query import connect
from engine.schemas import ROW_ID, TABLES
from pipelines.annotate import annotate_corpus
from pipelines.config import load_config
from tests.fixtures import imagekit
from tests.fixtures.common import DEMO_IMAGES, run_fld
from tests.fixtures.corpus_tools import kept_regions

SHARD_SIZE = 1  # one image per shard: every run below batches each image alone


def iou(a: dict, b: dict) -> float:
    ix = max(0.0, min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]))
    iy = max(0.0, min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]))
    inter = ix * iy
    area = lambda r: (r["x1"] - r["x0"]) * (r["y1"] - r["y0"])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def normalise(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


@pytest.fixture(scope="module")
def demo_corpus(ray_session, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    config = load_config(None, [f"run.shard_size={SHARD_SIZE}", "run.workers=2"])
    summary = annotate_corpus(config, str(DEMO_IMAGES), str(out), show_progress=False)
    assert summary.shards_run == summary.n_shards == len(list(DEMO_IMAGES.iterdir()))
    return out


def test_bus_photo_has_bus_and_people(demo_corpus):
    regions = kept_regions(demo_corpus, "bus.jpg")
    labels = [r["label"] for r in regions if r["kind"] == "object"]
    assert "bus" in labels
    assert labels.count("person") >= 3
    assert all(r["source"] == "ssd_coco@2" for r in regions if r["kind"] == "object")


def test_rendered_sign_is_read_by_ocr(demo_corpus):
    regions = [r for r in kept_regions(demo_corpus, "sign.png") if r["kind"] == "ocr"]
    texts = {normalise(r["label"]) for r in regions}
    assert {"FRESHBREAD", "OPENDAILY"} <= texts
    for region in regions:
        assert region["source"] == "rapidocr@1"
        assert len(region["quad"]) == 8
        xs, ys = region["quad"][0::2], region["quad"][1::2]
        # clockwise from top-left: TL is left of TR, BR is below TR
        assert xs[0] < xs[1] and ys[2] > ys[1]
        assert min(xs) >= region["x0"] - 1 and max(xs) <= region["x1"] + 1


def test_tables_follow_the_contract(demo_corpus):
    iteration_dir = demo_corpus / "iteration=0"
    assert (iteration_dir / "_COMMITTED").exists()
    n_shards = len(list(DEMO_IMAGES.iterdir()))
    assert len(list((iteration_dir / "_shards").glob("*.json"))) == n_shards
    for table, schema in TABLES.items():
        files = sorted((iteration_dir / table).glob("shard=*.parquet"))
        assert len(files) == n_shards
        for file in files:
            assert pq.read_schema(file).equals(schema, check_metadata=False)
    connection = connect(demo_corpus)
    for table, row_id in ROW_ID.items():
        total, distinct = connection.execute(
            f"SELECT count(*), count(DISTINCT {row_id}) FROM {table}"
        ).fetchall()[0]
        assert total == distinct
    bad_boxes = connection.execute(
        "SELECT count(*) FROM regions r JOIN images i USING (image_id) "
        "WHERE r.kept AND NOT (0 <= x0 AND x0 < x1 AND x1 <= i.width AND 0 <= y0 AND y0 < y1 AND y1 <= i.height)"
    ).fetchall()[0][0]
    assert bad_boxes == 0
    dropped_without_reason = connection.execute(
        "SELECT count(*) FROM regions WHERE (NOT kept AND drop_reason IS NULL) OR (kept AND drop_reason IS NOT NULL)"
    ).fetchall()[0][0]
    assert dropped_without_reason == 0
    info = json.loads((iteration_dir / "run.json").read_text())
    assert info["annotators"] == [
        "ssd_coco@2",
        "rapidocr@1",
        "dense_captioner@1",
        "region_captioner@1",
        "phrase_extractor@1",
        "embedding_grounder@1",
        "grabcut_segmenter@1",
    ]
    assert info["counts"]["rows"]["images"] == n_shards
    assert "ray" in info["packages"] and info["config"]["run"]["shard_size"] == SHARD_SIZE
    image_sizes = connection.sql(
        "SELECT uri, width, height, bytes FROM images ORDER BY uri"
    ).fetchall()
    bus = next(row for row in image_sizes if row[0].endswith("bus.jpg"))
    assert bus[1:] == (810, 1080, (DEMO_IMAGES / "bus.jpg").stat().st_size)


def test_rerun_of_committed_corpus_does_nothing(demo_corpus, ray_address):
    before = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in demo_corpus.rglob("*") if p.is_file()
    }
    result = run_fld("run", str(DEMO_IMAGES), "--out", str(demo_corpus), "--shard-size", str(SHARD_SIZE),
                     "--address", ray_address)  # fmt: skip
    assert "nothing to do" in result.stdout
    after = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in demo_corpus.rglob("*") if p.is_file()
    }
    assert before == after


def test_mixed_folder_bad_files_become_errors_and_odd_modes_match(
    demo_corpus, ray_address, tmp_path
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(DEMO_IMAGES / "bus.jpg", folder / "bus.jpg")
    shutil.copy(DEMO_IMAGES / "sign.png", folder / "sign.png")
    odd = {
        "bus_exif6.jpg": imagekit.exif_rotated_jpeg(None, orientation=6),
        "bus_cmyk.jpg": imagekit.cmyk_jpeg(None),
        "bus_16bit.png": imagekit.png16(None),
    }
    bad = {
        "empty.jpg": (imagekit.zero_bytes(), "empty"),
        "truncated.jpg": (imagekit.truncated_jpeg(), "truncated"),
        "random.png": (imagekit.random_bytes(), "not_an_image"),
        "notes.txt": (imagekit.text_file(), "not_an_image"),
        "bomb.png": (imagekit.decompression_bomb_png(), "decompression_bomb"),
        "tiny.png": (imagekit.tiny_png(8), "too_small"),
    }
    for name, data in odd.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "corpus"
    result = run_fld("run", str(folder), "--out", str(out), "--shard-size", str(SHARD_SIZE),
                     "--address", ray_address, "--quiet")  # fmt: skip
    assert result.returncode == 0
    connection = connect(out)
    errors = dict(
        connection.sql("SELECT regexp_extract(uri, '[^/]+$'), error_type FROM errors").fetchall()
    )
    assert errors == {name: error_type for name, (_, error_type) in bad.items()}
    stages = {row[0] for row in connection.sql("SELECT DISTINCT stage FROM errors").fetchall()}
    assert stages == {"decode"}

    # The good files' rows are identical to those of the run without bad files.
    for file_name in ("bus.jpg", "sign.png"):
        assert strip_corpus(kept_or_not(out, file_name)) == strip_corpus(
            kept_or_not(demo_corpus, file_name)
        )

    upright = [r for r in kept_regions(out, "bus.jpg") if r["kind"] == "object"]
    for variant in odd:
        regions = [r for r in kept_regions(out, variant) if r["kind"] == "object"]
        assert sorted(r["label"] for r in regions) == sorted(r["label"] for r in upright), variant
        if variant == "bus_exif6.jpg":
            for region in upright:
                best = max(
                    iou(region, other) for other in regions if other["label"] == region["label"]
                )
                assert best >= 0.9, (region["label"], best)


def kept_or_not(corpus: Path, file_name: str) -> list[tuple]:
    connection = connect(corpus)
    return connection.execute(
        "SELECT r.* FROM regions r JOIN images i USING (image_id) WHERE i.uri LIKE '%/' || ? ORDER BY region_id",
        [file_name],
    ).fetchall()


def strip_corpus(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 3) if isinstance(v, float) else v for v in row) for row in rows]


def test_in_process_executor_gives_the_same_rows(demo_corpus, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("zidane.jpg", "sign.png"):
        shutil.copy(DEMO_IMAGES / name, folder / name)
    out = tmp_path / "corpus"
    config = load_config(None, [f"run.shard_size={SHARD_SIZE}", "run.executor=local"])
    annotate_corpus(config, str(folder), str(out), show_progress=False)
    for name in ("zidane.jpg", "sign.png"):
        assert strip_corpus(kept_or_not(out, name)) == strip_corpus(kept_or_not(demo_corpus, name))


def test_cli_stats_sql_and_show(demo_corpus, tmp_path):
    stats = run_fld("stats", str(demo_corpus)).stdout
    assert "regions per kind" in stats and "person" in stats and "low_score" in stats
    sql = run_fld(
        "sql",
        str(demo_corpus),
        "SELECT label, count(*) AS n FROM regions WHERE kept AND label = 'bus' GROUP BY label",
        "--format",
        "csv",
    ).stdout
    assert sql.splitlines() == ["label,n", "bus,1"]
    png = tmp_path / "bus.png"
    result = run_fld("show", str(demo_corpus), "bus.jpg", "--out", str(png))
    assert png.exists() and "regions" in result.stdout
    from PIL import Image

    drawn = Image.open(png)
    assert drawn.width > 810 and drawn.height >= 1080  # the photo plus a legend strip
    bad = run_fld("show", str(demo_corpus), "no-such-image.jpg", "--out", str(png), check=False)
    assert bad.returncode == 2 and "no image matching" in bad.stderr


def test_every_demo_image_has_kept_texts_at_three_granularities(demo_corpus):
    connection = connect(demo_corpus)
    missing = connection.execute(
        "SELECT i.uri, g.granularity FROM images i CROSS JOIN "
        "(SELECT unnest(['brief', 'detailed', 'more_detailed']) AS granularity) g "
        "WHERE NOT EXISTS (SELECT 1 FROM texts t WHERE t.image_id = i.image_id "
        "AND t.granularity = g.granularity AND t.kept)"
    ).fetchall()
    assert missing == []
    sign = connection.execute(
        "SELECT t.text FROM texts t JOIN images i USING (image_id) "
        "WHERE i.uri LIKE '%/sign.png' AND t.granularity = 'detailed'"
    ).fetchall()[0][0]
    assert "FRESH BREAD" in sign and "OPEN DAILY" in sign  # OCR text reaches the description
    bus_dense = connection.execute(
        "SELECT r.label FROM regions r JOIN images i USING (image_id) "
        "WHERE i.uri LIKE '%/bus.jpg' AND r.kind = 'dense' AND r.kept"
    ).fetchall()
    assert any(label.endswith("bus in the center") and "blue" in label for (label,) in bus_dense)


def test_text_statistics_rise_from_brief_to_more_detailed(demo_corpus):
    result = run_fld(
        "sql", str(demo_corpus),
        "SELECT granularity, avg(n_objects) AS objects, avg(n_attributes) AS attributes, "
        "avg(n_actions) AS actions FROM texts WHERE kept GROUP BY granularity",
        "--format", "csv",
    ).stdout  # fmt: skip
    rows = {
        line.split(",")[0]: [float(v) for v in line.split(",")[1:]]
        for line in result.splitlines()[1:]
    }
    brief, detailed, more = rows["brief"], rows["detailed"], rows["more_detailed"]
    for index in range(3):  # objects, attributes, actions: as in FLD-5B's Table 3
        assert brief[index] < detailed[index] < more[index], (index, brief, detailed, more)


def test_bus_phrases_are_grounded_to_bus_and_person_boxes_with_polygons(demo_corpus):
    from engine.masks import polygon_area

    connection = connect(demo_corpus)
    rows = connection.execute(
        "SELECT p.phrase, p.box, p.polygon, r.label FROM phrases p JOIN images i USING (image_id) "
        "JOIN regions r ON r.image_id = p.image_id AND r.kept AND r.kind = 'object' "
        "AND r.x0 = p.box.x0 AND r.y0 = p.box.y0 AND r.x1 = p.box.x1 AND r.y1 = p.box.y1 "
        "WHERE i.uri LIKE '%/bus.jpg' AND p.kept"
    ).fetchall()
    by_label: dict[str, set[str]] = {}
    for phrase, box, polygon, label in rows:
        by_label.setdefault(label, set()).add(phrase.lower())
        xs, ys = polygon[0::2], polygon[1::2]
        assert len(polygon) >= 6, phrase
        assert min(xs) >= box["x0"] - 1 and max(xs) <= box["x1"] + 1
        assert min(ys) >= box["y0"] - 1 and max(ys) <= box["y1"] + 1
        share = polygon_area(polygon) / ((box["x1"] - box["x0"]) * (box["y1"] - box["y0"]))
        assert 0.15 <= share <= 1.0, (phrase, share)
    assert any("bus" in phrase for phrase in by_label.get("bus", ())), by_label
    assert any("people" in phrase or "person" in phrase for phrase in by_label.get("person", ())), (
        by_label
    )
    people = connection.execute(
        "SELECT count(*) FROM phrases p JOIN images i USING (image_id) "
        "WHERE i.uri LIKE '%/bus.jpg' AND p.kept AND lower(p.phrase) = 'three people'"
    ).fetchall()[0][0]
    assert people >= 3  # a counted phrase grounds to several boxes


def test_phrase_questions_answered_in_sql(demo_corpus, tmp_path):
    dropped = run_fld(
        "sql", str(demo_corpus),
        "SELECT drop_reason, count(*) AS n FROM phrases WHERE NOT kept GROUP BY drop_reason ORDER BY n DESC",
        "--format", "csv",
    ).stdout.splitlines()  # fmt: skip
    reasons = {line.split(",")[0] for line in dropped[1:]}
    assert "blacklist" in reasons and reasons <= {
        "blacklist",
        "no_match",
        "low_score",
        "low_phrase_score",
    }
    per_phrase = run_fld(
        "sql", str(demo_corpus),
        "SELECT phrase_id, any_value(phrase) AS phrase, count(*) AS boxes FROM phrases WHERE kept "
        "GROUP BY phrase_id ORDER BY boxes DESC LIMIT 1",
        "--format", "csv",
    ).stdout.splitlines()  # fmt: skip
    assert int(per_phrase[1].split(",")[-1]) >= 2
    blacklisted = (
        connect(demo_corpus)
        .execute("SELECT DISTINCT lower(phrase) FROM phrases WHERE drop_reason = 'blacklist'")
        .fetchall()
    )
    assert all(box is None for (box,) in connect(demo_corpus).execute(
        "SELECT box FROM phrases WHERE drop_reason IN ('blacklist', 'no_match')").fetchall())  # fmt: skip
    assert ("the image",) in blacklisted or ("a photo",) in blacklisted
    png = tmp_path / "phrases.png"
    result = run_fld("show", str(demo_corpus), "bus.jpg", "--phrases", "--out", str(png))
    assert png.exists() and "phrases rows" in result.stdout
