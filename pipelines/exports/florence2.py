"""The ``florence2`` export: ``florence2.jsonl``, one JSON object per line:

```
{"image": URI, "image_id": ..., "width": W, "height": H,
 "task": "<OD>", "prompt": "<OD>", "target": "bus<loc_2><loc_197><loc_996><loc_740>person..."}
```

- ``task``: a Florence-2 task token; ``prompt``: the string to pass as
  ``Florence2Processor(text=prompt, images=...)``: the task token, followed by the task's
  input for the tasks that take one (the processor turns ``<CAPTION_TO_PHRASE_GROUNDING>a
  bus`` into "Locate the phrases in the caption: a bus"); ``input``: that input alone
  (only on those tasks); ``target``: the sequence the model should generate;
  ``text_id`` on grounding lines: the text whose phrases they are.
- ``image``: the image's ``uri`` in the corpus (a path, or ``x.tar::member`` /
  ``x.parquet::row=N``, readable with ``engine.sources.ByteReader``); ``width``,
  ``height``: of the decoded, EXIF-upright image, the size the coordinates refer to.
- Coordinates: ``<loc_N>`` tokens, 1000 bins per axis, quantised as the transformers
  Florence-2 processor does (``engine/florence2.py``).

Lines per image, for what the image has (kept rows unless ``include_dropped``):

====================================== ======================= ==============================
task                                   one line per            target
====================================== ======================= ==============================
``<CAPTION>``, ``<DETAILED_CAPTION>``,  text (brief, detailed,  the text
``<MORE_DETAILED_CAPTION>``             more_detailed)
``<OD>``                               image                   ``label<box>`` per object
                                                               region, top to bottom
``<DENSE_REGION_CAPTION>``             image                   ``caption<box>`` per dense region
``<REGION_PROPOSAL>``                  image                   ``<box>`` per distinct box of the
                                                               object and proposal regions
``<OCR>``                              image                   OCR lines, top to bottom, joined
                                                               by newlines
``<OCR_WITH_REGION>``                  image                   ``line<quad: 8 tokens>`` per line
``<CAPTION_TO_PHRASE_GROUNDING>``      text with phrases        ``phrase<box>...`` per phrase
                                                               (input: the text)
``<REFERRING_EXPRESSION_SEGMENTATION>`` phrase with polygons    its boxes' polygons, ``<sep>``
                                                               between them (input: phrase)
``<REGION_TO_SEGMENTATION>``           object region with a    its polygon (input: its box
                                       polygon                 as 4 tokens)
====================================== ======================= ==============================
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from engine import florence2 as f2
from pipelines.exports.reader import CorpusReader, ImageAnnotations

FILE = "florence2.jsonl"
TEXT_TASKS = {
    "brief": "<CAPTION>",
    "detailed": "<DETAILED_CAPTION>",
    "more_detailed": "<MORE_DETAILED_CAPTION>",
}


def box_of(row: dict) -> list[float]:
    return [row["x0"], row["y0"], row["x1"], row["y1"]]


def quad_of(row: dict) -> list[float]:
    """The OCR quad, or the box's corners clockwise from top-left where there is none."""
    if row.get("quad") and len(row["quad"]) == 8:
        return list(row["quad"])
    x0, y0, x1, y1 = box_of(row)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def has_polygon(polygon) -> bool:
    return bool(polygon) and len(polygon) >= 6 and len(polygon) % 2 == 0


def image_lines(item: ImageAnnotations) -> list[dict]:
    """Every (task, prompt, target) of one image."""
    image = item.image
    width, height = image["width"], image["height"]
    lines: list[dict] = []

    def add(task: str, target: str, task_input: str | None = None, **extra) -> None:
        line = {
            "image": image["uri"],
            "image_id": image["image_id"],
            "width": width,
            "height": height,
            "task": task,
            "prompt": task if task_input is None else task + task_input,
            "target": target,
        }
        if task_input is not None:
            line["input"] = task_input
        line.update(extra)
        lines.append(line)

    for text in item.texts:
        task = TEXT_TASKS.get(text["granularity"])
        target = f2.clean_label(text["text"])  # a caption saying "<loc_5>" makes no token
        if task and target:
            add(task, target)

    by_kind: dict[str, list[dict]] = {}
    for region in item.regions:
        by_kind.setdefault(region["kind"], []).append(region)
    objects = [r for r in by_kind.get("object", []) if f2.clean_label(r["label"])]
    if objects:
        add(
            "<OD>",
            f2.encode_labelled_boxes(((r["label"], [box_of(r)]) for r in objects), width, height),
        )
    dense = [r for r in by_kind.get("dense", []) if f2.clean_label(r["label"])]
    if dense:
        add(
            "<DENSE_REGION_CAPTION>",
            f2.encode_labelled_boxes(((r["label"], [box_of(r)]) for r in dense), width, height),
        )
    proposals, seen = [], set()
    for region in objects + by_kind.get("proposal", []):
        token = f2.encode_box(box_of(region), width, height)
        if token not in seen:
            seen.add(token)
            proposals.append(token)
    if proposals:
        add("<REGION_PROPOSAL>", "".join(proposals))
    ocr = [r for r in by_kind.get("ocr", []) if f2.clean_label(r["label"])]
    if ocr:
        add("<OCR>", "\n".join(f2.clean_label(r["label"]) for r in ocr))
        add(
            "<OCR_WITH_REGION>",
            f2.encode_ocr(((r["label"], quad_of(r)) for r in ocr), width, height),
        )

    texts = {text["text_id"]: text["text"] for text in item.texts}
    phrases_of: dict[str, dict[str, list[dict]]] = {}
    for row in item.phrases:
        if row["text_id"] in texts and f2.clean_label(row["phrase"]):
            phrases_of.setdefault(row["text_id"], {}).setdefault(row["phrase_id"], []).append(row)
    for text_id, phrases in phrases_of.items():
        add(
            "<CAPTION_TO_PHRASE_GROUNDING>",
            f2.encode_labelled_boxes(
                ((rows[0]["phrase"], [box_of(r) for r in rows]) for rows in phrases.values()),
                width,
                height,
            ),
            task_input=f2.clean_label(texts[text_id]),
            text_id=text_id,
        )
        for rows in phrases.values():
            polygons = [r["polygon"] for r in rows if has_polygon(r["polygon"])]
            if polygons:
                add(
                    "<REFERRING_EXPRESSION_SEGMENTATION>",
                    f2.POLYGON_SEP.join(f2.encode_polygon(p, width, height) for p in polygons),
                    task_input=f2.clean_label(rows[0]["phrase"]),
                )
    for region in objects:
        if has_polygon(region["polygon"]):
            add(
                "<REGION_TO_SEGMENTATION>",
                f2.encode_polygon(region["polygon"], width, height),
                task_input=f2.encode_box(box_of(region), width, height),
            )
    return lines


def export_florence2(reader: CorpusReader, out: Path) -> dict:
    path = out / FILE
    temporary = path.with_name(f".{path.name}.tmp")
    tasks: Counter = Counter()
    n_images = 0
    with temporary.open("w", encoding="utf-8") as handle:
        for item in reader.images():
            n_images += 1
            for line in image_lines(item):
                tasks[line["task"]] += 1
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(temporary, path)
    return {"images": n_images, "lines": sum(tasks.values()), "tasks": dict(sorted(tasks.items()))}
