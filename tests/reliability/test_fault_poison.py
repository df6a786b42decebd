"""Fault battery: poison images. One image kills its worker process (SIGKILL, as a
segfault or an out-of-memory kill would) every time it is seen, another hangs its model
call. ``fld run`` on the session's Ray cluster must isolate both (retry, split the shard,
write the image off) and commit: exactly one ``worker_crashed`` and one ``timeout`` row,
and every other image's rows equal to the uninterrupted reference run's.

The drill is the ``chaos`` annotator (``annotators/chaos.py``) added to the battery's
light config; it adds no rows, so the reference rows are the light config's."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from engine.schemas import TABLES
from tests.fixtures.battery import (
    DEMO_IMAGES,
    REPO,
    check_corpus_integrity,
    count_rows,
    fld_command,
    report,
    run,
    shared_photo_set,
)
from tests.fixtures.corpus_tools import all_rows, table_rows

TIMEOUT_S = 5  # run.task_timeout_s; the hang lasts far longer


def chaos_config(light: str, crash: str, hang: str, folder) -> str:
    tree = yaml.safe_load(light)
    tree["annotators"].append({"name": "chaos", "crash_on": [crash], "hang_on": [hang], "hang_s": 600})  # fmt: skip
    tree.setdefault("run", {})["task_timeout_s"] = TIMEOUT_S
    path = folder / "chaos.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def without_images(rows: dict, image_ids: set[str]) -> dict:
    """The rows of every table but ``errors``, less those of ``image_ids``."""
    kept = {}
    for table, table_rows_ in rows.items():
        if table == "errors":
            continue
        column = TABLES[table].get_field_index("image_id")
        kept[table] = [row for row in table_rows_ if row[column] not in image_ids]
    return kept


def test_poison_images_are_isolated_and_the_iteration_commits(ray_address, tmp_path, tmp_path_factory, capsys):  # fmt: skip
    photos = shared_photo_set(tmp_path_factory)
    names = sorted(p.name for p in photos["folder"].iterdir())
    crash, hang = names[5], names[10]  # in shards 2 and 5 of 2 images each
    config = chaos_config(photos["config"].read_text(), crash, hang, tmp_path)
    out = tmp_path / "corpus"
    started = time.monotonic()
    command = fld_command(photos["folder"], out, config, "--shard-size", "2", "--address", ray_address)  # fmt: skip
    result = run(command, timeout=900)
    seconds = time.monotonic() - started
    assert "committed iteration 0" in result.stdout, result.stdout
    check_corpus_integrity(out)

    errors = table_rows(out, "errors")
    by_type = {(row[4], row[5]): row[3] for row in errors}  # (stage, error_type) -> uri
    assert len(errors) == 2, errors
    assert by_type[("worker", "worker_crashed")].endswith("/" + crash)
    assert by_type[("worker", "timeout")].endswith("/" + hang)

    reference = photos["rows"]
    poisoned = {row[0] for row in reference["images"] if row[2].endswith(("/" + crash, "/" + hang))}  # fmt: skip
    assert len(poisoned) == 2
    rows = all_rows(out)
    assert without_images(rows, set()) == without_images(reference, poisoned)

    info = json.loads((out / "iteration=0" / "run.json").read_text())
    recoveries = info["executor"]["recoveries"]
    assert recoveries["worker_crashed"] == 1 and recoveries["timeout"] == 1, recoveries
    report(
        capsys,
        f"[poison] {len(names)} photos, shards of 2; crash on {crash}, hang on {hang} "
        f"(task_timeout_s {TIMEOUT_S}); recoveries {recoveries}; {count_rows(rows)} rows, the "
        f"others equal to the reference; committed in {seconds:.1f} s",
    )


@pytest.mark.parametrize("setup", ["before_work", "overlapped"])
def test_a_worker_whose_setup_fails_stops_the_run_with_the_reason(ray_address, tmp_path, setup):
    """Weights that pass config validation (the file exists) but do not load: each worker's
    ``setup()`` raises, Ray does not restart such an actor, and the run must stop with the
    reason (exit 2), not wait for a worker that will never come back. With ``run.setup:
    overlapped`` the model loads in the worker's background thread and the failure comes
    with the first shard: the same stop, naming the step."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        (photos / name).write_bytes((DEMO_IMAGES / name).read_bytes())
    weights = tmp_path / "corrupt.pt"
    weights.write_bytes(bytes(range(256)) * 20)
    config = tmp_path / "corrupt.yaml"
    config.write_text(yaml.safe_dump({"annotators": [{"name": "yolo", "weights": str(weights)}]}))
    command = fld_command(photos, tmp_path / "corpus", config, "--address", ray_address, "--set", f"run.setup={setup}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "fld run: a worker could not set up its steps" in result.stderr
    assert "corrupt.pt" in result.stderr
    if setup == "overlapped":
        assert "step yolo@" in result.stderr
