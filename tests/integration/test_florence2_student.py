"""The Florence-2 student (pipelines/florence2_student.py) with a tiny Florence-2 built
offline (tests/fixtures/hf_tiny.py; its tokenizer learns the corpus's words), on a small
corpus of generated scenes made by the offline default config:

- it learns: trained on 8 images its loss falls by at least half, and on those images
  its ``<OD>`` output, parsed with the processor's own ``post_process_generation``,
  recovers at least 80% of the target boxes at IoU 0.5, and its ``<CAPTION>`` output equals
  the target for most images (an overfit check of data, targets and decoding end to end);
- ``fld train`` killed after a checkpoint resumes to the same weights as a run that was
  never killed;
- ``fld refine --iterations 1`` with the Florence-2 student runs on Ray: its rows are in
  iteration 1 under its own source, and some of its boxes are fused with a specialist's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from engine.boxes import iou_matrix
from engine.corpus import Corpus
from engine.query import connect
from engine.scenes import generate_scenes
from pipelines.config import Florence2StudentConfig, load_config
from tests.fixtures.common import BIN, run_fld, wait_for
from tests.fixtures.hf_tiny import build_tiny_florence2
from tests.fixtures.reviews import reviewed_box, write_reviews

# Only the tasks the overfit check reads: the others (dense captions, OCR, grounding,
# segmentation) are trained in the refine test.
OTHER_TASKS = [
    "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>", "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>",
]  # fmt: skip
LEFT_OUT = [  # the refine test's student trains on the others
    "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>", "<OCR>", "<REFERRING_EXPRESSION_SEGMENTATION>",
]  # fmt: skip
TRAINING = {"batch": 8, "learning_rate": 2e-3, "warmup_steps": 5, "val_fraction": 0.0,
            "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def scenes_corpus(tmp_path_factory) -> Path:
    """8 generated scenes annotated by the offline default config, in process."""
    from pipelines.annotate import annotate_corpus

    root = tmp_path_factory.mktemp("student")
    generate_scenes(root / "scenes", 8, seed=0)
    config = load_config(None, ["run.executor=local", "run.shard_size=8"])
    annotate_corpus(config, str(root / "scenes" / "images"), str(root / "corpus"), False)
    return root / "corpus"


@pytest.fixture(scope="module")
def tiny_student(scenes_corpus, tmp_path_factory) -> Path:
    """A tiny Florence-2 whose tokenizer learned the corpus's texts and labels."""
    from pipelines.exports import export_corpus

    folder = tmp_path_factory.mktemp("tiny-student")
    export_corpus(scenes_corpus, "florence2", folder / "export", iteration=0)
    lines = [json.loads(line) for line in (folder / "export" / "florence2.jsonl").open()]
    words = tuple(re.sub(r"<loc_\d+>", " ", line["target"]) for line in lines)
    return build_tiny_florence2(
        folder / "model", sentences=words, width=64, image_size=96, expressive=False
    )


@pytest.fixture(scope="module")
def overfit(scenes_corpus, tiny_student, tmp_path_factory) -> Path:
    """The tiny student trained on the 8 images' captions and objects (300 epochs of one
    batch: about a minute on one CPU core); the training folder. Deterministic on one machine
    (seeded, one thread, deterministic kernels): runs repeat exactly. Another CPU's kernels
    still round differently, so the test's thresholds leave a margin (see the test)."""
    import torch

    from pipelines.florence2_student import train_florence2

    out = tmp_path_factory.mktemp("overfit") / "train"
    settings = Florence2StudentConfig(
        model=str(tiny_student), epochs=300, task_weights=dict.fromkeys(OTHER_TASKS, 0.0),
        checkpoint_every=10_000, **TRAINING,
    )  # fmt: skip
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        train_florence2(Corpus(scenes_corpus), 0, out, settings, show_progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return out


def recovery(corpus: Corpus, model: Path, export: Path) -> dict[str, int]:
    """How much of the export's ``<CAPTION>`` and ``<OD>`` targets the model at ``model``
    reproduces on the same images: captions equal, and target boxes matched at IoU 0.5 by
    the boxes of its output (parsed with the processor's ``post_process_generation``)."""
    from PIL import Image

    from annotators.florence2_model import Florence2, ModelSource
    from annotators.hf_generation import Decoding, decode_text

    florence2 = Florence2(ModelSource(str(model)))
    lines = [json.loads(line) for line in (export / "florence2.jsonl").open()]
    counts = dict.fromkeys(("captions", "captions_equal", "targets", "recovered"), 0)
    for line in lines:
        if line["task"] not in ("<CAPTION>", "<OD>"):
            continue
        image = Image.fromarray(corpus.load_image(line["image"], 0))
        (output,) = florence2.generate(
            florence2.encode([image]), [line["task"]], Decoding(max_new_tokens=128)
        )
        if line["task"] == "<CAPTION>":
            counts["captions"] += 1
            counts["captions_equal"] += decode_text(florence2.processor, output) == line["target"]
            continue
        size = (line["width"], line["height"])
        wanted = florence2.processor.post_process_generation(
            text=line["target"], task="<OD>", image_size=size
        )["<OD>"]["bboxes"]
        found = florence2.parse(output, "<OD>", size).get("bboxes", [])
        counts["targets"] += len(wanted)
        if wanted and found:
            counts["recovered"] += int((iou_matrix(wanted, found).max(axis=1) >= 0.5).sum())
    return counts


def test_a_tiny_florence2_overfits_eight_images(scenes_corpus, tiny_student, overfit):
    """Margins: trained, the student recovered 25 of 25 boxes on the machine this test was
    written on and 19 of 25 on another CPU (same code and seed); untrained, it recovers
    almost none, which the test measures each time as its control. The bar (60 %) sits
    between the two with room on both sides."""
    corpus = Corpus(scenes_corpus)
    summary = json.loads((overfit / "train.json").read_text())
    assert summary["loss_last"] <= summary["loss_first"] / 2, summary
    assert set(summary["examples_per_task"]) == {"<CAPTION>", "<OD>"}
    trained = recovery(corpus, overfit / "model", overfit / "export")
    assert trained["captions"] == 8 and trained["targets"] >= 8
    assert trained["recovered"] >= 0.6 * trained["targets"], trained
    assert trained["captions_equal"] > trained["captions"] / 2, trained
    untrained = recovery(corpus, tiny_student, overfit / "export")
    assert untrained["recovered"] <= 0.2 * untrained["targets"], untrained
    assert untrained["captions_equal"] == 0, untrained


def train_command(corpus: Path, student: Path, out: Path) -> list[str]:
    return [
        str(BIN / "fld"), "train", str(corpus), "--out", str(out), "--quiet",
        "--set", f"refine.student.florence2.model={student}",
        "--set", "refine.student.florence2.epochs=4",
        "--set", f"refine.student.florence2.task_weights={dict.fromkeys(OTHER_TASKS, 0)}",
        "--set", "refine.student.florence2.batch=4",
        "--set", "refine.student.florence2.checkpoint_every=2",
        "--set", "refine.student.florence2.device=cpu",
        "--set", "refine.student.florence2.learning_rate=0.001",
    ]  # fmt: skip


def weights_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model" / "model.safetensors")


def test_a_killed_training_resumes_to_the_same_weights(scenes_corpus, tiny_student, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = tmp_path / "clean"
    subprocess.run(train_command(scenes_corpus, tiny_student, clean), check=True, env=env)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(scenes_corpus, tiny_student, killed), env=env, start_new_session=True
    )
    assert wait_for(lambda: (killed / "checkpoint.json").exists(), timeout=300, interval=0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "train.json").exists()  # killed before the end
    step = json.loads((killed / "checkpoint.json").read_text())["step"]
    resumed = subprocess.run(train_command(scenes_corpus, tiny_student, killed), env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((killed / "train.json").read_text())
    assert summary["steps"] == json.loads((clean / "train.json").read_text())["steps"] > step
    expected, got = weights_of(clean), weights_of(killed)
    assert expected.keys() == got.keys()
    assert all(np.array_equal(expected[k].numpy(), got[k].numpy()) for k in expected)


def test_refine_with_the_florence2_student_on_ray(ray_address, scenes_corpus, overfit, tmp_path):
    """The student starts from the overfit model (so that it knows the images' objects
    after a short training) and trains 3 epochs on objects, captions, OCR lines,
    grounding and region segmentation; one image has a person's review, which its
    training export takes in place of the models' boxes."""
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(scenes_corpus, corpus)
    reviewed, label = write_one_review(Corpus(corpus))
    started = time.time()
    run_fld(
        "refine", str(corpus), "--iterations", "1", "--address", ray_address, "--quiet",
        "--set", "run.executor=ray",
        "--set", "refine.student.kind=florence2",
        "--set", f"refine.student.florence2.model={overfit / 'model'}",
        "--set", "refine.student.florence2.epochs=3",
        "--set", f"refine.student.florence2.task_weights={dict.fromkeys(LEFT_OUT, 0)}",
        "--set", "refine.student.florence2.batch=8",
        "--set", "refine.student.florence2.learning_rate=0.001",
        "--set", "refine.student.florence2.val_fraction=0",
        "--set", "refine.student.florence2.device=cpu",
        "--set", "refine.student.florence2.max_new_tokens=96",
        timeout=900,
    )  # fmt: skip
    assert time.time() - started < 900
    connection = connect(corpus)
    source = "student_f2_i1@1"
    by_kind = dict(connection.execute(
        "SELECT kind, count(*) FROM regions WHERE iteration = 1 AND source = ? GROUP BY ALL",
        [source]).fetchall())  # fmt: skip
    assert by_kind.get("object", 0) > 0, by_kind
    texts = connection.execute(
        "SELECT count(*) FROM texts WHERE iteration = 1 AND source = ?", [source]
    ).fetchall()[0][0]
    assert texts > 0
    fused = connection.execute(
        "SELECT count(*) FROM regions WHERE iteration = 1 AND n_sources = 2 "
        "AND list_contains(sources, ?)", [source]
    ).fetchall()[0][0]  # fmt: skip
    assert fused > 0
    run_info = json.loads((corpus / "iteration=1" / "run.json").read_text())
    student = run_info["student"]
    assert student["kind"] == "florence2" and student["trained_on_iteration"] == 0
    # It ran every task it was trained on: regions, captions, grounding, segmentation.
    steps = [a["name"] for a in run_info["config"]["annotators"]
             if a.get("source_name") == "student_f2_i1"]  # fmt: skip
    assert sorted(steps) == ["florence2_regions", "florence2_segmenter", "hf_captioner",
                             "hf_grounder"]  # fmt: skip
    # The reviewed image trained the student with the person's box alone.
    export = corpus / "models" / "iteration=1" / "florence2" / "export"
    assert json.loads((export / "export.json").read_text())["reviewed_images"] == 1
    lines = [json.loads(line) for line in (export / "florence2.jsonl").open()]
    [detection] = [x for x in lines if x["image_id"] == reviewed and x["task"] == "<OD>"]
    assert (
        detection["target"].startswith(f"{label}<loc_") and detection["target"].count("<loc_") == 4
    )


def write_one_review(corpus: Corpus) -> tuple[str, str]:
    """A person's review of the first image (one added box of a label the tiny student's
    tokenizer knows, not hold-out) in the corpus's reviews table, as ``fld import-reviews``
    writes it; returns the image's id and the label."""
    from engine.reviews import reviews_path

    connection = connect(corpus.root)
    [(image_id,)] = connection.execute("SELECT min(image_id) FROM images").fetchall()
    [(label,)] = connection.execute("SELECT min(label) FROM regions WHERE kept AND kind = 'object'").fetchall()  # fmt: skip
    write_reviews(reviews_path(corpus), [reviewed_box(image_id, label, (5, 5, 60, 50))])
    return image_id, label
