"""The human review round trip against a real Label Studio (1.23, its own venv: ``make
label-studio``), started on loopback for this module and stopped after it.

Five demo photos are annotated (iteration 0) and sent for review with ``fld review``; a
reviewer, through the server's API as the browser would, corrects one box and one OCR
line, rejects one box and accepts the rest; ``fld import-reviews`` brings the verdicts
back; ``fld refine`` then writes the corrected labels as ``human@1`` and drops the
rejected box as ``human_rejected``, and judges the iteration on the hold-out images. An
iteration made worse on purpose (a student trained on labels shuffled across images) is
committed but not made the default, until ``--accept-worse``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from engine.corpus import Corpus
from engine.query import connect
from tests.fixtures.common import BIN, DEMO_IMAGES, REPO, free_port, run_fld
from tests.fixtures.label_studio_server import (
    Reviewer,
    label_studio_installed,
    running_label_studio,
)

PHOTOS = ("astronaut.jpg", "bus.jpg", "coffee.jpg", "sign.png", "zidane.jpg")
NEUTRAL_STUDENT = ["--epochs", "1", "--set", "refine.student.ssd.min_score=0.99"]

pytestmark = pytest.mark.skipif(
    not label_studio_installed() and not os.environ.get("FLD_REQUIRE_LABEL_STUDIO"),
    reason="Label Studio's venv is not installed (make label-studio; make test installs it)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-studio")
    (root / "data").mkdir()
    (root / "served" / "photos").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(DEMO_IMAGES / name, root / "served" / "photos" / name)
    # The corpus to review is made while the server starts (about 40 s, mostly one core).
    corpus = root / "corpus"
    making = subprocess.Popen(
        [str(BIN / "fld"), "run", str(root / "served" / "photos"), "--out", str(corpus), "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with running_label_studio(root / "data", root / "served") as (url, token):
        _, stderr = making.communicate(timeout=600)
        assert making.returncode == 0, f"fld run failed: {stderr[-3000:]}"
        yield {
            "url": url,
            "token": token,
            "served": root / "served",
            "root": root,
            "corpus": corpus,
        }


def fld_with(server: dict, *args: str, check: bool = True):
    """``fld`` with the server and the personal access token in the environment, as a
    user sets them (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``)."""
    from engine.executors import environment

    with environment({"LABEL_STUDIO_URL": server["url"], "LABEL_STUDIO_API_KEY": server["token"]}):
        return run_fld(*args, check=check, timeout=600)


def reviewed_by_hand(reviewer: Reviewer, project_id: int) -> dict:
    """What the reviewer does: on bus.jpg a person's box moved right by 3 % of the width;
    on sign.png "OPEN DAILY" corrected to "OPEN DAILY 7-19"; on astronaut.jpg the mouse
    deleted; every other prediction accepted as it is."""
    annotations = {}
    for task in reviewer.tasks(project_id):
        if "fld_uri" not in task["data"]:
            continue  # not this corpus's task
        name = task["data"]["fld_uri"].rsplit("/", 1)[1]
        result = reviewer.prediction(task)
        if name == "bus.jpg":
            person = next(r for r in result if r["value"].get("rectanglelabels") == ["person"])
            person["value"]["x"] += 3.0
        elif name == "sign.png":
            line = next(r for r in result if r["value"].get("text") == ["OPEN DAILY"])
            line["value"]["text"] = ["OPEN DAILY 7-19"]
        elif name == "astronaut.jpg":
            result = [r for r in result if r["value"].get("rectanglelabels") != ["mouse"]]
        annotations[name] = reviewer.submit(task["id"], result)
    return annotations


def kept_human_rows(corpus, iteration: int) -> list[tuple]:
    connection = connect(corpus, [iteration])
    try:
        return connection.execute(
            "SELECT i.uri, r.kind, r.label, r.x0, r.source, r.kept, r.drop_reason FROM regions r "
            "JOIN images i USING (image_id) WHERE r.source = 'human@1' OR r.drop_reason LIKE 'human%' "
            "ORDER BY i.uri, r.kind, r.x0"
        ).fetchall()
    finally:
        connection.close()


def test_review_round_trip_with_a_real_label_studio(server):
    photos, corpus = server["served"] / "photos", server["corpus"]

    # A server that is down, a wrong token: one sentence, exit 2, nothing written.
    down = run_fld("review", str(corpus), "--url", f"http://127.0.0.1:{free_port()}", "--token", server["token"], check=False)  # fmt: skip
    assert down.returncode == 2 and "does not answer" in down.stderr
    wrong = fld_with(server, "review", str(corpus), "--token", "0" * 40, check=False)
    assert wrong.returncode == 2 and "refused the token" in wrong.stderr
    assert not (corpus / "reviews").exists()

    sent = fld_with(
        server, "review", str(corpus), "--limit", "5", "--images", "local-files",
        "--document-root", str(server["served"]),
    )  # fmt: skip
    assert "5 tasks (iteration 0)" in sent.stdout
    [record_file] = (corpus / "reviews" / "projects").iterdir()
    record = json.loads(record_file.read_text())
    assert sum(task["holdout"] for task in record["tasks"].values()) == 2  # round(5 * 0.5)

    reviewer = Reviewer(server["url"], server["token"])
    tasks = reviewer.tasks(record["project_id"])
    assert len(tasks) == 5
    for task in tasks:  # every kept object and OCR region was sent as a prediction
        regions = record["tasks"][task["data"]["fld_image_id"]]["regions"]
        boxes = [r for r in task["predictions"][0]["result"] if r["type"] == "rectanglelabels"]
        assert sorted(r["id"] for r in boxes) == sorted(regions)
    served = reviewer.fetch(tasks[0]["data"]["image"])  # Label Studio serves the input file
    assert served == (photos / tasks[0]["data"]["fld_uri"].rsplit("/", 1)[1]).read_bytes()
    # a task this corpus did not send (another user's, in the same project): skipped
    reviewer.client.import_tasks(record["project_id"], [{"data": {"image": "/x.png", "fld_image_id": "not-ours"}}])  # fmt: skip

    annotations = reviewed_by_hand(reviewer, record["project_id"])
    imported = fld_with(server, "import-reviews", str(corpus))
    assert "1 rejected" in imported.stdout and "2 corrected" in imported.stdout
    assert (
        "1 skipped" in imported.stdout
        and "skipped, it was not sent by this corpus" in imported.stderr
    )
    reviews = pq.read_table(corpus / "reviews" / "reviews.parquet").to_pylist()
    assert {r["reviewer"] for r in reviews} == {"reviewer@example.com"}
    rejected = [r for r in reviews if r["verdict"] == "rejected"]
    assert [(r["label"], r["holdout"]) for r in rejected] == [("mouse", False)]

    again = fld_with(server, "import-reviews", str(corpus))  # idempotent on task ids
    assert "(0 new or changed)" in again.stdout
    assert pq.read_table(corpus / "reviews" / "reviews.parquet").to_pylist() == reviews
    # A task edited after import: re-import updates its rows, nothing doubles.
    bus = annotations["bus.jpg"]
    result = [dict(r, value=dict(r["value"])) for r in bus["result"]]
    moved = next(r for r in result if r["type"] == "rectanglelabels" and r["value"]["rectanglelabels"] == ["bus"])  # fmt: skip
    moved["value"]["width"] -= 5.0
    reviewer.edit(bus["id"], result)
    edited = fld_with(server, "import-reviews", str(corpus))
    assert "(1 new or changed)" in edited.stdout
    after = pq.read_table(corpus / "reviews" / "reviews.parquet").to_pylist()
    assert len(after) == len(reviews)
    assert sum(r["verdict"] == "corrected" for r in after) == 3

    # The next iteration: people's boxes win, the rejected box is gone.
    refined = fld_with(server, "refine", str(corpus), "--iterations", "1", *NEUTRAL_STUDENT, "--quiet")  # fmt: skip
    assert "it is the corpus's default" in refined.stdout
    rows = kept_human_rows(corpus, 1)
    human = [(uri.rsplit("/", 1)[1], kind, label) for uri, kind, label, _, source, kept, _ in rows if source == "human@1" and kept]  # fmt: skip
    assert ("sign.png", "ocr", "OPEN DAILY 7-19") in human
    assert not any(name in ("coffee.jpg", "zidane.jpg") for name, _, _ in human)  # hold-out
    bus_person = [r for r in after if r["verdict"] == "corrected" and r["label"] == "person"][0]
    assert any(abs(x0 - bus_person["x0"]) < 0.01 and source == "human@1" for _, _, _, x0, source, _, _ in rows)  # fmt: skip
    dropped = {(uri.rsplit("/", 1)[1], label) for uri, _, label, _, _, kept, reason in rows if reason == "human_rejected"}  # fmt: skip
    assert dropped == {("astronaut.jpg", "mouse")}
    connection = connect(corpus, [1])
    try:
        [(kept_mouse,)] = connection.execute("SELECT count(*) FROM regions WHERE kept AND label = 'mouse'").fetchall()  # fmt: skip
    finally:
        connection.close()
    assert kept_mouse == 0
    judged = Corpus(corpus).run_info(1)["review_eval"]
    assert judged["images"] == 2 and judged["default"] is True
    diff = run_fld("diff", str(corpus), "0", "1")
    assert "OPEN DAILY 7-19" in diff.stdout and "human_rejected" in diff.stdout

    # An iteration made worse on purpose is committed but not made the default.
    from tests.fixtures.students import train_hard_shuffled_student

    train_hard_shuffled_student(corpus, (2, 1))
    worse = fld_with(server, "refine", str(corpus), "--iterations", "2", "--quiet")
    assert "stays the corpus's default" in worse.stdout, worse.stdout
    store = Corpus(corpus)
    assert store.run_info(2)["review_eval"]["worse"] is True
    assert store.select_iteration(None) == 1  # export, report and the next refine take 1
    evaluated = run_fld("eval", str(corpus), "--reviews")
    assert "hold-out" in evaluated.stdout
    accepted = fld_with(server, "refine", str(corpus), "--iterations", "2", "--accept-worse", "--quiet")  # fmt: skip
    assert Corpus(corpus).select_iteration(None) == 2, accepted.stderr
