"""``fld diff CORPUS A B``: what changed in the kept regions from iteration A to B.

Per image, kept regions of A and B with the same kind and label are matched greedily by
IoU (highest first, ``torchvision.ops.box_iou``) at ``iou_threshold``; a matched pair is
``unchanged`` when its IoU is at least ``same_iou`` and ``changed`` (moved or resized)
otherwise; regions of B left unmatched are ``added``, of A ``removed``. Counted by kind
and label. Images are read one at a time (ordered by image_id), never the whole corpus.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from engine.boxes import iou_matrix
from engine.corpus import Corpus
from engine.query import connect

QUERY = """
    SELECT image_id, iteration, kind, label, x0, y0, x1, y1 FROM regions
    WHERE kept AND iteration IN (?, ?) AND kind IN ('object', 'ocr', 'dense')
    ORDER BY image_id, iteration
"""


def diff_iterations(
    corpus_path: str | Path, a: int, b: int, iou_threshold: float = 0.5, same_iou: float = 0.9
) -> list[dict]:
    corpus = Corpus(corpus_path)
    for iteration in (a, b):
        corpus.select_iteration(iteration)  # raises CorpusError unless committed
    connection = connect(corpus_path, [a, b])
    cursor = connection.execute(QUERY, [a, b])
    counts: dict[tuple[str, str], Counter] = {}
    current, rows = None, []
    while batch := cursor.fetchmany(10_000):
        for row in batch:
            if row[0] != current and rows:
                compare_image(rows, a, counts, iou_threshold, same_iou)
                rows = []
            current = row[0]
            rows.append(row)
    if rows:
        compare_image(rows, a, counts, iou_threshold, same_iou)
    table = []
    for (kind, label), counter in sorted(counts.items()):
        table.append(
            {
                "kind": kind,
                "label": label,
                **{k: counter[k] for k in ("added", "removed", "changed", "unchanged")},
            }
        )
    return table


def compare_image(
    rows: list[tuple], a: int, counts: dict, iou_threshold: float, same_iou: float
) -> None:
    groups: dict[tuple[str, str], tuple[list, list]] = {}
    for _, iteration, kind, label, *box in rows:
        before, after = groups.setdefault((kind, label), ([], []))
        (before if iteration == a else after).append(box)
    for key, (before, after) in groups.items():
        counter = counts.setdefault(key, Counter())
        matched_before, matched_after = set(), set()
        if before and after:
            ious = iou_matrix(before, after)
            pairs = sorted(
                ((float(ious[i, j]), i, j) for i in range(len(before)) for j in range(len(after))),
                reverse=True,
            )
            for iou, i, j in pairs:
                if iou < iou_threshold:
                    break
                if i in matched_before or j in matched_after:
                    continue
                matched_before.add(i)
                matched_after.add(j)
                counter["unchanged" if iou >= same_iou else "changed"] += 1
        counter["removed"] += len(before) - len(matched_before)
        counter["added"] += len(after) - len(matched_after)


def review_changes(corpus_path: str | Path, b: int) -> dict[str, int]:
    """What people's reviews did in iteration ``b`` (``filters.human_review``): their boxes
    kept (``human@1``), and the models' boxes they replaced or rejected."""
    from engine.reviews import HUMAN_SOURCE

    connection = connect(corpus_path, [b], duplicates="none")
    try:
        rows = connection.execute(
            "SELECT count(*) FILTER (WHERE kept AND source = $human), "
            "count(DISTINCT image_id) FILTER (WHERE source = $human), "
            "count(*) FILTER (WHERE drop_reason = 'human_superseded'), "
            "count(*) FILTER (WHERE drop_reason = 'human_rejected') FROM regions",
            {"human": HUMAN_SOURCE},
        ).fetchone()
    finally:
        connection.close()
    return dict(zip(("human_kept", "human_images", "human_superseded", "human_rejected"), rows, strict=True))  # fmt: skip
