"""The ``florence2`` export, read back by our decoder and by the transformers Florence-2
processor (built offline: its post-processor needs no hub files)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from conftest import run_fld
from export_helpers import demo_corpus, write_synthetic_corpus

from engine import florence2 as f2
from engine.query import connect
from pipelines.exports import export_corpus

# The post-processing config that transformers' own Florence-2 processor tests use.
POST_PROCESSOR_CONFIG = {
    "ocr": {"pattern": None, "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["it", "they", "them", "the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


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
def synthetic(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("f2synthetic")
    return write_synthetic_corpus(work / "corpus", work / "inputs")


@pytest.fixture(scope="module")
def processor():
    """A real ``Florence2Processor`` (CLIP image processor + byte-level BART tokenizer made
    here, as tests/hf_tiny.py makes them) with Florence-2's 1000 ``<loc_N>`` tokens added,
    as the hub tokenizer has them."""
    from hf_tiny import _byte_level_bpe
    from transformers import BartTokenizer, CLIPImageProcessor, Florence2Processor

    vocab, merges = _byte_level_bpe()
    tokenizer = BartTokenizer(
        vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"}
    )
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<sep>"])
    image_processor = CLIPImageProcessor(
        size={"height": 64, "width": 64},
        crop_size={"height": 64, "width": 64},
        do_center_crop=False,
        image_seq_length=5,
    )
    return Florence2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        post_processor_config=POST_PROCESSOR_CONFIG,
    )


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


def within_one_bin(decoded, original, width, height) -> bool:
    return all(
        abs(d - o) <= (width if i % 2 == 0 else height) / 1000 + 1e-6
        for i, (d, o) in enumerate(zip(decoded, original, strict=True))
    )


def box(row: dict) -> list[float]:
    return [row["x0"], row["y0"], row["x1"], row["y1"]]


def test_quantisation_is_the_transformers_processors(processor):
    import torch

    post = processor.post_processor
    rng = random.Random(0)
    for width, height in [(810, 1080), (640, 400), (1, 1), (4000, 37), (999, 1001)]:
        points = [[0.0, 0.0], [width, height], [width - 1e-3, height / 2]]
        points += [[rng.uniform(0, width), rng.uniform(0, height)] for _ in range(500)]
        theirs = post.quantize(torch.tensor(points, dtype=torch.float64), (width, height))
        ours = [f2.quantize_points(p, width, height) for p in points]
        assert theirs.tolist() == ours
        back = post.dequantize(theirs, (width, height)).tolist()
        # theirs truncates the bin centre to an int; ours keeps the float
        assert [
            [math.floor(v) for v in f2.dequantize_points(b, width, height)] for b in ours
        ] == back


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
    assert len(grounding) == grounded_texts  # none when the corpus has no phrases yet
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


def test_synthetic_corpus_every_task(synthetic, processor, tmp_path):
    summary = export_corpus(synthetic, "florence2", tmp_path / "kept")
    lines = [json.loads(line) for line in (tmp_path / "kept" / "florence2.jsonl").open()]
    assert summary["counts"]["images"] == 3
    # shard order, then image_id: the tar's "aaa..." image comes before "bbb..." in shard 0
    assert [line["image_id"][0] for line in lines if line["task"] == "<OD>"] == ["a", "b", "c"]
    per_image = {task: count // 3 for task, count in summary["counts"]["tasks"].items()}
    assert per_image == {
        "<CAPTION>": 1,  # the dropped brief caption is not exported
        "<DETAILED_CAPTION>": 1,
        "<MORE_DETAILED_CAPTION>": 1,
        "<OD>": 1,
        "<DENSE_REGION_CAPTION>": 1,
        "<REGION_PROPOSAL>": 1,
        "<OCR>": 1,
        "<OCR_WITH_REGION>": 1,
        "<CAPTION_TO_PHRASE_GROUNDING>": 1,  # not for the dropped text's phrase
        "<REFERRING_EXPRESSION_SEGMENTATION>": 1,  # "A dog" has a polygon
        "<REGION_TO_SEGMENTATION>": 1,  # the dog region has a polygon
    }
    line = {x["task"]: x for x in lines if x["image_id"][0] == "b"}
    width, height = line["<OD>"]["width"], line["<OD>"]["height"]
    size = (width, height)

    od = f2.decode_boxes(line["<OD>"]["target"], width, height)
    assert [label for label, _ in od] == ["dog", "cat", "cat"]  # the dropped "tv" is not there
    ocr = f2.decode_ocr(line["<OCR_WITH_REGION>"]["target"], width, height)
    assert [text for text, _ in ocr] == ["OPEN (24h)", "Café Bar"]  # "<", ">", newline cleaned
    # a line without a quad gets its box's corners, clockwise from top-left
    x0, y0, x1, y1 = 50 * width / 100, 70 * height / 100, 90 * width / 100, 85 * height / 100
    assert within_one_bin(ocr[1][1], [x0, y0, x1, y0, x1, y1, x0, y1], width, height)
    assert line["<OCR>"]["target"] == "OPEN (24h)\nCafé Bar"
    proposals = f2.decode_boxes(line["<REGION_PROPOSAL>"]["target"], width, height)
    assert len(proposals) == 4 and {label for label, _ in proposals} == {""}

    grounding = line["<CAPTION_TO_PHRASE_GROUNDING>"]
    assert grounding["input"] == "A dog and two cats near a sign"
    assert grounding["prompt"] == "<CAPTION_TO_PHRASE_GROUNDING>" + grounding["input"]
    assert processor._construct_prompts(grounding["prompt"]) == [
        "Locate the phrases in the caption: A dog and two cats near a sign"
    ]
    ours = f2.decode_labelled_boxes(grounding["target"], width, height)
    assert [(phrase, len(boxes)) for phrase, boxes in ours] == [("A dog", 1), ("two cats", 2)]
    theirs = processor.post_process_generation(
        text=grounding["target"], task="<CAPTION_TO_PHRASE_GROUNDING>", image_size=size
    )["<CAPTION_TO_PHRASE_GROUNDING>"]
    assert theirs["labels"] == ["A dog", "two cats", "two cats"]
    assert theirs["bboxes"] == [[math.floor(v) for v in b] for _, bs in ours for b in bs]

    dog = [5 * width / 100, 10 * height / 100, 30 * width / 100, 10 * height / 100,
           35 * width / 100, 50 * height / 100, 5 * width / 100, 55 * height / 100]  # fmt: skip
    for task in ("<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>"):
        (polygon,) = f2.decode_polygons(line[task]["target"], width, height)
        assert within_one_bin(polygon, dog, width, height)
        theirs = processor.post_process_generation(
            text=line[task]["target"], task=task, image_size=size
        )[task]
        assert theirs["polygons"] == [[[math.floor(v) for v in polygon]]]
    assert line["<REFERRING_EXPRESSION_SEGMENTATION>"]["input"] == "A dog"
    region_prompt = line["<REGION_TO_SEGMENTATION>"]["input"]
    assert len(f2.LOC_RE.findall(region_prompt)) == 4

    # --include-dropped: the dropped caption, the "tv" box and the dropped text's grounding
    summary = export_corpus(synthetic, "florence2", tmp_path / "all", include_dropped=True)
    tasks = summary["counts"]["tasks"]
    assert tasks["<CAPTION>"] == 6 and tasks["<CAPTION_TO_PHRASE_GROUNDING>"] == 6
    everything = [json.loads(x) for x in (tmp_path / "all" / "florence2.jsonl").open()]
    od_all = next(x for x in everything if x["task"] == "<OD>" and x["image_id"][0] == "b")
    assert "tv" in [label for label, _ in f2.decode_boxes(od_all["target"], width, height)]


def test_decoder_edges():
    assert f2.quantize(0, 640) == 0 and f2.quantize(640, 640) == 999 and f2.quantize(-3, 640) == 0
    assert f2.dequantize(999, 1000) == 999.5
    sequence = "<s>car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>x<loc_9></s>"
    assert f2.decode_labelled_boxes(sequence, 1000, 1000) == [
        ("car", [[1.5, 2.5, 3.5, 4.5], [5.5, 6.5, 7.5, 8.5]])
    ]  # the label with a lone token has no whole box
    assert f2.decode_polygons("<loc_0><loc_0><loc_9><sep><loc_1><loc_1>", 1000, 1000) == [
        [0.5, 0.5],
        [1.5, 1.5],
    ]
