"""The ``yolo`` export: the layout, images from files, tar members and Parquet rows, and
ultralytics training on it for one epoch (a tiny YOLOv8n from its YAML, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from engine.query import connect
from pipelines.exports import export_corpus
from tests.fixtures.common import run_fld
from tests.fixtures.export_helpers import demo_corpus, write_synthetic_corpus
from tests.fixtures.reviews import reviewed_box, write_reviews


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_corpus(tmp_path_factory)


def read_labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def test_layout_from_files_tars_and_parquet_rows(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", tmp_path / "inputs")
    out = tmp_path / "yolo"
    summary = export_corpus(corpus, "yolo", out, val_fraction=0.7)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog", 2: "text"}
    assert data["path"] == str(out.resolve())
    listed = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    # "aaa..." (0.667 of the hash range) goes to val; "bbb..." (0.733), "ccc..." to train
    assert (out / "val.txt").read_text().split() == ["./images/000001-aaaaaaaaaaaa.png"]
    assert summary["counts"]["train"] == 2 and summary["counts"]["val"] == 1
    assert sorted(listed) == sorted(f"./images/{p.name}" for p in (out / "images").iterdir())
    plain = out / "images" / "bus-bbbbbbbbbbbb.jpg"
    assert plain.is_symlink()  # a plain file is linked, a tar member and a Parquet row written
    assert not (out / "images" / "000001-aaaaaaaaaaaa.png").is_symlink()
    from_parquet = out / "images" / "photos_row_0-cccccccccccc.jpg"
    assert Image.open(from_parquet).size == (1280, 720)

    labels = read_labels(out / "labels" / "bus-bbbbbbbbbbbb.txt")
    assert [int(line[0]) for line in labels] == [1, 0, 0, 2, 2]  # dog, cat, cat, two OCR lines
    dog = labels[0]
    assert dog[1:] == pytest.approx(
        [0.20, 0.325, 0.30, 0.45], abs=1e-5
    )  # cx cy w h of (5,10)-(35,55)%
    assert all(0 <= v <= 1 for line in labels for v in line[1:])

    again = run_fld("export", str(corpus), "--format", "yolo", "--out", str(out), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    copied = run_fld("export", str(corpus), "--format", "yolo", "--out", str(out),
                     "--overwrite", "--copy-images")  # fmt: skip
    assert "3 images" in copied.stdout and not plain.is_symlink() and plain.is_file()


def test_ultralytics_trains_one_epoch_on_the_demo_export(demo, tmp_path):
    out = tmp_path / "yolo"
    # --val-fraction 0: val.txt repeats train.txt, so all three images train
    run_fld("export", str(demo), "--format", "yolo", "--out", str(out), "--val-fraction", "0")
    kept = (
        connect(demo)
        .execute("SELECT count(*) FROM regions WHERE kept AND kind IN ('object', 'ocr')")
        .fetchall()[0][0]
    )

    from engine.offline import prepare_ultralytics

    prepare_ultralytics()  # before ultralytics is imported: it would fetch a font
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(out / "data.yaml"),
        epochs=1,
        imgsz=64,
        batch=4,
        device="cpu",
        workers=0,
        plots=False,
        amp=False,
        project=str(tmp_path / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    trainer = model.trainer
    assert trainer.epoch == 0 and (tmp_path / "runs" / "train" / "weights" / "last.pt").is_file()
    dataset = trainer.train_loader.dataset
    assert len(dataset.labels) == 3
    # every exported box reached the trainer
    assert sum(len(label["bboxes"]) for label in dataset.labels) == kept
    assert model.names == yaml.safe_load((out / "data.yaml").read_text())["names"]


def test_the_yolo_student_trains_on_peoples_labels(demo, tmp_path):
    """``fld refine``'s YOLO student of iteration 1 with a reviews snapshot: on the reviewed
    image its training labels are people's (a class only they gave included), the hold-out
    image is not trained on, and ultralytics trains on that export for one epoch."""
    import shutil

    from engine.corpus import Corpus
    from pipelines.config import load_config
    from pipelines.refine import reviews_snapshot, train_student

    corpus_root = tmp_path / "corpus"
    shutil.copytree(demo, corpus_root)
    corpus = Corpus(corpus_root)
    images = connect(corpus_root).execute("SELECT image_id, uri FROM images ORDER BY uri").fetchall()  # fmt: skip
    by_name = {uri.rsplit("/", 1)[1]: image_id for image_id, uri in images}
    reviewed, held_out = by_name["bus.jpg"], by_name["zidane.jpg"]
    rows = [
        reviewed_box(
            image_id, "giraffe", (10, 20, 300, 400), holdout=image_id == held_out, task_id=n
        )
        for n, image_id in enumerate((reviewed, held_out))
    ]
    write_reviews(reviews_snapshot(corpus, 1), rows)
    config = load_config(None, [
        "refine.student.kind=yolo", "refine.student.model=fld-mobilenetv2-yolo.yaml",
        "refine.student.epochs=1", "refine.student.image_size=64", "refine.student.val_fraction=0",
    ])  # fmt: skip
    weights = train_student(corpus, 1, config, show_progress=False, parent=0)
    assert weights.exists()
    data = weights.parent / "data"
    names = yaml.safe_load((data / "data.yaml").read_text())["names"]
    assert "giraffe" in names.values()
    labels = {p.name.rsplit("-", 1)[0]: read_labels(p) for p in (data / "labels").iterdir()}
    assert "zidane" not in labels  # hold-out: it judges the student, it does not train it
    giraffe = next(k for k, v in names.items() if v == "giraffe")
    assert [row[0] for row in labels["bus"]] == [giraffe]  # the models' boxes replaced
    assert "sign" in labels  # not reviewed: trained on with the models' labels
    export = json.loads((data / "export.json").read_text())
    assert export["reviewed_images"] == 1 and export["holdout_skipped"] == 1
