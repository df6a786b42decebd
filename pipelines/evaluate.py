"""Measure a corpus against COCO ground truth (``fld eval CORPUS --gt COCO.json``).

For every committed iteration (or the one asked for):

Images
    A corpus image is matched to a ground-truth image by file name: the base name of
    ``images.uri`` (for a tar member, of the member's name) equals the base name of the
    GT ``file_name``. Corpus images with no GT image are ignored; GT images with no corpus
    image are left out of the measures (both are counted: ``images``). A matched pair
    whose sizes differ (an EXIF rotation, a resized copy) is left out and counted as
    ``size_mismatch``: its boxes would not be comparable. If several corpus images have
    the same file name, the first by URI is used and the others are counted as
    ``ambiguous``; a GT file naming one file twice is refused.

Objects (kept ``object`` regions against GT annotations without a ``text`` key)
    ``map50`` and ``map50_95``: COCO mAP from ``pycocotools`` (100 detections per image,
    the mean over categories that have GT instances in the matched images), with each
    region's ``score``. Labels are mapped to the GT's category ids by name
    (case-insensitive; ``_`` and ``-`` read as spaces).

    ``precision`` and ``recall`` at IoU 0.5: per image and category, detections in
    descending score take the unmatched GT box of highest IoU >= 0.5 (a true positive)
    or are false positives. A kept label that names no GT category is a false positive
    here (``labels_not_in_gt`` counts them): the engine kept a label that this ground
    truth says is wrong. It cannot enter mAP (it has no category id), and COCO mAP
    ignores detections of categories without GT instances anyway, so the difference
    between the two measures is exactly these labels. A detection matching an
    ``iscrowd`` GT box (IoU >= 0.5, COCO's crowd IoU) is neither a true nor a false
    positive; crowd boxes are not counted in recall.

OCR (kept ``ocr`` regions against GT annotations that have ``text``)
    Per image, OCR regions in descending score each take one unmatched GT line: the one
    of highest box IoU among those with IoU >= 0.5 or that the region holds with a
    margin (at least 80 % of the GT box inside the region, the GT box filling at least
    20 % of it; ICDAR DetEval's area-recall/area-precision idea). The margin rule is
    there because PP-OCR's boxes carry a margin around the glyphs (its detector's
    unclip ratio): around a short word with a tight GT box the IoU is often 0.35-0.5
    although the line was found and read exactly (measured on engine.scenes). Texts are
    compared case-sensitively after whitespace normalisation
    (runs of whitespace become one space, ends stripped). ``exact_match``: the share of
    GT lines whose matched region reads exactly the same (an unmatched GT line is a
    miss). ``cer``: the summed Levenshtein distance over the summed GT length, an
    unmatched GT line counting as read as the empty string; ``cer_matched`` is the same
    over matched lines only (recognition alone). ``precision`` and ``recall``: matched
    regions over OCR regions, over GT lines.

Results are printed as a table (one row per iteration), returned as a dict by iteration,
and stored in each iteration's ``run.json`` under ``"eval"`` (an atomic rewrite that keeps
every other key).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.boxes import iou_matrix
from engine.corpus import RUN, Corpus, CorpusError, atomic_write_json
from engine.query import connect, format_table

IOU_THRESHOLD = 0.5
OCR_MIN_COVER = 0.8  # share of a GT text box inside an OCR box ...
OCR_MIN_FILL = 0.2  # ... that the GT box fills at least this much of: a match (see ocr_match)
COCO_STAT_NAMES = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip


class EvalError(Exception):
    """The ground truth or the corpus cannot be evaluated as asked."""


def normalise_label(label: str) -> str:
    return " ".join(label.replace("_", " ").replace("-", " ").lower().split())


def normalise_text(text: str) -> str:
    """Whitespace-normalised, case kept."""
    return " ".join(text.split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def crowd_overlaps(boxes: list[tuple], crowds: list[tuple]) -> np.ndarray:
    """COCO's crowd IoU of every box with every crowd box (the overlap over the area of the
    detection), by pycocotools' own ``mask.iou`` with ``iscrowd`` set."""
    from pycocotools import mask as mask_utils

    if not boxes or not crowds:
        return np.zeros((len(boxes), len(crowds)))

    def xywh(items: list[tuple]) -> np.ndarray:
        array = np.asarray(items, dtype=np.float64).reshape(-1, 4)
        return np.column_stack([array[:, :2], array[:, 2:] - array[:, :2]])

    return np.asarray(mask_utils.iou(xywh(boxes), xywh(crowds), [1] * len(crowds)))


def file_key(path_or_uri: str) -> str:
    """The file name a URI or a GT ``file_name`` is matched by."""
    return Path(path_or_uri.split("::")[-1]).name


@dataclass
class GroundTruth:
    path: Path
    sha256: str
    images: dict[str, dict]  # file name -> GT image entry
    categories: dict[int, str]  # id -> name
    category_ids: dict[str, int]  # normalised name -> id
    objects: dict[int, list[dict]] = field(default_factory=dict)  # GT image id -> annotations
    texts: dict[int, list[dict]] = field(default_factory=dict)


def load_ground_truth(path: str | Path) -> GroundTruth:
    path = Path(path)
    data = path.read_bytes()  # FileNotFoundError is reported by the CLI as a usage error
    try:
        coco = json.loads(data)
    except json.JSONDecodeError as exc:
        raise EvalError(f"--gt: {path} is not JSON ({exc})") from None
    if not isinstance(coco, dict) or not all(
        isinstance(coco.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise EvalError(f"--gt: {path} is not COCO instances (images, annotations, categories)")
    try:
        images: dict[str, dict] = {}
        for image in coco["images"]:
            key = file_key(str(image["file_name"]))
            if key in images:
                raise EvalError(
                    f"--gt: {path} names the file {key!r} twice; images are matched by file name"
                )
            images[key] = {
                "id": image["id"],
                "file_name": image["file_name"],
                "width": int(image["width"]),
                "height": int(image["height"]),
            }
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        objects: dict[int, list[dict]] = defaultdict(list)
        texts: dict[int, list[dict]] = defaultdict(list)
        for annotation in coco["annotations"]:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            entry = dict(annotation, box=(x, y, x + w, y + h))
            if "text" in annotation and annotation["text"] is not None:
                texts[annotation["image_id"]].append(entry)
            else:
                if int(annotation["category_id"]) not in categories:
                    raise EvalError(
                        f"--gt: annotation {annotation.get('id')} has category_id "
                        f"{annotation['category_id']}, which is not in categories"
                    )
                objects[annotation["image_id"]].append(entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalError(f"--gt: {path} is not valid COCO instances ({exc!r})") from None
    return GroundTruth(
        path=path.resolve(),
        sha256=hashlib.sha256(data).hexdigest(),
        images=images,
        categories=categories,
        category_ids={normalise_label(name): i for i, name in categories.items()},
        objects=dict(objects),
        texts=dict(texts),
    )


def match_images(connection, gt: GroundTruth) -> tuple[dict[str, dict], dict]:
    """Corpus ``image_id`` -> GT image, and the counts of what matched."""
    rows = connection.execute(
        "SELECT image_id, uri, width, height FROM images ORDER BY uri"
    ).fetchall()
    matched: dict[str, dict] = {}
    used: set[str] = set()
    counts = Counter(corpus=len(rows), gt=len(gt.images))
    for image_id, uri, width, height in rows:
        key = file_key(uri)
        gt_image = gt.images.get(key)
        if gt_image is None:
            counts["not_in_gt"] += 1
        elif key in used:
            counts["ambiguous"] += 1
        elif (width, height) != (gt_image["width"], gt_image["height"]):
            used.add(key)
            counts["size_mismatch"] += 1
        else:
            used.add(key)
            matched[image_id] = gt_image
    counts["matched"] = len(matched)
    counts["gt_not_in_corpus"] = len(gt.images) - len(used)
    for key in ("not_in_gt", "ambiguous", "size_mismatch"):
        counts.setdefault(key, 0)
    return matched, dict(counts)


def kept_regions(connection, matched: dict[str, dict]) -> dict[str, list[tuple]]:
    """Kept object and OCR rows of the matched images, by kind:
    ``(image_id, label, score, x0, y0, x1, y1)`` in a deterministic order."""
    connection.register("_matched", pa.table({"image_id": pa.array(sorted(matched), pa.string())}))
    rows = connection.execute(
        "SELECT kind, image_id, label, score, x0, y0, x1, y1 FROM regions "
        "JOIN _matched USING (image_id) WHERE kept AND kind IN ('object', 'ocr') "
        "ORDER BY image_id, region_id"
    ).fetchall()
    by_kind: dict[str, list[tuple]] = {"object": [], "ocr": []}
    for kind, *rest in rows:
        by_kind[kind].append(tuple(rest))
    return by_kind


def object_match(box: tuple, truth: tuple, iou: float | None = None) -> float | None:
    """IoU when it is at least 0.5, else no match (``iou``: already computed)."""
    iou = float(iou_matrix([box], [truth])[0, 0]) if iou is None else iou
    return iou if iou >= IOU_THRESHOLD else None


def ocr_match(box: tuple, truth: tuple, iou: float | None = None) -> float | None:
    """IoU >= 0.5, or the line box holding the GT box with a margin: at least
    ``OCR_MIN_COVER`` of the GT box inside it and the GT box filling at least
    ``OCR_MIN_FILL`` of it. Ranked by IoU (``iou``: already computed)."""
    iou = float(iou_matrix([box], [truth])[0, 0]) if iou is None else iou
    if iou >= IOU_THRESHOLD:
        return iou
    width = min(box[2], truth[2]) - max(box[0], truth[0])
    height = min(box[3], truth[3]) - max(box[1], truth[1])
    if width <= 0 or height <= 0:
        return None
    inter = width * height
    truth_area = (truth[2] - truth[0]) * (truth[3] - truth[1])
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    if inter >= OCR_MIN_COVER * truth_area and truth_area >= OCR_MIN_FILL * box_area:
        return iou
    return None


def greedy_match(
    detections: list[tuple[float, tuple]],
    truths: list[tuple[tuple, bool]],
    match=object_match,
) -> tuple[list[int | None], list[bool]]:
    """Detections ``(score, box)`` in descending score (ties: in the given order) each take
    the unmatched non-crowd truth that ``match`` rates highest (the first on ties).
    Returns, per detection, the truth index it took (or None) and whether, unmatched, it
    falls on a crowd truth (COCO's crowd IoU >= 0.5)."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i][0])
    boxes = [box for _, box in detections]
    ious = iou_matrix(boxes, [truth_box for truth_box, _ in truths])
    crowd_columns = [j for j, (_, crowd) in enumerate(truths) if crowd]
    crowd_ious = crowd_overlaps(boxes, [truths[j][0] for j in crowd_columns])
    taken = [False] * len(truths)
    assigned: list[int | None] = [None] * len(detections)
    on_crowd = [False] * len(detections)
    for i in order:
        box = detections[i][1]
        best, best_quality = None, -1.0
        for j, (truth_box, crowd) in enumerate(truths):
            if crowd or taken[j]:
                continue
            quality = match(box, truth_box, float(ious[i, j]))
            if quality is not None and quality > best_quality:
                best, best_quality = j, quality
        if best is not None:
            taken[best] = True
            assigned[i] = best
        else:
            on_crowd[i] = bool(crowd_columns) and bool(crowd_ious[i].max() >= IOU_THRESHOLD)
    return assigned, on_crowd


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def evaluate_objects(gt: GroundTruth, matched: dict[str, dict], rows: list[tuple]) -> dict:
    """mAP (pycocotools) and precision/recall at IoU 0.5 of the kept object regions."""
    gt_image_ids = {image["id"] for image in matched.values()}
    truths = {i: gt.objects.get(i, []) for i in gt_image_ids}
    detections: dict[tuple, list[tuple[float, tuple]]] = defaultdict(list)
    not_in_gt: Counter = Counter()
    for image_id, label, score, x0, y0, x1, y1 in rows:
        category = gt.category_ids.get(normalise_label(label))
        if category is None:
            not_in_gt[label] += 1
            continue
        detections[(matched[image_id]["id"], category)].append((float(score), (x0, y0, x1, y1)))

    per_category: dict[int, Counter] = defaultdict(Counter)
    for image_truths in truths.values():
        for annotation in image_truths:
            if not annotation.get("iscrowd", 0):
                per_category[int(annotation["category_id"])]["gt"] += 1
    keys = set(detections) | {
        (i, int(a["category_id"])) for i, image_truths in truths.items() for a in image_truths
    }
    for gt_image_id, category in sorted(keys):
        found = detections.get((gt_image_id, category), [])
        boxes = [
            (a["box"], bool(a.get("iscrowd", 0)))
            for a in truths[gt_image_id]
            if int(a["category_id"]) == category
        ]
        assigned, on_crowd = greedy_match(found, boxes)
        counts = per_category[category]
        counts["detections"] += len(found)
        counts["tp"] += sum(a is not None for a in assigned)
        counts["fp"] += sum(a is None and not c for a, c in zip(assigned, on_crowd, strict=True))
    tp = sum(c["tp"] for c in per_category.values())
    fp = sum(c["fp"] for c in per_category.values()) + sum(not_in_gt.values())
    n_gt = sum(c["gt"] for c in per_category.values())
    coco_stats, ap50_by_category = coco_map(gt, matched, truths, detections)
    result = {
        "gt_objects": n_gt,
        "detections": len(rows),
        "tp": tp,
        "fp": fp,
        "fn": n_gt - tp,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, n_gt),
        "map50": coco_stats.get("map50"),
        "map50_95": coco_stats.get("map50_95"),
        "coco_stats": coco_stats,
        "labels_not_in_gt": dict(sorted(not_in_gt.items())),
        "per_category": {
            gt.categories[category]: {
                "gt": counts["gt"],
                "detections": counts["detections"],
                "tp": counts["tp"],
                "fp": counts["fp"],
                "precision": ratio(counts["tp"], counts["tp"] + counts["fp"]),
                "recall": ratio(counts["tp"], counts["gt"]),
                "ap50": ap50_by_category.get(category),
            }
            for category, counts in sorted(per_category.items())
        },
    }
    return result


def coco_map(
    gt: GroundTruth,
    matched: dict[str, dict],
    truths: dict[int, list[dict]],
    detections: dict[tuple, list[tuple[float, tuple]]],
) -> tuple[dict, dict[int, float]]:
    """COCO's twelve summary numbers and AP50 per category, over the matched images.
    Empty when there is no GT object; zeros when there are no detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = []
    for gt_image_id in sorted(truths):
        for annotation in truths[gt_image_id]:
            x0, y0, x1, y1 = annotation["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": gt_image_id,
                    "category_id": int(annotation["category_id"]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(annotation.get("area") or (x1 - x0) * (y1 - y0)),
                    "iscrowd": int(annotation.get("iscrowd", 0)),
                }
            )
    if not any(not a["iscrowd"] for a in annotations):
        return {}, {}
    results = [
        {
            "image_id": gt_image_id,
            "category_id": category,
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": score,
        }
        for (gt_image_id, category), found in sorted(detections.items())
        for score, box in found
    ]
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}, {}
    images = sorted(
        ({"id": i["id"], "width": i["width"], "height": i["height"]} for i in matched.values()),
        key=lambda image: image["id"],
    )
    categories = [{"id": i, "name": name} for i, name in sorted(gt.categories.items())]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluation = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = {
        name: (round(float(value), 6) if value >= 0 else None)
        for name, value in zip(COCO_STAT_NAMES, evaluation.stats, strict=True)
    }
    # precision[T, R, K, A, M]: IoU 0.5 is T = 0, area "all" A = 0, 100 detections M = -1.
    precision = evaluation.eval["precision"]
    by_category = {}
    for k, category in enumerate(evaluation.params.catIds):
        curve = precision[0, :, k, 0, -1]
        curve = curve[curve > -1]
        if curve.size:
            by_category[int(category)] = round(float(curve.mean()), 6)
    return stats, by_category


def evaluate_ocr(gt: GroundTruth, matched: dict[str, dict], rows: list[tuple]) -> dict:
    predictions: dict[int, list[tuple[float, tuple, str]]] = defaultdict(list)
    for image_id, label, score, x0, y0, x1, y1 in rows:
        predictions[matched[image_id]["id"]].append((float(score), (x0, y0, x1, y1), label))
    n_gt = n_matched = exact = distance = distance_matched = length = length_matched = 0
    for gt_image_id in sorted({image["id"] for image in matched.values()}):
        lines = gt.texts.get(gt_image_id, [])
        found = predictions.get(gt_image_id, [])
        assigned, _ = greedy_match(
            [(s, b) for s, b, _ in found], [(a["box"], False) for a in lines], match=ocr_match
        )
        read = {j: normalise_text(found[i][2]) for i, j in enumerate(assigned) if j is not None}
        for j, annotation in enumerate(lines):
            truth = normalise_text(str(annotation["text"]))
            guess = read.get(j, "")
            edits = levenshtein(guess, truth)
            n_gt += 1
            length += len(truth)
            distance += edits
            exact += j in read and guess == truth
            if j in read:
                n_matched += 1
                distance_matched += edits
                length_matched += len(truth)
    return {
        "gt_lines": n_gt,
        "regions": len(rows),
        "matched": n_matched,
        "precision": ratio(n_matched, len(rows)),
        "recall": ratio(n_matched, n_gt),
        "exact_match": ratio(exact, n_gt),
        "cer": ratio(distance, length),
        "cer_matched": ratio(distance_matched, length_matched),
    }


def evaluate_iteration(corpus: str | Path, gt: GroundTruth, iteration: int) -> dict:
    connection = connect(corpus, [iteration])
    try:
        matched, image_counts = match_images(connection, gt)
        regions = kept_regions(connection, matched)
    finally:
        connection.close()
    return {
        "gt": str(gt.path),
        "gt_sha256": gt.sha256,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "iou_threshold": IOU_THRESHOLD,
        "ocr_match": f"iou>={IOU_THRESHOLD} or (gt_inside>={OCR_MIN_COVER} and gt_fill>={OCR_MIN_FILL})",
        "images": image_counts,
        "objects": evaluate_objects(gt, matched, regions["object"]),
        "ocr": evaluate_ocr(gt, matched, regions["ocr"]),
    }


def evaluate_corpus(
    corpus: str | Path, gt_path: str | Path, iteration: int | None = None, write: bool = True
) -> dict[int, dict]:
    """Evaluate every committed iteration of ``corpus`` (or ``iteration``) against the
    COCO file ``gt_path``; store each result in the iteration's ``run.json`` under
    ``"eval"`` unless ``write`` is false. Returns the results by iteration."""
    store = Corpus(corpus)
    try:
        chosen = store.select_iterations(iteration)
    except CorpusError as exc:
        raise EvalError(str(exc)) from None
    gt = load_ground_truth(gt_path)
    results = {}
    for k in chosen:
        results[k] = evaluate_iteration(corpus, gt, k)
        if write:
            run_path = store.iteration_dir(k) / RUN
            info = json.loads(run_path.read_text()) if run_path.exists() else {}
            info["eval"] = results[k]
            atomic_write_json(run_path, info)
    return results


def format_results(results: dict[int, dict]) -> str:
    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    columns = [
        "iteration", "images", "gt objects", "detections", "mAP50", "mAP50-95",
        "P@.5", "R@.5", "gt lines", "ocr exact", "CER",
    ]  # fmt: skip
    rows = []
    for k, result in sorted(results.items()):
        images, objects, ocr = result["images"], result["objects"], result["ocr"]
        rows.append(
            (
                k,
                f"{images['matched']}/{images['gt']}",
                objects["gt_objects"],
                objects["detections"],
                number(objects["map50"]),
                number(objects["map50_95"]),
                number(objects["precision"]),
                number(objects["recall"]),
                ocr["gt_lines"],
                number(ocr["exact_match"]),
                number(ocr["cer"]),
            )
        )
    notes = []
    for k, result in sorted(results.items()):
        images = result["images"]
        skipped = {
            key: images[key]
            for key in ("not_in_gt", "gt_not_in_corpus", "size_mismatch", "ambiguous")
            if images[key]
        }
        if skipped:
            notes.append(
                f"iteration {k}: "
                + ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in skipped.items())
            )
        if result["objects"]["labels_not_in_gt"]:
            labels = ", ".join(
                f"{label} ({n})" for label, n in result["objects"]["labels_not_in_gt"].items()
            )
            notes.append(
                f"iteration {k}: kept labels not in the GT, counted as false positives: {labels}"
            )
    return "\n".join([format_table(columns, rows), *notes])
