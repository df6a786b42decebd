"""Does review pay, and does choosing what to review pay more? (``.venv/bin/python
bench/review_gain.py [--scenes N] [--reviews 10 20 40] [--random-seeds 3] [--student]``).

Generated scenes (``engine.scenes``, every photo group) with COCO ground truth; iteration 0
is the SSD specialist and the default region filters (``REGIONS_ONLY`` of
``bench/ssd_student_gain.py``). For each N of ``--reviews``, N images are chosen the way
``fld review`` chooses them (``pipelines.review.choose_images``: ``uncertain``, and
``random`` with ``--random-seeds`` seeds), and a **simulated reviewer** corrects them to
the ground truth: each sent box that matches a ground-truth box of its label (IoU >= 0.5,
greedy by IoU) is moved onto it, any other sent box is deleted, and each ground-truth box
left is drawn. That annotation goes through the same code a Label Studio annotation does
(``engine.reviews.region_judgements`` into the ``reviews`` table), with no hold-out (every
reviewed image teaches: the hold-out share judges iterations, it adds no label). Then
``fld refine``'s loop makes iteration 1 (``pipelines.refine.refine_corpus``), and its kept
object regions are measured against the ground truth of every scene (mAP50).

By default the student emits nothing (``refine.student.ssd.min_score=0.99``), so iteration 1
differs from iteration 0 only by people's labels: the measure is the labels' own gain, in a
few minutes. ``--student`` lets the trained student add its boxes as ``fld refine`` does by
default (about 2-3 minutes of training per arm on 2 cores).

Reported per N: the mAP50 gain over iteration 0 per reviewed image for ``uncertain`` and
the median over seeds for ``random``, and their ratio (goal: >= 1.5). Writes
``bench/results/review_gain.json`` and its history copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from results_store import new_run_id, save_result  # noqa: E402
from ssd_student_gain import REGIONS_ONLY  # noqa: E402

NEUTRAL_STUDENT = ["refine.student.ssd.min_score=0.99", "refine.student.ssd.epochs=1"]


SCENE_SEED = 7


def scenes_and_iteration0(work: Path, n_scenes: int, seed: int = SCENE_SEED) -> tuple[Path, Path]:
    """``n_scenes`` generated scenes (``seed``, by default ``SCENE_SEED``) and their
    iteration 0 by ``REGIONS_ONLY``, made once under ``work`` (a committed iteration is left
    as it is): the ground truth's path and the corpus's."""
    from engine.scenes import generate_scenes
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config

    suffix = "" if seed == SCENE_SEED else f"-seed{seed}"  # the first set's folders as before
    scenes = work / f"scenes-{n_scenes}{suffix}"
    gt = scenes / "annotations.json"
    if not gt.exists():
        generate_scenes(scenes, n_scenes, seed=seed)
    base = work / f"base-{n_scenes}{suffix}"
    annotate_corpus(load_config(None, REGIONS_ONLY), str(scenes / "images"), str(base), False)
    return gt, base


def ground_truth(gt_path: Path) -> dict[str, list[tuple[str, tuple]]]:
    """Scene file name -> [(label, (x0, y0, x1, y1))]."""
    coco = json.loads(gt_path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    truth: dict[str, list] = {name: [] for name in files.values()}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        truth[files[a["image_id"]]].append((names[a["category_id"]], (x, y, x + w, y + h)))
    return truth


def reviewer_annotation(sent: dict, truth: list[tuple[str, tuple]], width: int, height: int) -> dict:  # fmt: skip
    """What a careful reviewer submits for one image: the sent boxes moved onto the ground
    truth they match, the others deleted, the missed ones drawn (a Label Studio annotation)."""
    from engine.boxes import iou_matrix
    from engine.reviews import box_percent

    objects = {rid: r for rid, r in sent.items() if r["kind"] == "object"}
    pairs = []
    if objects and truth:
        ious = iou_matrix([r["box"] for r in objects.values()], [box for _, box in truth])
        for i, rid in enumerate(objects):
            for j, (label, _) in enumerate(truth):
                if ious[i, j] >= 0.5 and label == objects[rid]["label"]:
                    pairs.append((float(ious[i, j]), rid, j))
    used_regions, used_truth, result = set(), set(), []

    def box_item(item_id: str, label: str, box) -> dict:
        value = {**box_percent(list(box), width, height), "rectanglelabels": [label]}
        return {"id": item_id, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "value": value}  # fmt: skip

    for _, rid, j in sorted(pairs, reverse=True):
        if rid in used_regions or j in used_truth:
            continue
        used_regions.add(rid)
        used_truth.add(j)
        result.append(box_item(rid, truth[j][0], truth[j][1]))
    for j, (label, box) in enumerate(truth):
        if j not in used_truth:
            result.append(box_item(f"drawn-{j}", label, box))
    for rid, region in sent.items():  # OCR lines: left as they are (scenes have no text GT)
        if region["kind"] == "ocr":
            result.append(box_item(rid, "text", region["box"]))
    return {"id": 1, "completed_by": 0, "updated_at": "simulated", "result": result}


def review(corpus: Path, images: list[dict], truth: dict) -> int:
    """Write the simulated reviews of ``images`` into ``corpus``'s reviews table."""
    from engine.corpus import Corpus, atomic_write_bytes
    from engine.reviews import (  # fmt: skip
        TaskContext,
        merge_reviews,
        region_judgements,
        reviews_path,
        table_bytes,
    )
    from engine.schemas import REVIEWS
    from pipelines.review import iteration_regions

    store = Corpus(corpus)
    regions = iteration_regions(store, 0, [image["image_id"] for image in images])
    rows_by_task = {}
    for task_id, image in enumerate(images, start=1):
        sent = {
            "uri": image["uri"], "width": image["width"], "height": image["height"],
            "iteration": 0, "holdout": False, "regions": regions[image["image_id"]],
        }  # fmt: skip
        annotation = reviewer_annotation(sent["regions"], truth[Path(image["uri"]).name], image["width"], image["height"])  # fmt: skip
        context = TaskContext("simulated", task_id, image["image_id"], sent)
        rows_by_task[task_id] = region_judgements(context, annotation)
    table = merge_reviews(REVIEWS.empty_table(), "simulated", rows_by_task)
    path = reviews_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, table_bytes(table))
    return table.num_rows


def arm(base: Path, work: Path, chosen: tuple[str, int, int], context: dict) -> dict:
    """One arm: ``chosen`` = (sample, N, seed); returns its measures."""
    from pipelines.config import load_config
    from pipelines.evaluate import evaluate_corpus
    from pipelines.refine import refine_corpus
    from pipelines.review import ReviewOptions, choose_images

    sample, n, seed = chosen
    corpus = work / f"{sample}-{n}-seed{seed}"
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.copytree(base, corpus)
    from engine.corpus import Corpus

    images = choose_images(Corpus(corpus), 0, ReviewOptions(limit=n, sample=sample, seed=seed))
    rows = review(corpus, images, context["truth"])
    started = time.perf_counter()
    refine_corpus(corpus, 1, load_config(None, context["overrides"]), show_progress=False)
    seconds = time.perf_counter() - started
    result = evaluate_corpus(corpus, context["gt"], iteration=1, write=False)[1]["objects"]
    gain = result["map50"] - context["map50_0"]
    shutil.rmtree(corpus)
    return {
        "sample": sample, "reviewed": n, "seed": seed, "review_rows": rows,
        "map50": result["map50"], "precision": result["precision"], "recall": result["recall"],
        "gain": round(gain, 6), "gain_per_image": round(gain / n, 6),
        "uncertainty_of_chosen": sum(i["uncertainty"] for i in images),
        "refine_seconds": round(seconds, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--reviews", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--student", action="store_true", help="let the trained student add boxes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fld-review-gain"))
    parser.add_argument("--experiment", action="store_true", help="history copy only")
    args = parser.parse_args()

    from pipelines.evaluate import evaluate_corpus

    run_id = new_run_id()
    gt, base = scenes_and_iteration0(args.work, args.scenes)
    map50_0 = evaluate_corpus(base, gt, iteration=0, write=False)[0]["objects"]["map50"]
    context = {
        "truth": ground_truth(gt), "gt": gt, "map50_0": map50_0,
        "overrides": REGIONS_ONLY + ([] if args.student else NEUTRAL_STUDENT),
    }  # fmt: skip
    arms = []
    for n in args.reviews:  # the arms alternate: uncertain, random seeds, per N
        for chosen in [("uncertain", n, 0)] + [("random", n, s) for s in range(args.random_seeds)]:
            arms.append(arm(base, args.work, chosen, context))
            print(json.dumps(arms[-1]), flush=True)
    summary = {}
    for n in args.reviews:
        mine = next(a for a in arms if a["sample"] == "uncertain" and a["reviewed"] == n)
        random_gains = [a["gain_per_image"] for a in arms if a["sample"] == "random" and a["reviewed"] == n]  # fmt: skip
        median = statistics.median(random_gains)
        summary[str(n)] = {
            "uncertain_gain_per_image": mine["gain_per_image"],
            "random_gain_per_image_median": median,
            "ratio": round(mine["gain_per_image"] / median, 3) if median > 0 else None,
        }
    payload = {
        "run_id": run_id, "scenes": args.scenes, "map50_iteration0": map50_0,
        "student": "trained, adds boxes" if args.student else "trained, emits nothing (min_score 0.99)",
        "holdout": 0.0, "goal": "uncertain gain per reviewed image >= 1.5 x random's",
        "summary": summary, "arms": arms,
    }  # fmt: skip
    path = save_result("review_gain", payload, run_id, latest=not args.experiment)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
