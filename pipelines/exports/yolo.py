"""The ``yolo`` export: the layout ultralytics trains on.

```
OUT/data.yaml        path: OUT, train: train.txt, val: val.txt, names: {0: label, ...}
OUT/train.txt        image paths (relative to OUT), one a line
OUT/val.txt
OUT/images/NAME.ext  the image (a symlink to the file, or a copy; extracted for tar and
                     Parquet members; re-encoded as PNG where ultralytics cannot read the
                     format)
OUT/labels/NAME.txt  one line per box: "class cx cy w h", normalised to 0..1
```

- Classes: the object labels in alphabetical order, then ``text`` for OCR lines when the
  iteration has any (the ``coco`` export's categories, minus one).
- ``NAME`` is the file's stem and the first 12 digits of its ``image_id``
  (``bus-c02019c4979c.jpg``): readable and unique.
- Split: an image goes to ``val`` when its ``image_id`` (a content hash, so a stable, random
  draw) falls in the first ``val_fraction`` of the hash range; when no image does (tiny
  corpora), ``val.txt`` lists the training images, so that ultralytics can validate.
- Boxes are normalised by the decoded, EXIF-upright size; ultralytics reads images upright
  too (OpenCV applies the EXIF orientation).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import yaml

from engine.http import is_url
from engine.sources import TAR_SEP, ByteReader
from engine.storage import is_remote
from pipelines.exports.coco import categories_of
from pipelines.exports.reader import CorpusReader

# What ultralytics reads (ultralytics.data.utils.IMG_FORMATS, common subset).
READABLE = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".mpo"}
FORMAT_EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")
    return stem[:60] or "image"


def in_val(image_id: str, val_fraction: float) -> bool:
    return int(image_id[:8], 16) < val_fraction * 16**8


class ImageMaterialiser:
    """Puts an image under ``images/`` as a file ultralytics can open."""

    def __init__(self, folder: Path, copy_images: bool, check_uri=None):
        """``check_uri(uri)`` raises ``PermissionError`` for a URI the corpus's input never
        held (``Corpus.check_input_uri``): such an image is neither copied nor linked."""
        self.folder = folder
        self.copy_images = copy_images
        self.check_uri = check_uri or (lambda uri: None)
        self.reader = ByteReader()

    def place(self, image: dict) -> Path | None:
        """The image's file under ``images/``; None when it is there already (the same
        image in two shards of the corpus: exported once)."""
        uri = image["uri"]
        self.check_uri(uri)
        container, _, member = uri.rpartition(TAR_SEP)
        name = f"{Path(container).stem}_{member}" if container.endswith(".parquet") else member
        stem = f"{safe_stem(name)}-{image['image_id'][:12]}"
        suffix = Path(member).suffix.lower()
        if suffix not in READABLE:
            suffix = FORMAT_EXTENSION.get(image.get("format") or "", "")
        # An empty suffix: a format ultralytics does not read (GIF, PPM, ...), re-encoded.
        target = self.folder / f"{stem}{suffix or '.png'}"
        if os.path.lexists(target):
            return None
        local_file = TAR_SEP not in uri and not is_remote(uri) and not is_url(uri)
        if local_file and suffix == Path(uri).suffix.lower():
            if self.copy_images:
                shutil.copyfile(uri, target)
            else:
                os.symlink(os.path.abspath(uri), target)
            return target
        data = self.reader.read(uri)
        if suffix:
            target.write_bytes(data)
            return target
        from PIL import Image

        from engine.imaging import decode_image

        Image.fromarray(decode_image(data).pixels).save(target)
        return target

    def close(self) -> None:
        self.reader.close()


def label_line(class_id: int, region: dict, width: int, height: int) -> str | None:
    x0 = min(max(float(region["x0"]), 0.0), width)
    x1 = min(max(float(region["x1"]), 0.0), width)
    y0 = min(max(float(region["y0"]), 0.0), height)
    y1 = min(max(float(region["y1"]), 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    w, h = (x1 - x0) / width, (y1 - y0) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def export_yolo(
    reader: CorpusReader,
    out: Path,
    val_fraction: float = 0.1,
    copy_images: bool = False,
    include_ocr: bool = True,
) -> dict:
    categories = categories_of(reader)
    class_of = {
        ("ocr" if c["supercategory"] == "ocr" else "object", c["name"]): c["id"] - 1
        for c in categories
    }
    images_dir, labels_dir = out / "images", out / "labels"
    images_dir.mkdir()
    labels_dir.mkdir()
    materialiser = ImageMaterialiser(
        images_dir, copy_images, lambda uri: reader.corpus.check_input_uri(uri, reader.iteration)
    )
    split_files = {split: (out / f"{split}.txt").open("w") for split in ("train", "val")}
    counts: Counter = Counter()
    per_class: Counter = Counter()
    try:
        for item in reader.images():
            image = item.image
            try:
                path = materialiser.place(image)
            except PermissionError as exc:
                print(f"export: skipped {exc}", file=sys.stderr)
                counts["outside_input"] += 1
                continue
            if path is None:
                counts["duplicates"] += 1
                continue
            lines = []
            for region in item.regions:
                kind = region["kind"]
                key = ("object", region["label"]) if kind == "object" else ("ocr", "text")
                if kind not in ("object", "ocr") or key not in class_of:
                    continue
                if kind == "ocr" and not include_ocr:
                    continue
                line = label_line(class_of[key], region, image["width"], image["height"])
                if line:
                    lines.append(line)
                    per_class[key[1]] += 1
            (labels_dir / f"{path.stem}.txt").write_text("".join(f"{x}\n" for x in lines))
            split = "val" if in_val(reader.split_key(image["image_id"]), val_fraction) else "train"
            split_files[split].write(f"./images/{path.name}\n")
            counts[split] += 1
            counts["boxes"] += len(lines)
    finally:
        for handle in split_files.values():
            handle.close()
        materialiser.close()
    if counts["val"] == 0:
        shutil.copyfile(out / "train.txt", out / "val.txt")
    data = {
        "path": str(out.resolve()),
        "train": "train.txt",
        "val": "val.txt",
        "names": {c["id"] - 1: c["name"] for c in categories},
    }
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return {
        "images": counts["train"] + counts["val"],
        "train": counts["train"],
        "val": counts["val"],
        "val_is_train": counts["val"] == 0,
        "duplicates_skipped": counts["duplicates"],
        "boxes": counts["boxes"],
        "classes": len(categories),
        "boxes_per_class": dict(sorted(per_class.items())),
    }
