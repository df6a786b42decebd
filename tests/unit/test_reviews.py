"""People in the loop without a server: verdicts from Label Studio's recorded answers
(tests/fixtures/label_studio, recorded from a 1.23.2 server), the client's handling of
tokens and failures against recorded responses, the human-review filter, hold-out
splits, idempotent merges, and which iteration a corpus reads by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.corpus import Corpus
from engine.label_studio import LabelStudioClient, LabelStudioError, is_personal_access_token
from engine.records import Region, Sample
from engine.reviews import (
    HumanLabels,
    TaskContext,
    annotation_regions,
    box_percent,
    holdout_ids,
    merge_reviews,
    percent_box,
    region_judgements,
)
from engine.schemas import REVIEWS
from filters.human_review import HumanReviewFilter
from pipelines.review import threshold_sql
from tests.fixtures.common import free_port
from tests.fixtures.reviews import reviewed_box

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "label_studio"


def recorded(name: str):
    return json.loads((RECORDED / name).read_text())


def sent_task(regions: dict, holdout: bool = False) -> dict:
    return {"uri": "a.png", "width": 64, "height": 48, "iteration": 0, "holdout": holdout, "regions": regions}  # fmt: skip


def test_fld_review_offers_every_image_mode_the_sender_knows():
    import argparse

    from pipelines.cli import build_parser
    from pipelines.review import IMAGE_MODES

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))  # fmt: skip
    images = next(a for a in subcommands.choices["review"]._actions if a.dest == "images")
    assert tuple(images.choices) == IMAGE_MODES


def test_recorded_annotation_becomes_pixel_boxes():
    [task] = [t for t in recorded("tasks_page.json")["tasks"] if t["annotations"]][:1]
    annotation = task["annotations"][0]
    regions = annotation_regions(annotation, 64, 48)
    value = annotation["result"][0]["value"]
    x0, y0, x1, y1 = regions[annotation["result"][0]["id"]]["box"]
    assert x0 == pytest.approx(value["x"] * 64 / 100) and y1 == pytest.approx((value["y"] + value["height"]) * 48 / 100)  # fmt: skip
    assert regions[annotation["result"][0]["id"]]["label"] == value["rectanglelabels"][0]


def test_verdicts_accepted_corrected_rejected_added():
    annotation = recorded("tasks_page.json")["tasks"][0]["annotations"][0]
    result_id = annotation["result"][0]["id"]
    box = list(annotation_regions(annotation, 64, 48)[result_id]["box"])
    label = annotation["result"][0]["value"]["rectanglelabels"][0]
    context = TaskContext("http://ls/projects/1", 1, "img-a", None)

    context.sent = sent_task({result_id: {"kind": "object", "label": label, "box": box}})
    [row] = region_judgements(context, annotation)
    assert (row["verdict"], row["reviewer"], row["annotation_id"]) == ("accepted", "u@example.com", annotation["id"])  # fmt: skip

    moved = [box[0] + 5, box[1], box[2] + 5, box[3]]
    context.sent = sent_task({result_id: {"kind": "object", "label": label, "box": moved}})
    assert region_judgements(context, annotation)[0]["verdict"] == "corrected"
    context.sent = sent_task({result_id: {"kind": "object", "label": "truck", "box": box}})
    assert region_judgements(context, annotation)[0]["verdict"] == "corrected"

    context.sent = sent_task({"gone": {"kind": "object", "label": "dog", "box": [1, 1, 9, 9]}})
    rows = {row["verdict"]: row for row in region_judgements(context, annotation)}
    assert rows["rejected"]["label"] == "dog" and rows["rejected"]["x1"] == 9
    assert rows["added"]["region_id"] is None and rows["added"]["label"] == label


def test_ocr_line_is_a_text_box_with_its_transcription():
    value = {"x": 10, "y": 10, "width": 50, "height": 20, "rotation": 0}
    annotation = {"id": 7, "completed_by": 3, "updated_at": "t", "result": [
        {"id": "line", "type": "rectanglelabels", "value": {**value, "rectanglelabels": ["text"]}},
        {"id": "line", "type": "textarea", "value": {**value, "text": ["OPEN 7-19"]}},
    ]}  # fmt: skip
    sent = {"line": {"kind": "ocr", "label": "OPEN", "box": list(percent_box(value, 64, 48))}}
    [row] = region_judgements(TaskContext("p", 1, "img", sent_task(sent)), annotation)
    assert (row["kind"], row["label"], row["verdict"], row["reviewer"]) == ("ocr", "OPEN 7-19", "corrected", "3")  # fmt: skip


def test_rotated_rectangle_becomes_its_bounding_box():
    x0, y0, x1, y1 = percent_box({"x": 50, "y": 50, "width": 10, "height": 10, "rotation": 90}, 100, 100)  # fmt: skip
    assert (x0, y0, x1, y1) == pytest.approx((40, 50, 50, 60))
    back = percent_box(box_percent([10, 20, 30, 40], 200, 100), 200, 100)
    assert back == pytest.approx((10, 20, 30, 40))


def test_holdout_share_is_deterministic_and_exact():
    ids = [f"image-{n}" for n in range(9)]
    held = holdout_ids(ids, 0.5)
    assert len(held) == 4 and held == holdout_ids(list(reversed(ids)), 0.5)
    assert holdout_ids(ids, 0.0) == set()


def review_row(task_id: int, verdict: str, x0: float = 1.0, holdout: bool = False) -> dict:
    """A ``cat`` box on image ``img{task_id}``, left edge ``x0``."""
    return reviewed_box(f"img{task_id}", "cat", (x0, 1.0, 9.0, 9.0), verdict, holdout, task_id)


def test_reimport_replaces_a_tasks_rows_and_never_doubles():
    first = merge_reviews(REVIEWS.empty_table(), "p", {1: [review_row(1, "accepted")], 2: [review_row(2, "rejected")]})  # fmt: skip
    assert merge_reviews(first, "p", {1: [review_row(1, "accepted")]}).equals(first)
    edited = merge_reviews(first, "p", {1: [review_row(1, "corrected", x0=3.0)]})
    assert edited.num_rows == 2
    assert sorted(edited.column("verdict").to_pylist()) == ["corrected", "rejected"]


def test_human_labels_leave_out_rejections_and_know_the_holdout():
    table = merge_reviews(REVIEWS.empty_table(), "p", {
        1: [review_row(1, "accepted"), review_row(1, "rejected", x0=2.0)],
        2: [review_row(2, "corrected", holdout=True)],
    })  # fmt: skip
    labels = HumanLabels.from_table(table)
    assert labels.trained == {"img1"} and labels.holdout == {"img2"}
    assert labels.boxes["img1"] == [("object", "cat", (1.0, 1.0, 9.0, 9.0))]


def region(label: str, box, source: str = "ssd_coco@2", kind: str = "object") -> Region:
    return Region(kind=kind, x0=box[0], y0=box[1], x1=box[2], y1=box[3], label=label, score=0.8, source=source)  # fmt: skip


def test_a_persons_box_wins_and_other_boxes_are_rejected_on_reviewed_images():
    import numpy as np

    sample = Sample("img", "a.png", np.zeros((100, 100, 3), np.uint8), "PNG", 1)
    sample.regions = [
        region("dog", (10, 10, 50, 50), "human@1"),
        region("cat", (11, 11, 50, 50)),  # the model's box under the person's: superseded
        region("mouse", (70, 70, 90, 90)),  # nobody drew it: rejected
        region("EXIT", (0, 0, 5, 5), kind="ocr"),
    ]
    HumanReviewFilter().run([sample])
    assert [r.drop_reason for r in sample.regions] == [None, None, None, None]  # not reviewed
    sample.reviewed_kinds = ("object",)
    HumanReviewFilter().run([sample])
    assert [r.drop_reason for r in sample.regions] == [None, "human_superseded", "human_rejected", None]  # fmt: skip


def test_threshold_sql_follows_the_confidence_filter():
    import duckdb

    expression = threshold_sql({"default": 0.3, "per_kind": {"ocr": 0.5}, "per_source": {"student": 0.35, "ssd_coco@2": 0.2}})  # fmt: skip
    rows = duckdb.sql(
        f"SELECT {expression} FROM (VALUES ('object', 'student_ssd_i1@2'), ('object', 'ssd_coco@2'), "
        "('ocr', 'rapidocr@1'), ('object', 'yolo@1')) t(kind, source)"
    ).fetchall()
    assert [float(r[0]) for r in rows] == [0.35, 0.2, 0.5, 0.3]


def commit(folder: Path, iteration: int, review_eval: dict | None = None) -> None:
    where = folder / f"iteration={iteration}"
    where.mkdir(parents=True)
    (where / "run.json").write_text(json.dumps({"review_eval": review_eval} if review_eval else {}))  # fmt: skip
    (where / "_COMMITTED").write_text("")


def test_an_iteration_judged_worse_is_not_the_default(tmp_path):
    commit(tmp_path, 0)
    commit(tmp_path, 1, {"default": True, "worse": False})
    commit(tmp_path, 2, {"default": False, "worse": True})
    corpus = Corpus(tmp_path)
    assert corpus.select_iteration(None) == 1 and corpus.select_iteration(2) == 2
    assert corpus.default_iteration(before=2) == 1
    from pipelines.review import accept_iteration

    assert accept_iteration(corpus, 2, show_progress=False)
    assert corpus.select_iteration(None) == 2


# ------------------------------------------------------------------ the client, recorded


class Answer:
    def __init__(self, status: int, body):
        self.status_code = status
        self._body = body
        self.content = json.dumps(body).encode()
        self.text = self.content.decode()
        self.reason = ""

    def json(self):
        return self._body


def replay(monkeypatch, answers: dict) -> list:
    """``requests`` answering from recorded responses: ``answers`` maps (method, path) to
    (status, body); every request is logged with its Authorization header."""
    import requests

    log = []

    def request(self, method, url, json=None, params=None, headers=None, timeout=None):
        path = "/" + url.split("/", 3)[3]
        log.append((method, path, (headers or {}).get("Authorization", ""), params))
        status, body = answers[(method, path)]
        return Answer(status, body() if callable(body) else body)

    monkeypatch.setattr(requests.Session, "request", request)
    return log


def test_a_personal_access_token_is_exchanged_for_a_bearer_token(monkeypatch):
    pat = recorded("token_refresh.json")["access"]  # any JWT reads as one
    assert is_personal_access_token(pat) and not is_personal_access_token("0" * 40)
    log = replay(monkeypatch, {
        ("POST", "/api/token/refresh/"): (200, recorded("token_refresh.json")),
        ("GET", "/api/current-user/whoami"): (200, {"id": 1, "email": "u@example.com"}),
    })  # fmt: skip
    client = LabelStudioClient("http://ls", pat)
    assert client.check()["email"] == "u@example.com"
    assert log[1][2] == "Bearer " + recorded("token_refresh.json")["access"]


def test_a_legacy_token_refused_is_one_sentence(monkeypatch):
    replay(monkeypatch, {("GET", "/api/current-user/whoami"): (401, recorded("unauthorized.json"))})
    with pytest.raises(LabelStudioError, match=r"refused the token \(401: Invalid token.\)"):
        LabelStudioClient("http://ls", "0" * 40).check()


def test_a_server_that_is_down_is_one_sentence():
    with pytest.raises(LabelStudioError, match="does not answer"):
        LabelStudioClient(f"http://127.0.0.1:{free_port()}", "0" * 40).check()


def test_tasks_are_read_page_by_page_until_the_total(monkeypatch):
    import engine.label_studio

    page = recorded("tasks_page.json")  # 3 tasks of a project of 4, as the server paged them
    monkeypatch.setattr(engine.label_studio, "PAGE_SIZE", 3)
    pages = {1: (200, page), 2: (200, dict(page, tasks=page["tasks"][:1])), 3: (404, {"detail": "Invalid page."})}  # fmt: skip
    log = []
    import requests

    def request(self, method, url, json=None, params=None, headers=None, timeout=None):
        log.append(params)
        return Answer(*pages[params["page"]])

    monkeypatch.setattr(requests.Session, "request", request)
    tasks = list(LabelStudioClient("http://ls", "0" * 40).iter_tasks(1))
    assert len(tasks) == page["total"] == 4
    assert [p["page"] for p in log] == [1, 2]  # stops at the total: never asks for page 3
    assert log[0]["fields"] == "all"


# ------------------------------------------------------------------ choosing images


def region_row(image: str, n: int, box, label: str, source: str, score: float, **extra) -> dict:
    return {
        "region_id": f"{image}:0:r{n}", "image_id": image, "iteration": 0, "kind": "object",
        "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "quad": None, "polygon": [],
        "label": label, "score": score, "source": source, "sources": [source], "n_sources": 1,
        "kept": True, "drop_reason": None, **extra,
    }  # fmt: skip


def hand_made_corpus(root: Path) -> Corpus:
    """Iteration 0 of three images: ``sure`` (one box two sources agree on, far from the
    threshold), ``unsure`` (single-source boxes near the 0.3 threshold), ``disputed`` (two
    sources, two labels, one spot)."""
    import pyarrow.parquet as pq

    from engine.schemas import table_from_rows

    images = [
        {"image_id": i, "iteration": 0, "uri": f"/photos/{i}.jpg", "width": 100, "height": 100,
         "format": "JPEG", "bytes": 1, "pixel_sha256": None, "phash": None, "phash_crops": None, "labels_from": None}
        for i in ("disputed", "sure", "unsure")
    ]  # fmt: skip
    regions = [
        region_row(
            "sure", 0, (10, 10, 50, 50), "dog", "fused", 0.95, sources=["a@1", "b@1"], n_sources=2
        ),  # fmt: skip
        region_row("unsure", 0, (10, 10, 50, 50), "dog", "a@1", 0.33),
        region_row(
            "unsure", 1, (60, 60, 90, 90), "cat", "a@1", 0.25, kept=False, drop_reason="low_score"
        ),  # fmt: skip
        region_row(
            "disputed", 0, (10, 10, 50, 50), "dog", "a@1", 0.9, kept=False, drop_reason="fused_into"
        ),  # fmt: skip
        region_row(
            "disputed",
            1,
            (11, 11, 50, 50),
            "wolf",
            "b@1",
            0.9,
            kept=False,
            drop_reason="fused_into",
        ),  # fmt: skip
    ]
    folder = root / "iteration=0"
    for table, rows in (("images", images), ("regions", regions)):
        (folder / table).mkdir(parents=True)
        pq.write_table(table_from_rows(table, rows), folder / table / "shard=00000.parquet")
    config = {"filters": {"confidence": {"default": 0.3, "per_kind": {"ocr": 0.5}}}}
    (folder / "run.json").write_text(json.dumps({"config": config}))
    (folder / "_COMMITTED").write_text("")
    return Corpus(root)


def test_review_takes_the_images_the_ensemble_is_least_sure_of(tmp_path):
    from pipelines.review import ReviewOptions, choose_images

    corpus = hand_made_corpus(tmp_path)
    chosen = choose_images(corpus, 0, ReviewOptions(limit=3))
    assert [(c["image_id"], c["uncertainty"]) for c in chosen] == [("unsure", 3), ("disputed", 2), ("sure", 0)]  # fmt: skip
    unsure = chosen[0]
    assert (unsure["single_source"], unsure["near_threshold"]) == (1, 2)
    assert [c["image_id"] for c in choose_images(corpus, 0, ReviewOptions(limit=1))] == ["unsure"]
    audit = [c["image_id"] for c in choose_images(corpus, 0, ReviewOptions(limit=3, sample="random", seed=4))]  # fmt: skip
    assert sorted(audit) == ["disputed", "sure", "unsure"]
    assert audit == [c["image_id"] for c in choose_images(corpus, 0, ReviewOptions(limit=3, sample="random", seed=4))]  # fmt: skip
    # an image sent before is not sent again
    record = tmp_path / "reviews" / "projects" / "p.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"key": "p", "created_at": "t", "tasks": {"unsure": {}}}))
    assert [c["image_id"] for c in choose_images(corpus, 0, ReviewOptions(limit=3))] == ["disputed", "sure"]  # fmt: skip


class RecordedServer:
    """A client whose server answers with tasks recorded from Label Studio 1.23."""

    url = "http://ls"

    def __init__(self, tasks: list[dict]):
        self.tasks = tasks

    def check(self) -> dict:
        return {"id": 1, "email": "u@example.com"}

    def iter_tasks(self, project_id: int):
        yield from self.tasks


def test_a_review_of_an_image_no_longer_in_the_corpus_is_skipped(tmp_path):
    from engine.reviews import project_key, project_record_path
    from pipelines.review import import_reviews

    corpus = hand_made_corpus(tmp_path)
    [task] = [t for t in recorded("tasks_page.json")["tasks"] if t["annotations"]][:1]
    annotation = task["annotations"][0]
    region_id = annotation["result"][0]["id"]
    sent = {"region_id": {"kind": "object", "label": "car", "box": [1, 1, 9, 9]}}
    tasks = [
        dict(task, id=1, data={"image": "x", "fld_image_id": "sure"}),
        dict(task, id=2, data={"image": "x", "fld_image_id": "gone"}),
    ]
    key = project_key("http://ls", 1)
    record = {"key": key, "server": "http://ls", "project_id": 1, "created_at": "t", "tasks": {
        image: {**sent_task({region_id: sent["region_id"]}), "uri": f"/photos/{image}.jpg"}
        for image in ("sure", "gone")
    }}  # fmt: skip
    path = project_record_path(corpus, key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    summary = import_reviews(tmp_path, RecordedServer(tasks), show_progress=False)
    assert (summary.tasks, summary.skipped) == (1, 1)
    assert summary.warnings == [f"task 2 of {key}: skipped, its image is no longer in the corpus"]
    rows = HumanLabels.read(tmp_path / "reviews" / "reviews.parquet")
    assert set(rows.boxes) == {"sure"}
