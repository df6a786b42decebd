"""People in the loop: ``fld review``, ``fld import-reviews``, ``fld eval --reviews``, and
how reviews judge refinement iterations. The data side is ``engine.reviews``; the HTTP
side ``engine.label_studio``.

**Choosing images** (``choose_images``): from the iteration shown (the corpus's default),
images no earlier review was sent, copies of another image left out. ``uncertain`` (the
default) ranks them by where the ensemble is least sure, one point per

- kept object region with a single source (``n_sources = 1``: no other model saw it);
- object or OCR region whose score is within ``NEAR`` of the confidence threshold it
  faced (the iteration's own ``filters.confidence``: per source, per kind, default),
  kept or dropped as ``low_score``;
- text the complexity filter dropped (``excessive_objects``, ``low_complexity``);
- two object rows of different sources and labels on one spot (IoU >= 0.5): the sources
  disagree (two points);

ties by ``image_id``. ``random`` is a seeded random sample (an unbiased audit).

**Sending** (``send_for_review``): a Label Studio project (``label_config``: boxes with
the COCO class names, the labels the iteration kept, and ``text`` for OCR lines whose
transcription is a per-region text box), one task per image with the iteration's kept
object and OCR regions as a prediction (``model_version = "iteration=K"``; each result's
``id`` is the region's ``region_id``). The image reaches the browser as ``--images``
says: ``url`` (an http(s) input as it is), ``presign`` (an ``s3://`` input: a presigned
URL valid ``PRESIGN_S``), ``local-files`` (a local input under ``--document-root``, the
server's ``LOCAL_FILES_DOCUMENT_ROOT``: Label Studio serves it), or ``inline`` (the
decoded, EXIF-upright pixels as a JPEG data URI: works with any input, tar members too,
and is what ``auto`` falls back to). The project's record
(``reviews/projects/*.json``) is written only once the tasks are on the server.

**Importing** (``import_reviews``): every project this corpus sent to the server; each
task's latest annotation that is not a skip becomes its ``reviews`` rows
(``engine.reviews.region_judgements``). Re-importing replaces a task's rows (an edited
task updates, nothing doubles). A task whose image is not in the corpus any more is
skipped with a warning.

**Judging** (``judge_iteration``): ``fld refine`` evaluates each new iteration, and its
parent, on the reviewed hold-out images (people's boxes as ground truth; the measures of
``pipelines.evaluate``), before it commits, into ``run.json``'s ``review_eval``. An
iteration whose mAP50 there is below its parent's is committed with ``default: false``:
``Corpus.default_iteration`` passes over it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from engine.corpus import RUN, Corpus, CorpusError, atomic_write_bytes, atomic_write_json
from engine.label_studio import LabelStudioClient, LabelStudioError
from engine.reviews import (
    HUMAN_PREFIX,
    OCR_LABEL,
    HumanLabels,
    TaskContext,
    box_percent,
    holdout_ids,
    merge_reviews,
    project_key,
    project_record_path,
    read_project_records,
    read_reviews,
    region_judgements,
    reviews_path,
    sent_image_ids,
    table_bytes,
)

NEAR = 0.1  # a score this close to its threshold counts as unsure
PRESIGN_S = 7 * 24 * 3600
IMAGE_MODES = ("auto", "url", "presign", "local-files", "inline")
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip


class ReviewError(CorpusError):
    """A review cannot be sent or imported as asked (the command exits 2)."""


# --------------------------------------------------------------------------- choosing


@dataclass
class ReviewOptions:
    """What ``fld review`` was asked: ``limit`` images, chosen by ``sample`` (``uncertain``
    or ``random``, with ``seed``), shown from ``iteration`` (None: the default one),
    ``holdout`` share kept out of training, images reaching the browser by ``images``
    (``IMAGE_MODES``), ``document_root`` for ``local-files``, ``project`` to add to (None:
    a new one)."""

    limit: int = 20
    sample: str = "uncertain"
    seed: int = 0
    iteration: int | None = None
    holdout: float = 0.5
    images: str = "auto"
    document_root: str | None = None
    project: int | None = None
    title: str | None = None


def threshold_sql(confidence: dict) -> str:
    """The confidence threshold each region faced, as a SQL expression over ``kind`` and
    ``source`` (``filters.confidence``: the source's, by name@version, name or prefix;
    else its kind's; else the default)."""
    from engine.query import sql_literal

    cases = []
    for key, value in sorted((confidence.get("per_source") or {}).items(), key=lambda kv: -len(kv[0])):  # fmt: skip
        test = f"source = {sql_literal(key)}" if "@" in key else f"source LIKE {sql_literal(key + '%')}"  # fmt: skip
        cases.append(f"WHEN {test} THEN {float(value)}")
    for kind, value in sorted((confidence.get("per_kind") or {}).items()):
        cases.append(f"WHEN kind = {sql_literal(kind)} THEN {float(value)}")
    default = float(confidence.get("default", 0.3))
    return f"CASE {' '.join(cases)} ELSE {default} END" if cases else str(default)


def choose_images(corpus: Corpus, iteration: int, options: ReviewOptions) -> list[dict]:
    """The images to send, best first: ``image_id``, ``uri``, ``width``, ``height``,
    ``uncertainty`` and its parts (see the module docstring)."""
    from engine.query import connect, sql_literal

    confidence = (corpus.run_info(iteration).get("config") or {}).get("filters", {}).get("confidence", {})  # fmt: skip
    threshold = threshold_sql(confidence)
    connection = connect(corpus.root, [iteration], duplicates="skip")
    try:
        import pyarrow as pa

        sent = sorted(sent_image_ids(corpus))
        connection.register("_sent", pa.table({"image_id": pa.array(sent, pa.string())}))
        rows = connection.execute(
            f"""
            WITH single AS (
                SELECT image_id, count(*) AS n FROM regions
                WHERE kept AND kind = 'object' AND n_sources = 1 AND NOT starts_with(source, {sql_literal(HUMAN_PREFIX)})
                GROUP BY image_id),
            near AS (
                SELECT image_id, count(*) AS n FROM regions
                WHERE kind IN ('object', 'ocr') AND source <> 'fused'
                  AND (kept OR drop_reason = 'low_score')
                  AND abs(score - ({threshold})) <= {NEAR}
                GROUP BY image_id),
            dropped_texts AS (
                SELECT image_id, count(*) AS n FROM texts
                WHERE drop_reason IN ('excessive_objects', 'low_complexity') GROUP BY image_id),
            disagree AS (
                SELECT a.image_id, count(*) AS n FROM regions a JOIN regions b
                  ON a.image_id = b.image_id AND a.kind = 'object' AND b.kind = 'object'
                 AND a.source < b.source AND a.source <> 'fused' AND b.source <> 'fused'
                 AND lower(a.label) <> lower(b.label)
                WHERE greatest(0, least(a.x1, b.x1) - greatest(a.x0, b.x0))
                    * greatest(0, least(a.y1, b.y1) - greatest(a.y0, b.y0))
                    >= 0.5 / 1.5 * ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0))
                GROUP BY a.image_id)
            SELECT i.image_id, i.uri, i.width, i.height,
                   coalesce(s.n, 0) AS single_source, coalesce(n.n, 0) AS near_threshold,
                   coalesce(t.n, 0) AS dropped_texts, coalesce(d.n, 0) AS disagreements
            FROM images i
            LEFT JOIN single s USING (image_id) LEFT JOIN near n USING (image_id)
            LEFT JOIN dropped_texts t USING (image_id) LEFT JOIN disagree d USING (image_id)
            WHERE i.image_id NOT IN (SELECT image_id FROM _sent)
            ORDER BY i.uri
            """
        ).fetchall()
    finally:
        connection.close()
    names = ("image_id", "uri", "width", "height", "single_source", "near_threshold", "dropped_texts", "disagreements")  # fmt: skip
    images, seen = [], set()
    for row in rows:
        entry = dict(zip(names, row, strict=True))
        if entry["image_id"] in seen:
            continue  # the same bytes under two URIs: one task
        seen.add(entry["image_id"])
        entry["uncertainty"] = (
            entry["single_source"] + entry["near_threshold"] + entry["dropped_texts"]
            + 2 * entry["disagreements"]
        )  # fmt: skip
        images.append(entry)
    if options.sample == "random":
        random.Random(options.seed).shuffle(images)
    else:
        images.sort(key=lambda e: (-e["uncertainty"], e["image_id"]))
    return images[: options.limit]


# --------------------------------------------------------------------------- sending


def label_config(labels: list[str]) -> str:
    """The project's labeling interface: boxes with ``labels`` (and ``text`` for OCR lines,
    whose transcription is a per-region text box)."""
    names = list(dict.fromkeys([*COCO_NAMES, *sorted(labels), OCR_LABEL]))
    label_lines = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in names)
    return (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        f"{label_lines}\n"
        "  </RectangleLabels>\n"
        '  <TextArea name="transcription" toName="image" perRegion="true" editable="true" '
        'maxSubmissions="1" placeholder="the text of this line (OCR lines: class text)"/>\n'
        "</View>"
    )


def image_url(corpus: Corpus, image: dict, iteration: int, options: ReviewOptions) -> str:
    """How the browser gets one image (``options.images``; see the module docstring)."""
    from engine.storage import scheme_of

    uri = image["uri"]
    scheme = scheme_of(uri)
    mode = options.images
    if mode == "auto":
        if scheme in ("http", "https"):
            mode = "url"
        elif scheme == "s3":
            mode = "presign"
        elif scheme is None and options.document_root and "::" not in uri:
            mode = "local-files"
        else:
            mode = "inline"
    if mode == "url":
        if scheme not in ("http", "https"):
            raise ReviewError(f"--images url: {uri} is not an http(s) URL")
        return uri
    if mode == "presign":
        return presigned_url(uri)
    if mode == "local-files":
        return local_files_url(uri, options.document_root)
    return inline_url(corpus, uri, iteration)


def presigned_url(uri: str) -> str:
    """An ``s3://bucket/key`` input as a presigned GET URL (boto3 reads the same AWS_*
    settings and endpoint the corpus's store does)."""
    from engine.storage import scheme_of

    if scheme_of(uri) != "s3":
        raise ReviewError(f"--images presign: {uri} is not an s3:// URI")
    import boto3

    bucket, _, key = uri[len("s3://") :].partition("/")
    return boto3.client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_S
    )


def local_files_url(uri: str, document_root: str | None) -> str:
    """A local file as Label Studio's local-files URL, relative to its document root."""
    if not document_root:
        raise ReviewError("--images local-files needs --document-root (the server's LOCAL_FILES_DOCUMENT_ROOT)")  # fmt: skip
    path = Path(uri).resolve()
    root = Path(document_root).resolve()
    if "::" in uri or not path.is_relative_to(root):
        raise ReviewError(
            f"--images local-files: {uri} is not a file under --document-root {document_root}"
        )
    return "/data/local-files/?d=" + quote(str(path.relative_to(root)))


def inline_url(corpus: Corpus, uri: str, iteration: int) -> str:
    """The image as the corpus decoded it (EXIF-upright: the boxes' frame), as a JPEG data
    URI."""
    from PIL import Image

    pixels = corpus.load_image(uri, iteration)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def iteration_regions(corpus: Corpus, iteration: int, image_ids: list[str]) -> dict[str, dict]:
    """The kept object and OCR regions of ``image_ids`` in ``iteration``, by image and
    region id: ``kind``, ``label``, ``box`` (pixels), ``score``."""
    import pyarrow as pa

    from engine.query import connect

    connection = connect(corpus.root, [iteration], duplicates="none")
    try:
        connection.register("_chosen", pa.table({"image_id": pa.array(image_ids, pa.string())}))
        rows = connection.execute(
            "SELECT image_id, region_id, kind, label, score, x0, y0, x1, y1 FROM regions "
            "JOIN _chosen USING (image_id) WHERE kept AND kind IN ('object', 'ocr') "
            "ORDER BY image_id, region_id"
        ).fetchall()
    finally:
        connection.close()
    by_image: dict[str, dict] = {image_id: {} for image_id in image_ids}
    for image_id, region_id, kind, label, score, *box in rows:
        by_image[image_id][region_id] = {
            "kind": kind, "label": label, "score": round(float(score), 4),
            "box": [round(float(v), 2) for v in box],
        }  # fmt: skip
    return by_image


def prediction_results(regions: dict, width: int, height: int) -> list[dict]:
    """One image's sent regions as Label Studio prediction results (see the module
    docstring); an OCR line is a ``text`` box plus its transcription, under one id."""
    results = []
    for region_id, region in regions.items():
        value = box_percent(region["box"], width, height)
        common = {
            "id": region_id, "from_name": "label", "to_name": "image",
            "original_width": width, "original_height": height, "image_rotation": 0,
        }  # fmt: skip
        label = OCR_LABEL if region["kind"] == "ocr" else region["label"]
        results.append({**common, "type": "rectanglelabels", "score": region["score"], "value": {**value, "rectanglelabels": [label]}})  # fmt: skip
        if region["kind"] == "ocr":
            results.append({**common, "from_name": "transcription", "type": "textarea", "value": {**value, "text": [region["label"]]}})  # fmt: skip
    return results


@dataclass
class SendSummary:
    project: str
    project_id: int
    iteration: int
    images: list[dict]
    holdout: list[str] = field(default_factory=list)


def send_for_review(
    corpus_path: str | Path, client: LabelStudioClient, options: ReviewOptions,
    show_progress: bool = True,
) -> SendSummary:  # fmt: skip
    """``fld review``: choose images, make (or add to) a project, upload the tasks, then
    record what was sent. The server is checked before anything is chosen or written."""
    corpus = Corpus(corpus_path)
    iteration = corpus.select_iteration(options.iteration)
    client.check()
    images = choose_images(corpus, iteration, options)
    if not images:
        raise ReviewError(
            f"{corpus_path}: iteration {iteration} has no image left to review (every one was sent before)"  # fmt: skip
        )
    regions = iteration_regions(corpus, iteration, [image["image_id"] for image in images])
    holdout = holdout_ids([image["image_id"] for image in images], options.holdout)
    tasks = []
    for image in images:
        image_regions = regions[image["image_id"]]
        tasks.append(
            {
                "data": {
                    "image": image_url(corpus, image, iteration, options),
                    "fld_image_id": image["image_id"],
                    "fld_uri": image["uri"],
                    "fld_iteration": iteration,
                    "fld_uncertainty": image["uncertainty"],
                },
                "predictions": [
                    {
                        "model_version": f"iteration={iteration}",
                        "score": min([r["score"] for r in image_regions.values()], default=1.0),
                        "result": prediction_results(
                            image_regions, image["width"], image["height"]
                        ),  # fmt: skip
                    }
                ],
            }
        )
    labels = sorted({r["label"] for rs in regions.values() for r in rs.values() if r["kind"] == "object"})  # fmt: skip
    local = [t["data"]["fld_uri"] for t in tasks if t["data"]["image"].startswith("/data/local-files/")]  # fmt: skip
    folder = os.path.commonpath([str(Path(uri).resolve().parent) for uri in local]) if local else None  # fmt: skip
    if folder is not None and Path(folder) == Path(options.document_root).resolve():
        raise ReviewError(
            f"--document-root {options.document_root}: Label Studio serves local files only from "
            "a subfolder of its LOCAL_FILES_DOCUMENT_ROOT, and these images lie directly in it: "
            "set the server's root (and --document-root) to a folder above theirs"
        )
    if options.project is None:
        title = options.title or f"fld {Path(str(corpus.root)).name} iteration {iteration}"
        project_id = client.create_project(title[:50], label_config(labels), f"fld-engine review of {corpus.root}")  # fmt: skip
    else:
        project_id = int(client.project(options.project)["id"])
    if folder is not None:  # the project may read them only through a local storage
        client.add_local_storage(project_id, folder)
    client.import_tasks(project_id, tasks)
    key = project_key(client.url, project_id)
    record_path = project_record_path(corpus, key)
    record = json.loads(record_path.read_bytes()) if record_path.exists() else {
        "key": key, "server": client.url, "project_id": project_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tasks": {},
    }  # fmt: skip
    for image in images:
        record["tasks"][image["image_id"]] = {
            "uri": image["uri"], "width": image["width"], "height": image["height"],
            "iteration": iteration, "holdout": image["image_id"] in holdout,
            "sample": options.sample, "uncertainty": image["uncertainty"],
            "regions": regions[image["image_id"]],
        }  # fmt: skip
    record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, record)
    if show_progress:
        print(
            f"sent {len(images)} images of iteration {iteration} to {key} "
            f"({len(holdout)} hold-out, chosen by {options.sample})",
            file=sys.stderr,
        )
    return SendSummary(key, project_id, iteration, images, sorted(holdout))


# --------------------------------------------------------------------------- importing


@dataclass
class ImportSummary:
    tasks: int = 0  # tasks with a finished annotation, imported
    updated: int = 0  # of those, tasks whose rows changed since the last import
    pending: int = 0  # tasks nobody annotated yet (or skipped)
    skipped: int = 0  # tasks of images not in the corpus, or not sent by it
    verdicts: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def latest_annotation(task: dict) -> dict | None:
    """A task's most recent annotation that is not a skip (``was_cancelled``)."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a["id"])))  # fmt: skip


def corpus_image_ids(corpus: Corpus) -> set[str]:
    from engine.query import connect

    connection = connect(corpus.root, duplicates="none")
    try:
        return {row[0] for row in connection.execute("SELECT DISTINCT image_id FROM images").fetchall()}  # fmt: skip
    finally:
        connection.close()


def import_reviews(
    corpus_path: str | Path, client: LabelStudioClient, show_progress: bool = True
) -> ImportSummary:
    """``fld import-reviews``: the finished annotations of every project this corpus sent
    to ``client``'s server, into the ``reviews`` table (see the module docstring)."""
    corpus = Corpus(corpus_path)
    corpus.select_iterations(None)
    records = [r for r in read_project_records(corpus) if r["server"].rstrip("/") == client.url]
    if not records:
        raise ReviewError(f"{corpus_path}: nothing was sent to {client.url} for review (fld review first)")  # fmt: skip
    client.check()
    known = corpus_image_ids(corpus)
    existing = read_reviews(reviews_path(corpus))
    before = {}
    for row in existing.to_pylist():
        before.setdefault((row["project"], row["task_id"]), []).append(row)
    summary = ImportSummary()
    table = existing
    for record in records:
        rows_by_task: dict[int, list[dict]] = {}
        for task in client.iter_tasks(record["project_id"]):
            image_id = str((task.get("data") or {}).get("fld_image_id") or "")
            sent = record["tasks"].get(image_id)
            if sent is None or image_id not in known:
                summary.skipped += 1
                why = "it was not sent by this corpus" if sent is None else "its image is no longer in the corpus"  # fmt: skip
                summary.warnings.append(f"task {task.get('id')} of {record['key']}: skipped, {why}")  # fmt: skip
                continue
            annotation = latest_annotation(task)
            if annotation is None:
                summary.pending += 1
                continue
            context = TaskContext(record["key"], int(task["id"]), image_id, sent)
            rows = region_judgements(context, annotation)
            rows_by_task[int(task["id"])] = rows
            summary.tasks += 1
            summary.updated += comparable(rows) != comparable(before.get((record["key"], int(task["id"])), []))  # fmt: skip
            for row in rows:
                summary.verdicts[row["verdict"]] = summary.verdicts.get(row["verdict"], 0) + 1
        table = merge_reviews(table, record["key"], rows_by_task)
    if summary.updated or table.num_rows != existing.num_rows:
        path = reviews_path(corpus)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, table_bytes(table))
    if show_progress:
        for warning in summary.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return summary


def comparable(rows: list[dict]) -> list[tuple]:
    return sorted((r["review_id"], r["verdict"], r["label"], round(r["x0"], 2), round(r["y0"], 2), round(r["x1"], 2), round(r["y1"], 2), r["reviewed_at"]) for r in rows)  # fmt: skip


# --------------------------------------------------------------------------- judging


def holdout_truth(labels: HumanLabels):
    """People's labels of the hold-out images as a ``pipelines.evaluate.GroundTruth``
    (image ids ``1..n`` in ``image_id`` order; categories: the object labels they drew)."""
    from pipelines.evaluate import GroundTruth, normalise_label

    images = sorted(labels.holdout)
    names = sorted({normalise_label(label) for i in images for kind, label, _ in labels.boxes[i] if kind == "object"})  # fmt: skip
    category_ids = {name: n + 1 for n, name in enumerate(names)}
    objects: dict[int, list[dict]] = {}
    texts: dict[int, list[dict]] = {}
    for number, image_id in enumerate(images, start=1):
        for kind, label, box in labels.boxes[image_id]:
            area = (box[2] - box[0]) * (box[3] - box[1])
            if kind == "object":
                objects.setdefault(number, []).append({"category_id": category_ids[normalise_label(label)], "box": tuple(box), "area": area, "iscrowd": 0})  # fmt: skip
            else:
                texts.setdefault(number, []).append({"text": label, "box": tuple(box)})
    digest = hashlib.sha256(json.dumps({i: labels.boxes[i] for i in images}, sort_keys=True, default=list).encode()).hexdigest()  # fmt: skip
    truth = GroundTruth(
        path=Path("reviews"), sha256=digest, images={}, categories={v: k for k, v in category_ids.items()},
        category_ids=category_ids, objects=objects, texts=texts,
    )  # fmt: skip
    return truth, {image_id: number for number, image_id in enumerate(images, start=1)}


def evaluate_on_reviews(corpus: Corpus, iteration: int, labels: HumanLabels) -> dict:
    """``iteration``'s kept regions on the reviewed hold-out images against people's
    labels there; the shape of ``pipelines.evaluate.evaluate_iteration``'s result. Works
    on an iteration that is not committed yet (its shard files)."""
    from engine.query import connect
    from pipelines.evaluate import IOU_THRESHOLD, evaluate_objects, evaluate_ocr, kept_regions

    truth, numbers = holdout_truth(labels)
    connection = connect(corpus.root, [iteration], duplicates="none")
    try:
        sizes = connection.execute("SELECT DISTINCT image_id, width, height FROM images").fetchall()  # fmt: skip
        matched = {
            image_id: {"id": numbers[image_id], "width": width, "height": height}
            for image_id, width, height in sizes if image_id in numbers
        }  # fmt: skip
        regions = kept_regions(connection, matched)
    finally:
        connection.close()
    present = {m["id"] for m in matched.values()}
    truth.objects = {i: v for i, v in truth.objects.items() if i in present}
    truth.texts = {i: v for i, v in truth.texts.items() if i in present}
    return {
        "gt": "reviews (hold-out)",
        "gt_sha256": truth.sha256,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "iou_threshold": IOU_THRESHOLD,
        "images": {
            "corpus": len(sizes),
            "gt": len(numbers),
            "matched": len(matched),
            "not_in_gt": 0,
            "gt_not_in_corpus": len(numbers) - len(matched),
            "size_mismatch": 0,
            "ambiguous": 0,
        },  # fmt: skip
        "objects": evaluate_objects(truth, matched, regions["object"]),
        "ocr": evaluate_ocr(truth, matched, regions["ocr"]),
    }


def evaluate_reviews_corpus(corpus_path: str | Path, iteration: int | None = None) -> dict[int, dict]:  # fmt: skip
    """``fld eval --reviews``: every committed iteration (or ``iteration``) on the
    corpus's current hold-out reviews."""
    corpus = Corpus(corpus_path)
    chosen = corpus.select_iterations(iteration)
    labels = HumanLabels.read(reviews_path(corpus))
    if not labels.holdout:
        raise ReviewError(f"{corpus_path} has no reviewed hold-out image (fld review, then fld import-reviews)")  # fmt: skip
    return {k: evaluate_on_reviews(corpus, k, labels) for k in chosen}


def f1_of(objects: dict) -> float | None:
    """F1 at IoU 0.5 of kept object boxes (``pipelines.evaluate``'s precision and recall:
    every kept label counts, also one no reviewer drew anywhere)."""
    precision, recall = objects["precision"], objects["recall"]
    if precision is None or recall is None:
        return None
    return (
        0.0 if precision + recall == 0 else round(2 * precision * recall / (precision + recall), 6)
    )


def judge_iteration(corpus: Corpus, iterations: tuple[int, int], snapshot, accept_worse: bool) -> dict:  # fmt: skip
    """``review_eval`` of a new iteration (``iterations``: it and its parent) against the
    hold-out reviews of its snapshot: both iterations' measures, and whether it becomes
    the corpus's default: not when its **F1 at IoU 0.5** of kept object boxes is below its
    parent's, unless ``accept_worse``.

    Why F1 and not mAP50 (also recorded): a corpus exports its kept boxes, not a ranking,
    and COCO mAP leaves out every class without a ground-truth box on the hold-out images,
    so an iteration that keeps a bicycle on every image, where reviewers drew none, would
    score as its parent does. F1 counts every kept box a reviewer did not draw."""
    iteration, parent = iterations
    labels = HumanLabels.read(snapshot)
    if not labels.holdout:
        return {"f1": None, "map50": None, "why": "no reviewed hold-out image", "worse": False, "default": True, "parent": parent}  # fmt: skip
    mine = evaluate_on_reviews(corpus, iteration, labels)
    theirs = evaluate_on_reviews(corpus, parent, labels)
    score, parent_score = f1_of(mine["objects"]), f1_of(theirs["objects"])
    if score is None or parent_score is None:
        return {"f1": None, "map50": None, "why": "no object box on the reviewed hold-out images", "worse": False, "default": True, "parent": parent}  # fmt: skip
    worse = score < parent_score
    return {
        "parent": parent,
        "score": "f1 at IoU 0.5 of kept object boxes",
        "images": mine["images"]["matched"],
        "gt_objects": mine["objects"]["gt_objects"],
        "f1": score,
        "parent_f1": parent_score,
        "map50": mine["objects"]["map50"],
        "parent_map50": theirs["objects"]["map50"],
        "precision": mine["objects"]["precision"],
        "recall": mine["objects"]["recall"],
        "parent_precision": theirs["objects"]["precision"],
        "parent_recall": theirs["objects"]["recall"],
        "gt_sha256": mine["gt_sha256"],
        "worse": worse,
        "default": (not worse) or accept_worse,
        "accepted_worse": worse and accept_worse,
    }


def accept_iteration(corpus: Corpus, iteration: int, show_progress: bool = True) -> bool:
    """``fld refine --accept-worse`` on a committed iteration judged worse: make it the
    default (its ``run.json``'s ``review_eval.default``); True when something changed."""
    run_path = corpus.iteration_dir(iteration) / RUN
    info = json.loads(run_path.read_text())
    judged = info.get("review_eval") or {}
    if judged.get("default", True):
        return False
    judged.update(default=True, accepted_worse=True)
    info["review_eval"] = judged
    atomic_write_json(run_path, info)
    if show_progress:
        print(f"iteration {iteration}: made the corpus's default (--accept-worse)", file=sys.stderr)  # fmt: skip
    return True


def send_summary_text(summary: SendSummary) -> str:
    lines = [f"{summary.project}: {len(summary.images)} tasks (iteration {summary.iteration})"]
    for image in summary.images:
        held = " hold-out" if image["image_id"] in summary.holdout else ""
        lines.append(f"  {image['uri']}  uncertainty {image['uncertainty']}{held}")
    return "\n".join(lines)


__all__ = [
    "IMAGE_MODES", "ImportSummary", "LabelStudioError", "ReviewError", "ReviewOptions",
    "SendSummary", "accept_iteration", "evaluate_reviews_corpus", "import_reviews",
    "judge_iteration", "send_for_review",
]  # fmt: skip
