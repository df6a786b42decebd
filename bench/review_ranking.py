"""How much can choosing what to review pay, at most? (``.venv/bin/python
bench/review_ranking.py [--scenes N] [--scene-seeds 7 11 ...] [--reviews 10 20 40]
[--random-seeds 20]``).

``bench/review_gain.py`` measures the gain of reviewing N images through ``fld refine``
(minutes per arm). This bench asks the question behind its goal in seconds, with no
refinement: on iteration 0 of the same generated scenes (``REGIONS_ONLY`` of
``bench/ssd_student_gain.py``; the first scene set is ``review_gain.py``'s), a reviewed
image's kept object regions are replaced by its ground truth (score 1.0, what people's
boxes become: ``human@1`` rows that win fusion, the models' boxes dropped), and the
corpus's mAP50 is measured again (``pipelines.evaluate.evaluate_objects``). The ways to
choose N images:

- ``fld review``: ``pipelines.review.choose_images`` (uncertain), as ``fld review`` sends;
- ``most errors (oracle)``: the images with the most false positives plus false negatives
  at IoU 0.5 against the ground truth, which no ranking without ground truth can beat at
  finding errors;
- ``random``: ``--random-seeds`` seeded random choices;
- two variants tried and not adopted (``variant_rankings``).

Reported per N and per scene set (``--scene-seeds``: each seed a different set of
``--scenes`` scenes and its own iteration 0): the mAP50 gain per reviewed image of each, and
its ratio to random's, the mean over ``--random-seeds`` random choices (the expected gain
of a random choice; the median is kept beside it). Across the scene sets: the mean of each
ratio per N and over every (set, N). Issue 25's goal: ``fld review``'s ratio >= 1.5.
Writes ``bench/results/review_ranking.json`` and its history copy.
"""

from __future__ import annotations

import argparse
import json
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


def measure(args: argparse.Namespace, scene_seed: int) -> dict:
    """One scene set's figures (see the module docstring)."""
    from engine.corpus import Corpus
    from engine.query import connect
    from pipelines.evaluate import evaluate_objects, kept_regions, load_ground_truth, match_images
    from pipelines.review import ReviewOptions, choose_images

    gt_path, base = scenes_and_iteration0(args.work, args.scenes, scene_seed)
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
    ranked = choose_images(Corpus(base), 0, ReviewOptions(limit=len(ids)))
    rankings = {
        "fld_review": [c["image_id"] for c in ranked],
        "most_errors_oracle": sorted(ids, key=lambda i: (-error_count[i], i)),
        **variant_rankings(ranked, rows, ids),
    }
    base_map50 = map50(set())
    summary = {}
    for n in args.reviews:
        random_gains = []
        for seed in range(args.random_seeds):
            shuffled = ids[:]
            random.Random(seed).shuffle(shuffled)
            random_gains.append((map50(set(shuffled[:n])) - base_map50) / n)
        random_gain = statistics.mean(random_gains)
        row = {"random_gain_per_image_mean": round(random_gain, 6),
               "random_gain_per_image_median": round(statistics.median(random_gains), 6),
               "random_gain_per_image": [round(g, 6) for g in random_gains]}  # fmt: skip
        for name, ranking in rankings.items():
            gain = (map50(set(ranking[:n])) - base_map50) / n
            row[f"{name}_gain_per_image"] = round(gain, 6)
            row[f"{name}_ratio"] = round(gain / random_gain, 3) if random_gain else None
        summary[str(n)] = row
        print(f"scene seed {scene_seed}, N={n}: fld review {row['fld_review_ratio']}x random, oracle {row['most_errors_oracle_ratio']}x", flush=True)  # fmt: skip
    return {
        "map50_iteration0": round(base_map50, 6),
        "images": len(ids),
        "mean_errors_per_image": round(statistics.mean(error_count.values()), 3),
        "summary": summary,
    }


def variant_rankings(ranked: list[dict], rows: list[tuple], ids: list[str]) -> dict:
    """Two rankings tried instead of ``fld review``'s and not adopted, kept so that their
    figures have a file: ``no_single_source`` (its points without the single-source ones:
    with the SSD as the only detector every kept box is single-source) and
    ``inverse_label_frequency`` (each kept object box counts 1 / the number of kept boxes
    of its label in the iteration: mAP50 weighs every class alike)."""
    from collections import Counter

    parts = {entry["image_id"]: entry for entry in ranked}

    def no_single(image_id: str) -> tuple:
        entry = parts.get(image_id, {})
        return (-(entry.get("uncertainty", 0) - entry.get("single_source", 0)), -entry.get("uncertainty", 0), image_id)  # fmt: skip

    per_label = Counter(row[1] for row in rows)
    weight = Counter()
    for row in rows:
        weight[row[0]] += 1 / per_label[row[1]]
    return {
        "no_single_source": sorted(ids, key=no_single),
        "inverse_label_frequency": sorted(ids, key=lambda i: (-weight[i], i)),
    }


def across(per_seed: dict, reviews: list[int]) -> dict:
    """Each ratio's mean over the scene sets, per N and over every (set, N), and its lowest
    and highest cell."""
    result = {}
    names = next(iter(per_seed.values()))["summary"][str(reviews[0])]
    for name in [key for key in names if key.endswith("_ratio")]:
        cells = {n: [figures["summary"][str(n)][name] for figures in per_seed.values()] for n in reviews}  # fmt: skip
        every = [value for values in cells.values() for value in values]
        result[name] = {
            **{str(n): round(statistics.mean(values), 3) for n, values in cells.items()},
            "all": round(statistics.mean(every), 3),
            "lowest": min(every),
            "highest": max(every),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--scene-seeds", type=int, nargs="+", default=[SCENE_SEED])
    parser.add_argument("--reviews", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--random-seeds", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fld-review-ranking"))
    args = parser.parse_args()
    started = time.perf_counter()
    per_seed = {str(seed): measure(args, seed) for seed in args.scene_seeds}
    result = {
        "scenes": args.scenes,
        "scene_seeds": args.scene_seeds,
        "random_seeds": args.random_seeds,
        "ratio_to": "the mean gain per image of the random choices",
        "per_scene_seed": per_seed,
        "across_scene_seeds": across(per_seed, args.reviews),
        "goal": "fld review's gain per reviewed image >= 1.5 x random's",
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result["across_scene_seeds"], indent=2))
    print(f"kept: {save_result('review_ranking', result, new_run_id())}")


if __name__ == "__main__":
    main()
