"""Does the SSD student refine, and does it forget? (``.venv/bin/python
bench/ssd_student_gain.py [--scenes N] [--unseen N] [--group A] [--set KEY=VALUE ...]``).

Two scene sets of ``engine.scenes`` that share no photo (``PHOTO_GROUPS``): the corpus
(``--scenes`` scenes of ``--group``'s photos) and the unseen set (``--unseen`` scenes of
the other group's photos, another seed).

1. **iteration 0** of both: ``ssd_coco`` + the default region filters (in process,
   ``run.executor=local``; no OCR, captions, phrases or masks: they do not change the
   object regions measured here);
2. **iteration 1** of the corpus: ``fld refine``'s loop with ``refine.student.kind: ssd``
   (the student trained on the corpus's iteration 0, fused with the replayed specialist,
   filtered); iteration 2 with ``--iterations 2``;
3. **iteration 1 of the unseen set**: the same ensemble (the corpus's student, the unseen
   set's replayed specialist rows, the same filters) annotates the unseen scenes.

Measured against ground truth (``pipelines.evaluate``: mAP50, mAP50-95, precision and
recall at IoU 0.5 of kept object regions): (a) the corpus, iteration 0 against 1 (and 2);
(b) the unseen set, iteration 0 against 1; and every object row that the student alone
and the teacher alone emitted (``ssd_coco@2``, ``student_ssd_i1@2``; kept by the filters
or not), on both sets. Plus training time and its share of the iteration's wall time.

``--set`` overrides go to the config (``refine.student.ssd.epochs=16``); ``--tag`` names the
arm. Scenes and iteration 0 are kept in ``--work`` and reused by later arms. Writes
``bench/results/ssd_student_gain.json`` (and its history copy); with ``--experiment``,
the history copy only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from results_store import new_run_id, save_result  # noqa: E402

REGIONS_ONLY = [
    "annotators=[{name: ssd_coco}]",
    "filters.text_complexity.enabled=false",
    "filters.phrase_confidence.enabled=false",
    "run.executor=local",
    "run.shard_size=32",
    "refine.student.kind=ssd",
    "refine.student.ssd.threads=1",
]
TEACHER = "ssd_coco@2"
# Per student kind (``--set refine.student.kind=yolo``): its weights file and its source
# in iteration 1.
STUDENT_FILES = {"ssd": "student.safetensors", "yolo": "student.pt", "florence2": "florence2/model"}
STUDENT_SOURCES = {
    "ssd": "student_ssd_i1@2",
    "yolo": "student_i1@1",
    "florence2": "student_f2_i1@1",
}
# The Florence-2 student's summary (``train.json``) names its figures otherwise.
SUMMARY_FILES = {"ssd": "student.json", "yolo": "student.json", "florence2": "florence2/train.json"}
# With ``refine.student.kind=florence2`` and no ``refine.student.florence2.model``: a tiny
# Florence-2 from random weights (``bench/refine_gain_f2.py``), its tokenizer learned from
# iteration 0's export, with the settings that bench uses; its figures say whether the
# loop holds on a CPU, not what Florence-2-base would do.
TINY_FLORENCE2 = [
    "refine.student.florence2.learning_rate=0.001",
    "refine.student.florence2.warmup_steps=20",
    "refine.student.florence2.max_new_tokens=128",
    "refine.student.florence2.epochs=10",
]


def other_group(group: str) -> str:
    from engine.scenes import PHOTO_GROUPS

    return next(name for name in PHOTO_GROUPS if name != group)


def base_corpora(work: Path, args) -> dict[str, dict]:
    """Scenes and iteration 0 of the corpus and the unseen set, made once per ``work``."""
    from engine.scenes import generate_scenes
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config

    sets = {
        "corpus": {"group": args.group, "n": args.scenes, "seed": 0},
        "unseen": {"group": other_group(args.group), "n": args.unseen, "seed": 1},
    }
    for name, spec in sets.items():
        folder = work / f"{name}-{spec['group']}-{spec['n']}-seed{spec['seed']}"
        spec["gt"] = folder / "scenes" / "annotations.json"
        spec["images"] = folder / "scenes" / "images"
        spec["base"] = folder / "base"
        if not spec["gt"].exists():
            generate_scenes(folder / "scenes", spec["n"], seed=spec["seed"], group=spec["group"])
        started = time.perf_counter()
        annotate_corpus(
            load_config(None, REGIONS_ONLY), str(spec["images"]), str(spec["base"]), False
        )
        spec["iteration0_seconds"] = round(time.perf_counter() - started, 1)
    return sets


def source_rows(corpus: Path, gt_path: Path, iteration: int, source: str) -> dict:
    """mAP50, mAP50-95, P and R at 0.5 of every object row ``source`` emitted."""
    from refine_gain import source_against_ground_truth

    return source_against_ground_truth(corpus, gt_path, iteration, source)


def measured(result: dict) -> dict:
    objects = result["objects"]
    keys = ("map50", "map50_95", "precision", "recall", "detections")
    return {key: objects.get(key) for key in keys}


def run_arm(sets: dict, arm: Path, overrides: list[str], iterations: int) -> dict:
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config
    from pipelines.evaluate import evaluate_corpus
    from pipelines.refine import iteration_config, refine_corpus

    corpus, unseen = arm / "corpus", arm / "unseen"
    for target, spec in ((corpus, sets["corpus"]), (unseen, sets["unseen"])):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(spec["base"], target)
    config = load_config(None, REGIONS_ONLY + overrides)
    if config.refine.student.kind == "florence2" and not any(
        o.startswith("refine.student.florence2.model=") for o in overrides
    ):
        from refine_gain_f2 import tiny_student

        model = tiny_student(corpus, arm / "tiny-florence2", width=96)
        overrides = [*TINY_FLORENCE2, *overrides, f"refine.student.florence2.model={model}"]
        config = load_config(None, REGIONS_ONLY + overrides)
    started = time.perf_counter()
    summaries = refine_corpus(corpus, iterations, config, show_progress=False)
    refine_seconds = time.perf_counter() - started
    students = {}
    kind = config.refine.student.kind
    for k in range(1, iterations + 1):
        summary_path = corpus / "models" / f"iteration={k}" / SUMMARY_FILES[kind]
        summary = json.loads(summary_path.read_text())
        students[k] = {
            key: summary.get(key)
            for key in (
                "images",
                "images_with_labels",
                "boxes",
                "ignored_boxes",
                "classes",
                "steps",
                "loss_per_epoch",
                "train_seconds_last_run",
                "trained_classes",
            )
        }
        # The YOLO student's summary names its training time and data otherwise.
        students[k]["train_seconds_last_run"] = summary.get("train_seconds_last_run", summary.get("train_seconds"))  # fmt: skip
        for key in ("loss_first", "loss_last", "val_loss", "examples_per_task"):  # Florence-2's
            if key in summary:
                students[k][key] = summary[key]
        if "data" in summary:
            students[k]["data"] = summary["data"]
        students[k]["annotate_seconds"] = round(summaries[k - 1].wall_seconds, 1)
    weights = corpus / "models" / "iteration=1" / STUDENT_FILES[kind]
    started = time.perf_counter()
    annotate_corpus(
        iteration_config(config, corpus_of(unseen), 1, weights),
        str(sets["unseen"]["images"]),
        str(unseen),
        False,
        {"student_from": str(weights)},
    )
    unseen_seconds = time.perf_counter() - started
    on_corpus = evaluate_corpus(corpus, sets["corpus"]["gt"], write=False)
    on_unseen = evaluate_corpus(unseen, sets["unseen"]["gt"], write=False)
    result = {
        "corpus": {f"iteration {k}": measured(v) for k, v in on_corpus.items()},
        "unseen": {f"iteration {k}": measured(v) for k, v in on_unseen.items()},
        "alone": {
            name: {
                "teacher": source_rows(path, spec["gt"], 1, TEACHER),
                "student": source_rows(path, spec["gt"], 1, STUDENT_SOURCES[kind]),
            }
            for name, path, spec in (
                ("corpus", corpus, sets["corpus"]),
                ("unseen", unseen, sets["unseen"]),
            )
        },
        "students": students,
        "seconds": {
            "refine": round(refine_seconds, 1),
            "unseen_iteration_1": round(unseen_seconds, 1),
        },
    }
    result["headline"] = headline(result, iterations)
    result["kind"] = kind
    return result


def student_settings(summary_path: Path) -> dict:
    summary = json.loads(summary_path.read_text())
    if "settings" in summary:
        return summary["settings"]
    keys = ("model", "epochs", "image_size", "learning_rate", "tasks")
    return {key: summary.get(key) for key in keys if key in summary}


def corpus_of(path: Path):
    from engine.corpus import Corpus

    return Corpus(path)


def headline(result: dict, iterations: int) -> dict:
    def gap(table: dict, key: str, later: int) -> float | None:
        first, then = table["iteration 0"][key], table[f"iteration {later}"][key]
        return None if first is None or then is None else round(then - first, 4)

    alone = result["alone"]["unseen"]
    student, teacher = alone["student"]["map50"], alone["teacher"]["map50"]
    first = result["students"][1]
    return {
        "corpus_map50_gain_it1": gap(result["corpus"], "map50", 1),
        "corpus_precision_change_it1": gap(result["corpus"], "precision", 1),
        "corpus_map50_gain_it2": gap(result["corpus"], "map50", 2) if iterations > 1 else None,
        "unseen_map50_change_it1": gap(result["unseen"], "map50", 1),
        "unseen_student_over_teacher": round(student / teacher, 4) if teacher else None,
        "train_seconds": first["train_seconds_last_run"],
        "train_share_of_iteration": round(
            first["train_seconds_last_run"]
            / (first["train_seconds_last_run"] + first["annotate_seconds"]),
            3,
        ),
    }


def print_result(tag: str, result: dict) -> None:
    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(f"\n[{tag}]")
    for name in ("corpus", "unseen"):
        for stage, row in result[name].items():
            print(
                f"  {name:<7}{stage:<13} mAP50 {number(row['map50'])}  mAP50-95 "
                f"{number(row['map50_95'])}  P {number(row['precision'])}  R {number(row['recall'])}"
            )
        alone = result["alone"][name]
        print(
            f"  {name:<7}alone        teacher {number(alone['teacher']['map50'])}  "
            f"student {number(alone['student']['map50'])}"
        )
    print(f"  headline {json.dumps(result['headline'])}")


def main() -> None:
    from engine.offline import apply_offline_env

    apply_offline_env()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=120, help="corpus scenes")
    parser.add_argument("--unseen", type=int, default=80, help="scenes of the other photos")
    parser.add_argument("--group", default="A", help="the corpus's photo group")
    parser.add_argument("--iterations", type=int, default=1, choices=(1, 2))
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssd-student-gain"))
    parser.add_argument("--experiment", action="store_true", help="history copy only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = base_corpora(args.work, args)
    started = time.perf_counter()
    result = run_arm(sets, args.work / "arms" / args.tag, args.set, args.iterations)
    payload = {
        "tag": args.tag,
        "overrides": args.set,
        "corpus_scenes": {k: sets["corpus"][k] for k in ("group", "n", "seed")},
        "unseen_scenes": {k: sets["unseen"][k] for k in ("group", "n", "seed")},
        "threads": 1,
        "arm_seconds": round(time.perf_counter() - started, 1),
        # The SSD student's summary records its settings; the YOLO student's, its model and epochs.
        "student_settings": student_settings(
            args.work
            / "arms"
            / args.tag
            / "corpus"
            / "models"
            / "iteration=1"
            / SUMMARY_FILES[result["kind"]]
        ),  # fmt: skip
        **result,
    }
    save_result("ssd_student_gain", payload, new_run_id(), latest=not args.experiment)
    print_result(args.tag, result)


if __name__ == "__main__":
    main()
