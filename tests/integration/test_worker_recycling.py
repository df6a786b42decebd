"""``run.worker_max_shards``: a Ray worker that has done N shards is replaced by a fresh
process once its last shard is in; no shard is lost or written twice."""

from __future__ import annotations

import json

from engine.query import connect
from tests.fixtures.common import DEMO_IMAGES, run_fld


def test_workers_are_replaced_after_max_shards_and_no_shard_is_lost(ray_address, tmp_path):
    out = tmp_path / "corpus"
    run_fld(
        "run", str(DEMO_IMAGES), "--out", str(out), "--address", ray_address, "--workers", "1",
        "--shard-size", "1", "--quiet",
        "--set", "annotators=[{name: hold, seconds_per_image: 0.01}]",
        "--set", "filters.text_complexity.enabled=false",
        "--set", "run.worker_max_shards=2", timeout=600,
    )  # fmt: skip
    markers = [json.loads(p.read_text()) for p in sorted((out / "iteration=0" / "_shards").glob("*.json"))]  # fmt: skip
    assert len(markers) == 7
    pids = [marker["worker"]["pid"] for marker in markers]
    # One worker at a time, two shards each: 7 shards need 4 processes, none doing 3.
    assert len(set(pids)) == 4, pids
    assert max(pids.count(pid) for pid in set(pids)) == 2
    run = json.loads((out / "iteration=0" / "run.json").read_text())
    assert run["executor"]["recoveries"].get("recycled") == 3
    connection = connect(out)
    images = connection.execute("SELECT count(*), count(DISTINCT image_id) FROM images").fetchone()  # fmt: skip
    assert images == (7, 7)
