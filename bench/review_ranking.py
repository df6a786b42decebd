"""How much can choosing what to review pay, at most? (``.venv/bin/python
bench/review_ranking.py [--scenes N] [--reviews 10 20 40] [--random-seeds 5]``).

``bench/review_gain.py`` measures the gain of reviewing N images through ``fld refine``
(minutes per arm). This bench asks the question behind its goal in seconds, with no
refinement: on iteration 0 of the same generated scenes (``REGIONS_ONLY`` of
``bench/ssd_student_gain.py``, the scenes of ``review_gain.py``'s seed), a reviewed
image's kept object regions are replaced by its ground truth (score 1.0, what people's
boxes become: ``human@1`` rows that win fusion, the models' boxes dropped), and the
corpus's mAP50 is measured again (``pipelines.evaluate.evaluate_objects``). Three ways to
choose N images:

- ``fld review``: ``pipelines.review.choose_images`` (uncertain), as ``fld review`` sends;
- ``most errors (oracle)``: the images with the most false positives plus false negatives
  at IoU 0.5 against the ground truth, which no ranking without ground truth can beat at
  finding errors;
- ``random``: the median over ``--random-seeds`` seeds.

Reported per N: the mAP50 gain per reviewed image of each, and its ratio to random's
(issue 25's goal: ``fld review``'s ratio >= 1.5). Writes ``bench/results/review_ranking.json``
and its history copy.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from results_store import new_run_id, save_result  # noqa: E402
from review_gain import SCENE_SEED, scenes_and_iteration0  # noqa: E402


def corrected_rows(rows: list[tuple], truths_of: dict, reviewed: set[str]) -> list[tuple]:
    """Kept object rows (``pipelines.evaluate.kept_regions``' shape) with each reviewed
    image's rows replaced by its ground truth."""
    kept = [row for row in rows if row[0] not in reviewed]
    return kept + [
        (image_id, name, 1.0, *truth["box"])
        for image_id in sorted(reviewed)
        for name, truth in truths_of[image_id]
    ]


def main() -> None:
    from engine.corpus import Corpus
    from engine.query import connect
    from pipelines.evaluate import evaluate_objects, kept_regions, load_ground_truth, match_images
    from pipelines.review import ReviewOptions, choose_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--reviews", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fld-review-ranking"))
    args = parser.parse_args()
    started = time.perf_counter()
    gt_path, base = scenes_and_iteration0(args.work, args.scenes)
    gt = load_ground_truth(gt_path)
    connection = connect(base, [0])
    try:
        matched, _ = match_images(connection, gt)
        rows = kept_regions(connection, matched)["object"]
    finally:
        connection.close()
    truths_of = {  # corpus image id -> [(category name, GT annotation)]
        image_id: [(gt.categories[int(a["category_id"])], a) for a in gt.objects.get(image["id"], [])]
        for image_id, image in matched.items()
    }  # fmt: skip

    def map50(reviewed: set[str]) -> float:
        return evaluate_objects(gt, matched, corrected_rows(rows, truths_of, reviewed))["map50"]

    def errors(image_id: str) -> int:
        alone = {image_id: matched[image_id]}
        result = evaluate_objects(gt, alone, [row for row in rows if row[0] == image_id])
        return result["fp"] + result["fn"]

    ids = sorted(matched)
    error_count = {image_id: errors(image_id) for image_id in ids}
    by_errors = sorted(ids, key=lambda i: (-error_count[i], i))
    chosen = [c["image_id"] for c in choose_images(Corpus(base), 0, ReviewOptions(limit=len(ids)))]  # fmt: skip
    base_map50 = map50(set())
    summary = {}
    for n in args.reviews:
        random_gains = []
        for seed in range(args.random_seeds):
            shuffled = ids[:]
            random.Random(seed).shuffle(shuffled)
            random_gains.append((map50(set(shuffled[:n])) - base_map50) / n)
        random_gain = statistics.median(random_gains)
        row = {"random_gain_per_image_median": round(random_gain, 6),
               "random_gain_per_image": [round(g, 6) for g in random_gains]}  # fmt: skip
        for name, ranking in (("fld_review", chosen), ("most_errors_oracle", by_errors)):
            gain = (map50(set(ranking[:n])) - base_map50) / n
            row[f"{name}_gain_per_image"] = round(gain, 6)
            row[f"{name}_ratio"] = round(gain / random_gain, 3) if random_gain else None
        summary[str(n)] = row
        print(f"N={n}: fld review {row['fld_review_ratio']}x random, oracle {row['most_errors_oracle_ratio']}x")  # fmt: skip
    result = {
        "scenes": args.scenes,
        "scene_seed": SCENE_SEED,
        "map50_iteration0": round(base_map50, 6),
        "mean_errors_per_image": round(statistics.mean(error_count.values()), 3),
        "summary": summary,
        "goal": "fld review's gain per reviewed image >= 1.5 x random's",
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"kept: {save_result('review_ranking', result, new_run_id())}")


if __name__ == "__main__":
    main()
