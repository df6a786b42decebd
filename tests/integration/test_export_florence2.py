"""The ``florence2`` export of a real run, read back by our decoder and by the transformers
Florence-2 processor (built offline: its post-processor needs no hub files). A
hand-written synthetic corpus is in ``tests/unit/test_export_florence2.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine import florence2 as f2
from engine.query import connect
from tests.fixtures.common import run_fld
from tests.fixtures.export_helpers import demo_corpus
from tests.fixtures.florence2 import florence2_processor, within_one_bin


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def demo_lines(demo, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("f2") / "export"
    result = run_fld("export", str(demo), "--format", "florence2", "--out", str(out))
    assert "exported iteration 0" in result.stdout
    summary = json.loads((out / "export.json").read_text())
    lines = [json.loads(line) for line in (out / "florence2.jsonl").open()]
    assert summary["counts"]["lines"] == len(lines) and summary["counts"]["images"] == 3
    return lines


@pytest.fixture(scope="module")
def processor():
    """A real ``Florence2Processor`` (see ``tests/fixtures/florence2.py``)."""
    return florence2_processor()


def kept_regions(corpus: Path) -> dict[str, dict[str, list[dict]]]:
    """Kept regions by image_id and kind, in the export's order (top to bottom)."""
    cursor = connect(corpus).execute(
        "SELECT * FROM regions WHERE kept ORDER BY image_id, kind, y0, x0, region_id"
    )
    names = [d[0] for d in cursor.description]
    found: dict[str, dict[str, list[dict]]] = {}
    for row in cursor.fetchall():
        item = dict(zip(names, row, strict=True))
        found.setdefault(item["image_id"], {}).setdefault(item["kind"], []).append(item)
    return found


def box(row: dict) -> list[float]:
    return [row["x0"], row["y0"], row["x1"], row["y1"]]


def test_every_exported_box_comes_back_within_one_bin(demo, demo_lines):
    regions = kept_regions(demo)
    tasks = {line["task"] for line in demo_lines}
    assert {"<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>",
            "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>"} <= tasks  # fmt: skip
    checked = {"object": 0, "dense": 0, "ocr": 0}
    for line in demo_lines:
        width, height, target = line["width"], line["height"], line["target"]
        mine = regions.get(line["image_id"], {})
        assert line["prompt"].startswith(line["task"])
        if line["task"] in ("<OD>", "<DENSE_REGION_CAPTION>"):
            kind = "object" if line["task"] == "<OD>" else "dense"
            decoded = f2.decode_boxes(target, width, height)
            assert [label for label, _ in decoded] == [
                f2.clean_label(r["label"]) for r in mine[kind]
            ]
            for (_, decoded_box), row in zip(decoded, mine[kind], strict=True):
                assert within_one_bin(decoded_box, box(row), width, height)
                checked[kind] += 1
        elif line["task"] == "<OCR_WITH_REGION>":
            decoded = f2.decode_ocr(target, width, height)
            assert [text for text, _ in decoded] == [
                f2.clean_label(r["label"]) for r in mine["ocr"]
            ]
            for (_, quad), row in zip(decoded, mine["ocr"], strict=True):
                assert within_one_bin(quad, row["quad"], width, height)
                checked["ocr"] += 1
        elif line["task"] == "<REGION_PROPOSAL>":
            decoded = [b for _, b in f2.decode_boxes(target, width, height)]
            for row in mine["object"]:
                assert any(within_one_bin(d, box(row), width, height) for d in decoded)
        elif line["task"] == "<OCR>":
            assert target.split("\n") == [f2.clean_label(r["label"]) for r in mine["ocr"]]
    # every kept object, dense and OCR box of the corpus was checked
    expected = {"object": 0, "dense": 0, "ocr": 0}
    for by_kind in regions.values():
        for kind, rows in by_kind.items():
            expected[kind] += len(rows)
    assert checked == expected and checked["object"] > 0 and checked["ocr"] > 0


def test_grounding_and_polygons_of_the_demo_come_back(demo, demo_lines):
    connection = connect(demo)
    grounded_texts = connection.execute(
        "SELECT count(DISTINCT p.text_id) FROM phrases p JOIN texts t USING (text_id) "
        "WHERE p.kept AND p.box IS NOT NULL AND t.kept"
    ).fetchall()[0][0]
    grounding = [line for line in demo_lines if line["task"] == "<CAPTION_TO_PHRASE_GROUNDING>"]
    # The default ensemble grounds phrases of every caption: 0 == 0 would check nothing.
    assert grounded_texts > 0 and len(grounding) == grounded_texts
    boxes = connection.execute(
        "SELECT text_id, phrase_id, box FROM phrases WHERE kept AND box IS NOT NULL "
        "ORDER BY text_id, char_start, phrase_id, triplet_id"
    ).fetchall()
    for line in grounding:
        expected = [b for t, _, b in boxes if t == line["text_id"]]
        decoded = [b for _, b in f2.decode_boxes(line["target"], line["width"], line["height"])]
        assert len(decoded) == len(expected) > 0
        for got, want in zip(decoded, expected, strict=True):
            assert within_one_bin(got, [want[k] for k in ("x0", "y0", "x1", "y1")],
                                  line["width"], line["height"])  # fmt: skip
    polygons = connection.execute(
        "SELECT count(*) FROM regions WHERE kept AND kind = 'object' AND len(polygon) >= 6"
    ).fetchall()[0][0]
    assert polygons > 0  # the default ensemble segments its kept objects
    assert sum(line["task"] == "<REGION_TO_SEGMENTATION>" for line in demo_lines) == polygons


def test_transformers_post_processing_parses_our_sequences(demo_lines, processor):
    """Boxes and quads as the processor parses them, from the text and from the token ids
    of our targets, equal our decoder's (theirs are truncated to ints)."""
    seen = set()
    for line in demo_lines:
        task, size = line["task"], (line["width"], line["height"])
        if task not in ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<OCR_WITH_REGION>"):
            continue
        seen.add(task)
        token_ids = processor.tokenizer(line["target"], add_special_tokens=False)["input_ids"]
        from_ids = processor.post_process_generation(sequence=token_ids, task=task, image_size=size)
        parsed = processor.post_process_generation(text=line["target"], task=task, image_size=size)
        answer = parsed[task]
        # The processor decodes token by token: a character that our tiny byte-level
        # tokenizer splits over several tokens ("é") comes back mangled; boxes do not.
        for key, value in from_ids[task].items():
            if key == "labels":
                assert [x for x in value if x.isascii()] == [x for x in answer[key] if x.isascii()]
            else:
                assert value == answer[key]
        if task == "<OCR_WITH_REGION>":
            ours = f2.decode_ocr(line["target"], *size)
            assert answer["labels"] == [text for text, _ in ours]
            assert answer["quad_boxes"] == [[math.floor(v) for v in q] for _, q in ours]
        else:
            ours = f2.decode_boxes(line["target"], *size)
            assert answer["bboxes"] == [[math.floor(v) for v in b] for _, b in ours]
            if task == "<OD>":
                assert answer["labels"] == [label for label, _ in ours]
    assert seen == {"<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<OCR_WITH_REGION>"}
