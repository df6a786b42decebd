"""The ``coco`` export: ``instances.json`` and, when the iteration has texts,
``captions.json``, in the layout of COCO's annotation files (``pycocotools.coco.COCO``
loads both).

``instances.json``:

- ``images``: ``id`` (1, 2, ... in export order), ``file_name`` (the image's ``uri``:
  a path, or ``x.tar::member`` / ``x.parquet::row=N``), ``width``, ``height`` (of the
  decoded, EXIF-upright image), ``fld_image_id`` (the corpus's content hash).
- ``categories``: the object labels in alphabetical order (ids 1..N, supercategory
  ``object``), then ``text`` (supercategory ``ocr``) when the iteration has OCR lines.
  The same order as the ``yolo`` export's class names.
- ``annotations``: one per object region and per OCR line: ``bbox`` ``[x, y, w, h]`` in
  pixels, ``segmentation`` (the region's polygon when it has one, else an OCR line's quad,
  else the box as a polygon), ``area`` (of that polygon), ``iscrowd`` 0, ``score``;
  ``text`` on OCR annotations (the line read); ``fld_region_id``, ``source``; with
  ``include_dropped`` also ``kept`` and ``drop_reason``.

``captions.json``: the same ``images``; ``annotations``: ``id``, ``image_id``, ``caption``,
``granularity``, ``score``, ``fld_text_id``.

Dense region captions and class-agnostic proposals are not in the COCO files (their
boxes are the object regions'); the ``florence2`` export carries them.

Both files are written streaming: images go straight to the file, annotations to a
temporary beside it that is appended at the end, so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from engine.masks import polygon_area
from pipelines.exports.reader import CorpusReader

INSTANCES = "instances.json"
CAPTIONS = "captions.json"
TEXT_CATEGORY = "text"


def categories_of(reader: CorpusReader) -> list[dict]:
    """Object labels (alphabetical) and ``text`` for OCR: the categories of an export."""
    connection = reader.connect()
    condition = reader.kept_condition
    human_labels, human_ocr = reader.human_categories()
    labels = sorted(
        {
            row[0]
            for row in connection.execute(
                f"SELECT DISTINCT label FROM regions WHERE kind = 'object' AND {condition}"
            ).fetchall()
        }
        | human_labels
    )
    categories = [
        {"id": index + 1, "name": label, "supercategory": "object"}
        for index, label in enumerate(labels)
    ]
    has_ocr = connection.execute(
        f"SELECT count(*) FROM regions WHERE kind = 'ocr' AND {condition}"
    ).fetchall()[0][0]
    if has_ocr or human_ocr:
        categories.append(
            {"id": len(categories) + 1, "name": TEXT_CATEGORY, "supercategory": "ocr"}
        )
    return categories


def category_key(region: dict) -> tuple[str, str] | None:
    if region["kind"] == "object":
        return "object", region["label"]
    if region["kind"] == "ocr":
        return "ocr", TEXT_CATEGORY
    return None


def segmentation_of(region: dict) -> list[float]:
    polygon = region.get("polygon") or []
    if len(polygon) >= 6 and len(polygon) % 2 == 0:
        return [float(v) for v in polygon]
    quad = region.get("quad") or []
    if len(quad) == 8:
        return [float(v) for v in quad]
    x0, y0, x1, y1 = (float(region[k]) for k in ("x0", "y0", "x1", "y1"))
    return [x0, y0, x1, y0, x1, y1, x0, y1]


class JsonArrayWriter:
    """Objects appended one by one to a temporary file, as the items of a JSON array."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = path.open("w", encoding="utf-8")
        self.count = 0

    def add(self, item: dict) -> None:
        self.handle.write(("," if self.count else "") + json.dumps(item, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self.handle.close()


def assemble(path: Path, head: dict, arrays: dict[str, Path]) -> None:
    """Write ``head``'s keys, then each array from its temporary file, into ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(head, ensure_ascii=False)[:-1])
        for name, part in arrays.items():
            handle.write(f', "{name}": [')
            with part.open(encoding="utf-8") as source:
                shutil.copyfileobj(source, handle)
            handle.write("]")
        handle.write("}\n")
    os.replace(temporary, path)


def export_coco(reader: CorpusReader, out: Path) -> dict:
    categories = categories_of(reader)
    category_ids = {
        ("ocr" if c["supercategory"] == "ocr" else "object", c["name"]): c["id"] for c in categories
    }
    parts = {name: out / f".{name}.part" for name in ("images", "annotations", "captions")}
    images = JsonArrayWriter(parts["images"])
    annotations = JsonArrayWriter(parts["annotations"])
    captions = JsonArrayWriter(parts["captions"])
    per_category: Counter = Counter()
    try:
        for item in reader.images():
            image_id = images.count + 1
            image = item.image
            images.add(
                {
                    "id": image_id,
                    "file_name": image["uri"],
                    "width": image["width"],
                    "height": image["height"],
                    "fld_image_id": image["image_id"],
                }
            )
            for region in item.regions:
                key = category_key(region)
                if key is None:
                    continue
                x0, y0, x1, y1 = (float(region[k]) for k in ("x0", "y0", "x1", "y1"))
                segmentation = segmentation_of(region)
                annotation = {
                    "id": annotations.count + 1,
                    "image_id": image_id,
                    "category_id": category_ids[key],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": polygon_area(segmentation),
                    "iscrowd": 0,
                    "segmentation": [segmentation],
                    "score": float(region["score"]),
                    "fld_region_id": region["region_id"],
                    "source": region["source"],
                }
                if key[0] == "ocr":
                    annotation["text"] = region["label"]
                if reader.include_dropped:
                    annotation["kept"] = region["kept"]
                    annotation["drop_reason"] = region["drop_reason"]
                annotations.add(annotation)
                per_category[key[1]] += 1
            for text in item.texts:
                captions.add(
                    {
                        "id": captions.count + 1,
                        "image_id": image_id,
                        "caption": text["text"],
                        "granularity": text["granularity"],
                        "score": float(text["score"]),
                        "fld_text_id": text["text_id"],
                    }
                )
    finally:
        for writer in (images, annotations, captions):
            writer.close()
    info = {
        "description": f"fld-engine export of {reader.corpus.root.resolve()}",
        "iteration": reader.iteration,
        "include_dropped": reader.include_dropped,
    }
    assemble(
        out / INSTANCES,
        {"info": info, "licenses": [], "categories": categories},
        {"images": parts["images"], "annotations": parts["annotations"]},
    )
    if captions.count:
        assemble(
            out / CAPTIONS,
            {"info": info, "licenses": []},
            {"images": parts["images"], "annotations": parts["captions"]},
        )
    for part in parts.values():
        part.unlink(missing_ok=True)
    return {
        "images": images.count,
        "annotations": annotations.count,
        "captions": captions.count,
        "categories": len(categories),
        "annotations_per_category": dict(sorted(per_category.items())),
    }
