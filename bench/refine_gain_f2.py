"""Does the Florence-2 student improve the labels? (``make bench-refine-f2``, or
``.venv/bin/python bench/refine_gain_f2.py [--scenes N] [--epochs E] [--width W]``).

On ``N`` generated scenes with exact ground truth (``engine.scenes``):

1. iteration 0: ``fld run`` with the offline default config (SSD, RapidOCR, template
   captions, phrases, GrabCut);
2. iterations 1 and 2: ``fld refine --iterations 2`` with ``refine.student.kind:
   florence2``: a Florence-2 student fine-tuned on the previous iteration's export (every
   task), whose boxes, OCR lines, captions and grounded phrases join the specialists'.

Each iteration is measured with ``pipelines.evaluate`` (box mAP50 over kept object
regions; OCR exact match and character error rate over kept OCR lines) and, for
captions, the share of ground-truth objects whose category the kept brief caption names
(per caption source: the template captioner and the student).

The student here is small and trained briefly on CPUs: a Florence-2 of the engine's
architecture at a tiny width (``tests/fixtures/hf_tiny.py``, its tokenizer learned from
iteration 0's texts), from random initialisation, not a pretrained checkpoint; its figures
say whether the loop works, not what Florence-2-base would do. With a GPU and the hub
model, the same benchmark is::

    .venv/bin/python bench/refine_gain_f2.py --model florence-community/Florence-2-base \\
        --scenes 500 --epochs 5 --device cuda

Writes ``bench/results/refine_gain_f2.json`` (and its history copy).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from results_store import new_run_id, save_result  # noqa: E402

FLD = ROOT / ".venv" / "bin" / "fld"


def fld(*args: str) -> None:
    subprocess.run([str(FLD), *args], check=True)


def tiny_student(corpus: Path, folder: Path, width: int) -> Path:
    """A Florence-2 of width ``width`` whose tokenizer learned iteration 0's texts."""
    from pipelines.exports import export_corpus
    from tests.fixtures.hf_tiny import build_tiny_florence2

    export_corpus(corpus, "florence2", folder / "export", iteration=0)
    lines = [json.loads(line) for line in (folder / "export" / "florence2.jsonl").open()]
    words = tuple(re.sub(r"<loc_\d+>", " ", line["target"]) for line in lines)
    return build_tiny_florence2(
        folder / "model", sentences=words, width=width, image_size=96, expressive=False
    )


def named_share(corpus: Path, gt_path: Path, iteration: int) -> dict[str, float]:
    """Per caption source: the share of all ground-truth objects (text lines excluded) of
    the corpus's images whose category name (or its plural) that source's kept brief
    caption of the image contains; an image without one names none of its objects."""
    from engine.query import connect

    gt = json.loads(gt_path.read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    files = {image["id"]: image["file_name"] for image in gt["images"]}
    objects: dict[str, list[str]] = {name: [] for name in files.values()}
    for annotation in gt["annotations"]:
        if "text" not in annotation:
            objects[files[annotation["image_id"]]].append(names[annotation["category_id"]])
    connection = connect(corpus, [iteration])
    uris = [uri for (uri,) in connection.execute("SELECT uri FROM images").fetchall()]
    total = sum(len(objects.get(Path(uri).name, [])) for uri in uris)
    rows = connection.execute(
        "SELECT i.uri, t.source, string_agg(lower(t.text), ' ') FROM texts t "
        "JOIN images i USING (image_id) WHERE t.kept AND t.granularity = 'brief' GROUP BY ALL"
    ).fetchall()
    sources = {source for _, source, _ in connection.execute(
        "SELECT NULL, source, NULL FROM texts WHERE granularity = 'brief'").fetchall()}  # fmt: skip
    named = dict.fromkeys(sources, 0)
    for uri, source, text in rows:
        truth = objects.get(Path(uri).name, [])
        named[source] += sum(1 for name in truth if name in text or f"{name}s" in text)
    return {source: round(hits / total, 3) for source, hits in sorted(named.items()) if total}


def measure(corpus: Path, gt: Path) -> list[dict]:
    from pipelines.evaluate import evaluate_corpus

    evaluated = evaluate_corpus(corpus, gt, write=False)
    return [
        {
            "iteration": iteration,
            "box_map50": evaluated[iteration]["objects"].get("map50"),
            "ocr_exact_match": evaluated[iteration]["ocr"].get("exact_match"),
            "ocr_cer": evaluated[iteration]["ocr"].get("cer"),
            "brief_caption_names_gt_objects": named_share(corpus, gt, iteration),
        }
        for iteration in sorted(evaluated)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=96, help="tiny student's width")
    parser.add_argument("--model", help="a Florence-2 hub id or folder instead of the tiny one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, help="work folder to keep")
    parser.add_argument(
        "--measure-only", type=Path, metavar="RESULT_JSON",
        help="only measure the corpus a run left in --keep; RESULT_JSON is that run's file "
        "(its timings and students are carried over)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from engine.scenes import generate_scenes

    if args.measure_only:
        earlier = json.loads(args.measure_only.read_text())
        corpus, gt = args.keep / "corpus", args.keep / "scenes" / "annotations.json"
        result = {**earlier, "table": measure(corpus, gt), "measured_again_from": earlier["run_id"]}
        print(json.dumps(result["table"], indent=2))
        print(f"wrote {save_result('refine_gain_f2', result, new_run_id())}")
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="fld-refine-f2-"))
    gt = generate_scenes(work / "scenes", args.scenes, seed=0)
    corpus = work / "corpus"
    began = time.perf_counter()
    fld("run", str(work / "scenes" / "images"), "--out", str(corpus), "--quiet")
    model = args.model or str(tiny_student(corpus, work / "student", args.width))
    fld(
        "refine", str(corpus), "--iterations", "2", "--quiet",
        "--set", "refine.student.kind=florence2",
        "--set", f"refine.student.florence2.model={model}",
        "--set", f"refine.student.florence2.epochs={args.epochs}",
        "--set", f"refine.student.florence2.device={args.device}",
        "--set", "refine.student.florence2.learning_rate=0.001",
        "--set", "refine.student.florence2.warmup_steps=20",
        "--set", "refine.student.florence2.max_new_tokens=128",
    )  # fmt: skip
    seconds = time.perf_counter() - began
    table = measure(corpus, gt)
    students = {
        k: json.loads((corpus / f"iteration={k}" / "run.json").read_text())["student"]
        for k in (1, 2)
    }
    result = {
        "scenes": args.scenes,
        "student": {
            "model": args.model or f"tiny Florence-2, width {args.width}, random init",
            "epochs": args.epochs,
            "device": args.device,
        },  # fmt: skip
        "table": table,
        "students": {
            k: {
                key: s.get(key)
                for key in (
                    "steps",
                    "loss_first",
                    "loss_last",
                    "val_loss",
                    "examples_per_task",
                    "train_seconds_last_run",
                )
            }
            for k, s in students.items()
        },  # fmt: skip
        "seconds_total": round(seconds, 1),
    }
    print(json.dumps(table, indent=2))
    print(f"wrote {save_result('refine_gain_f2', result, new_run_id())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
