"""People in the loop: what was sent for review, what reviewers decided, and the human
labels the refinement loop treats as ground truth. No HTTP here (``engine.label_studio``)
and no command (``pipelines.review``): the data side, testable without a server.

Layout (beside the iterations; ``docs/corpus.md``)::

    corpus/reviews/projects/<key>.json   one per review project: server, project id, the
                                         iteration shown, and per sent image its URI, size,
                                         hold-out flag and the regions sent (id, kind, label,
                                         box), which is what a verdict is judged against
    corpus/reviews/reviews.parquet       the ``reviews`` table (``engine.schemas.REVIEWS``),
                                         rewritten whole by each ``fld import-reviews``
    corpus/models/iteration=K/reviews.parquet
                                         the reviews as iteration K started: what its human
                                         labels, its student and its judgement used

Verdicts, per sent region (``region_judgements``): the reviewer's annotation keeps the
region's id (Label Studio copies a prediction's result ids into the annotation made from
it) with the same label (and text) and a box within ``SAME_BOX_PX`` pixels: ``accepted``;
with another label, text or box: ``corrected``; without it: ``rejected``. A region with an
id that was not sent: ``added``. Coordinates: Label Studio gives ``x, y, width, height`` in
percent of the image and a ``rotation`` in degrees (clockwise, about the top-left corner);
stored in pixels of the decoded image as the ``regions`` table's, a rotated box as the
axis-aligned box around it.

Hold-out: of the images one ``fld review`` sends, ``round(n * holdout)`` (those first in
SHA-256 order of their ``image_id``: deterministic, and independent of the selection order)
are kept out of everything the refinement loop learns from or writes; their labels only
judge iterations (``pipelines.review.evaluate_on_reviews``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.schemas import REVIEWS

HUMAN_PREFIX = "human@"  # every version of people's source
HUMAN_SOURCE = f"{HUMAN_PREFIX}1"
OCR_LABEL = "text"  # the Label Studio class of an OCR line; its text is in a TextArea
REVIEW_KINDS = ("object", "ocr")
SAME_BOX_PX = 1.0
VERDICTS = ("accepted", "corrected", "rejected", "added")


def reviews_dir(corpus):
    return corpus.root / "reviews"


def reviews_path(corpus):
    return reviews_dir(corpus) / "reviews.parquet"


def project_key(server: str, project_id: int) -> str:
    """How a review project is named in the ``reviews`` table: its URL."""
    return f"{server.rstrip('/')}/projects/{int(project_id)}"


def project_record_path(corpus, key: str):
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return reviews_dir(corpus) / "projects" / f"{digest}.json"


def holdout_ids(image_ids: list[str], fraction: float) -> set[str]:
    """The hold-out share of one batch of sent images (see the module docstring)."""
    ordered = sorted(image_ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return set(ordered[: round(len(ordered) * fraction)])


def read_project_records(corpus) -> list[dict]:
    """Every review project this corpus sent, oldest first."""
    folder = reviews_dir(corpus) / "projects"
    if not folder.is_dir():
        return []
    records = [json.loads(path.read_bytes()) for path in folder.iterdir() if path.name.endswith(".json") and not path.name.startswith(".")]  # fmt: skip
    return sorted(records, key=lambda r: (r["created_at"], r["key"]))


def sent_image_ids(corpus) -> set[str]:
    return {image_id for record in read_project_records(corpus) for image_id in record["tasks"]}


def read_reviews(path) -> pa.Table:
    """The reviews table at ``path`` (empty, with its schema, when there is none)."""
    if not path.exists():
        return REVIEWS.empty_table()
    table = pq.read_table(io.BytesIO(path.read_bytes()))
    return table.select(REVIEWS.names).cast(REVIEWS)


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def percent_box(value: dict, width: int, height: int) -> tuple[float, float, float, float]:
    """A Label Studio rectangle (percent of the image, rotation about its top-left corner)
    as the axis-aligned pixel box around it, clipped to the image."""
    x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
    w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
    angle = math.radians(float(value.get("rotation") or 0.0))
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]  # fmt: skip
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys)))  # fmt: skip


def box_percent(box: list[float], width: int, height: int) -> dict:
    """A pixel box as Label Studio's rectangle value (percent of the image)."""
    x0, y0, x1, y1 = box
    return {
        "x": 100 * x0 / width,
        "y": 100 * y0 / height,
        "width": 100 * (x1 - x0) / width,
        "height": 100 * (y1 - y0) / height,
        "rotation": 0,
    }


def annotation_regions(annotation: dict, width: int, height: int) -> dict[str, dict]:
    """An annotation's regions by result id: ``label``, ``box`` (pixels), ``text`` (the
    TextArea of the same id, for OCR lines). Items of other types are ignored."""
    regions: dict[str, dict] = {}
    for item in annotation.get("result") or []:
        value = item.get("value") or {}
        entry = regions.setdefault(str(item.get("id")), {})
        if item.get("type") == "rectanglelabels" and value.get("rectanglelabels"):
            entry["label"] = str(value["rectanglelabels"][0])
            entry["box"] = percent_box(value, width, height)
        elif item.get("type") == "textarea":
            entry["text"] = " ".join(str(t) for t in value.get("text") or [])
            if "box" not in entry and "width" in value:
                entry["box"] = percent_box(value, width, height)
    return {key: entry for key, entry in regions.items() if "box" in entry and "label" in entry}


def reviewer_of(annotation: dict) -> str:
    """Who made an annotation: the e-mail in Label Studio's ``created_username`` (" first
    last email, id") when there is one, else ``completed_by`` (a user id, or a user object
    with an e-mail)."""
    name = str(annotation.get("created_username") or "")
    email = re.search(r"[^\s,]+@[^\s,]+", name)
    if email:
        return email.group(0)
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    return str(who)


@dataclass
class TaskContext:
    """What a verdict is judged against: the project, and the sent task's record."""

    project: str
    task_id: int
    image_id: str
    sent: dict  # the project record's entry: uri, width, height, holdout, iteration, regions


def region_judgements(context: TaskContext, annotation: dict) -> list[dict]:
    """The ``reviews`` rows of one annotation of one task (see the module docstring)."""
    sent = context.sent
    width, height = int(sent["width"]), int(sent["height"])
    drawn = annotation_regions(annotation, width, height)
    common = {
        "image_id": context.image_id,
        "iteration": int(sent["iteration"]),
        "project": context.project,
        "task_id": int(context.task_id),
        "annotation_id": int(annotation["id"]),
        "reviewer": reviewer_of(annotation),
        "reviewed_at": str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        "holdout": bool(sent["holdout"]),
        "source": HUMAN_SOURCE,
    }
    rows = []
    for region_id, region in sorted(sent["regions"].items()):
        mine = drawn.get(region_id)
        if mine is None:
            verdict, kind, label, box = "rejected", region["kind"], region["label"], region["box"]
        else:
            kind, label = human_kind_and_label(mine, region)
            box = mine["box"]
            same = (
                kind == region["kind"]
                and label == region["label"]
                and max(abs(a - b) for a, b in zip(box, region["box"], strict=True)) <= SAME_BOX_PX
            )
            verdict = "accepted" if same else "corrected"
        rows.append(review_row(common, verdict, region_id, kind, label, box))
    for result_id, mine in sorted(drawn.items()):
        if result_id not in sent["regions"]:
            kind, label = human_kind_and_label(mine, None)
            rows.append(review_row(common, "added", None, kind, label, mine["box"]))
    return rows


def human_kind_and_label(drawn: dict, sent: dict | None) -> tuple[str, str]:
    """An OCR line is a box of class ``text``; its label is its transcription (the sent
    one when the reviewer left the text box empty). Any other class is an object label,
    kept as written even when no model knows it."""
    if drawn["label"] == OCR_LABEL:
        text = (drawn.get("text") or "").strip()
        if not text and sent is not None and sent["kind"] == "ocr":
            text = sent["label"]
        return "ocr", text
    return "object", drawn["label"]


def review_row(common: dict, verdict: str, region_id, kind: str, label: str, box) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    key = (
        region_id if region_id is not None else f"added:{x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f}:{label}"
    )
    return {
        **common,
        "review_id": f"{common['project']}:{common['task_id']}:{key}",
        "verdict": verdict,
        "region_id": region_id,
        "kind": kind,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "label": label,
    }


def merge_reviews(
    existing: pa.Table, project: str, rows_by_task: dict[int, list[dict]]
) -> pa.Table:
    """``existing`` with every row of the re-imported tasks of ``project`` replaced by
    ``rows_by_task`` (idempotent: importing the same annotations again gives the same
    table), sorted by ``review_id``."""
    kept = [
        row for row in existing.to_pylist()
        if not (row["project"] == project and row["task_id"] in rows_by_task)
    ]  # fmt: skip
    rows = kept + [row for task_rows in rows_by_task.values() for row in task_rows]
    rows.sort(key=lambda r: r["review_id"])
    return pa.Table.from_pylist(rows, schema=REVIEWS)


@dataclass
class HumanLabels:
    """The reviews as the refinement loop uses them: per reviewed image, the boxes people
    accepted, corrected or added (``kind``, ``label``, box); which images are hold-out."""

    boxes: dict[str, list[tuple[str, str, tuple]]] = field(default_factory=dict)
    holdout: set[str] = field(default_factory=set)

    @property
    def trained(self) -> set[str]:
        """Reviewed images whose labels the loop learns from and writes."""
        return set(self.boxes) - self.holdout

    @classmethod
    def from_table(cls, table: pa.Table) -> HumanLabels:
        labels = cls()
        for row in table.to_pylist():
            labels.boxes.setdefault(row["image_id"], [])
            if row["holdout"]:
                labels.holdout.add(row["image_id"])
            if row["verdict"] != "rejected":
                box = (row["x0"], row["y0"], row["x1"], row["y1"])
                labels.boxes[row["image_id"]].append((row["kind"], row["label"], box))
        return labels

    @classmethod
    def read(cls, path: Path) -> HumanLabels:
        return cls.from_table(read_reviews(path))
