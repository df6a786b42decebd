"""Exports of a committed iteration into the formats trainers read (``fld export``).

=============  ==============================================================================
format         files written in ``--out``
=============  ==============================================================================
``florence2``  ``florence2.jsonl``: one line per (image, task[, input]) with the task token,
               the prompt to give ``Florence2Processor`` and the target sequence with
               ``<loc_N>`` tokens (``pipelines/exports/florence2.py``)
``coco``       ``instances.json`` (images, categories, annotations with boxes, polygons,
               scores and the OCR text) and ``captions.json`` (the texts, COCO captions
               layout) (``pipelines/exports/coco.py``)
``yolo``       ``data.yaml``, ``train.txt``, ``val.txt``, ``images/``, ``labels/``
               (``pipelines/exports/yolo.py``)
=============  ==============================================================================

Every export also writes ``export.json`` last: what was exported (corpus, iteration,
options) and counts. Only kept rows are exported unless ``include_dropped`` is set.
The corpus is streamed image by image (``pipelines/exports/reader.py``): memory does not
grow with the size of the corpus (``bench/export_memory.py`` measures it).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from engine.corpus import atomic_write_json
from engine.storage import location
from pipelines.exports.reader import CorpusReader

FORMATS = ("florence2", "coco", "yolo")
SUMMARY = "export.json"


class ExportError(Exception):
    """The export cannot be made as asked (output folder, options)."""


def prepare_out(out: Path, overwrite: bool) -> None:
    """``out`` must be new or empty; ``overwrite`` replaces an earlier export (a folder
    holding our ``export.json``), never any other folder."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out: {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out: {out} is not empty; choose a new folder (or --overwrite an earlier export)"
            )
        if not (out / SUMMARY).exists():
            raise ExportError(
                f"--out: {out} is not empty and holds no {SUMMARY}: it is not an earlier "
                "export, so --overwrite will not remove it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_corpus(
    corpus: str | Path,
    fmt: str,
    out: str | Path,
    iteration: int | None = None,
    include_dropped: bool = False,
    overwrite: bool = False,
    keep_duplicates: bool = False,
    human=None,
    **options,
) -> dict:
    """Export one committed iteration (default: the latest) of ``corpus`` as ``fmt`` into
    ``out``; returns the summary also written to ``out/export.json``. Images that are
    copies of another (not the representative of their duplicate group: ``engine.dedup``)
    are left out unless ``keep_duplicates``. ``human`` (``engine.reviews.HumanLabels``):
    people's boxes in place of the models' on reviewed images, hold-out images left out
    (``CorpusReader``): how a student's training export is made."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    val_fraction = options.get("val_fraction", 0.1)
    if fmt == "yolo" and not 0.0 <= val_fraction < 1.0:
        raise ExportError(f"--val-fraction: {val_fraction} is not in [0, 1)")
    reader = CorpusReader(corpus, iteration, include_dropped=include_dropped, keep_duplicates=keep_duplicates, human=human)  # fmt: skip
    out = Path(out)
    prepare_out(out, overwrite)
    started = time.perf_counter()
    if fmt == "florence2":
        from pipelines.exports.florence2 import export_florence2

        counts = export_florence2(reader, out, **options)
    elif fmt == "coco":
        from pipelines.exports.coco import export_coco

        counts = export_coco(reader, out, **options)
    else:
        from pipelines.exports.yolo import export_yolo

        counts = export_yolo(reader, out, **options)
    summary = {
        "format": fmt,
        "corpus": str(location(str(corpus)).resolve()),
        "iteration": reader.iteration,
        "include_dropped": include_dropped,
        "keep_duplicates": keep_duplicates,
        "duplicates_skipped": reader.skipped_duplicates,
        **(
            {"reviewed_images": reader.reviewed, "holdout_skipped": reader.skipped_holdout}
            if human is not None
            else {}
        ),
        "options": {key: value for key, value in options.items() if value is not None},
        "counts": counts,
        "files": sorted(
            str(path.relative_to(out)) for path in out.iterdir() if path.name != SUMMARY
        ),
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(out / SUMMARY, summary)
    return json.loads(json.dumps(summary))
