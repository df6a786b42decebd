"""Fault battery 2: SIGKILL a Ray worker actor in the middle of a shard.

``fld run --address`` on the session's Ray cluster (2 actors, 8 shards of 2 photos). Once a
shard is done, the test finds the run's ``ShardWorker`` actors in the cluster's actor table
(their pids), waits until one of them is inside ``ShardWorker.process`` (Ray sets the process
title to ``ray::ShardWorker.process`` while the task runs) and SIGKILLs it. The actor is
declared with ``max_restarts=3, max_task_retries=3``: Ray restarts it (a new process, models
loaded again) and retries the shard. The run must exit 0 with every row equal to an
uninterrupted run's, each shard written once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.fixtures.battery import (
    REPO,
    check_corpus_integrity,
    count_rows,
    fld_command,
    marker_count,
    report,
    shared_photo_set,
    wait_for,
)
from tests.fixtures.corpus_tools import all_rows


def shard_workers() -> list[dict]:
    """The cluster's ShardWorker actors (alive or not) with pid, state and restarts."""
    from ray._private import state

    return [actor for actor in state.actors().values() if actor["ActorClassName"] == "ShardWorker"]


def shard_worker_pids() -> set[int]:
    """Pids of the processes on this machine whose title is a ShardWorker's, of this test
    process's cluster only: under pytest-xdist another test process has its own cluster
    and workers, which must not be killed (``of_this_test_process``)."""
    return {
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and title(int(entry.name)).startswith("ray::ShardWorker")
        and of_this_test_process(int(entry.name))
    }


def of_this_test_process(pid: int) -> bool:
    """Whether a Ray worker belongs to this test process's cluster: its processes inherit
    the environment of the test process that started the head (``ray_address``), whose
    ``PYTEST_XDIST_WORKER`` (gw0, gw1, ...; none without xdist) names it."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    mine = os.environ.get("PYTEST_XDIST_WORKER")
    theirs = next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"PYTEST_XDIST_WORKER=")), None)  # fmt: skip
    return theirs == mine


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_kill_worker_actor_mid_shard(ray_session, tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    before = {actor["ActorID"] for actor in shard_workers()}
    pids_before = shard_worker_pids()
    out = tmp_path / "corpus"
    command = fld_command(
        photos["folder"], out, photos["config"], "--shard-size", str(photos["shard_size"]),
        "--address", ray_session, "--workers", "2",
    )  # fmt: skip
    started = time.monotonic()
    driver = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim: dict = {}
    try:
        assert wait_for(lambda: marker_count(out) >= 1 or driver.poll() is not None, 300)
        assert driver.poll() is None, "the run ended before a worker could be killed"

        # The workers are found by their process titles (``ray::ShardWorker`` when idle,
        # ``ray::ShardWorker.process`` inside a shard) in /proc, not by asking the cluster:
        # a cluster that has run many tests answers slowly, and a run of 8 small shards can
        # finish between two answers. Which actor a pid was is asked after the run.
        def kill_busy_worker() -> bool:
            """SIGKILL a worker of this run whose title says it is inside
            ``ShardWorker.process``, right after reading the title: nothing between the
            two, so the task cannot end between what was seen and the kill."""
            for pid in shard_worker_pids() - pids_before:
                if title(pid).startswith("ray::ShardWorker.process"):
                    os.kill(pid, signal.SIGKILL)
                    victim["Pid"] = pid
                    return True
            return False

        assert wait_for(kill_busy_worker, timeout=60, interval=0.002), "no worker seen mid-shard"
        markers_at_kill = marker_count(out)
        assert markers_at_kill < 8, "every shard was written before the kill"
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    seconds = time.monotonic() - started
    assert driver.returncode == 0, stderr[-3000:]
    assert "committed iteration 0" in stdout, stdout

    # The killed actor: of this run's actors, the one that was restarted (exactly one).
    this_run = [a for a in shard_workers() if a["ActorID"] not in before]
    restarted_actors = [a for a in this_run if a["NumRestarts"] >= 1]
    assert len(this_run) == 2 and len(restarted_actors) == 1, this_run
    restarted = restarted_actors[0]
    other = next(a for a in this_run if a is not restarted)
    original_pids = {victim["Pid"], other["Pid"]}  # the two processes before the kill
    markers = sorted((out / "iteration=0" / "_shards").glob("*.json"))
    pids = [json.loads(marker.read_text())["worker"]["pid"] for marker in markers]
    new_pids = set(pids) - original_pids
    assert len(markers) == 8
    # The retried shard (and any later one given to that actor) came from the new process.
    assert len(new_pids) == 1 and restarted["Pid"] in new_pids, (pids, original_pids)
    figures = check_corpus_integrity(out)
    rows = all_rows(out)
    assert rows == photos["rows"]
    report(
        capsys,
        f"\n[kill-worker] killed actor pid {victim['Pid']} in ShardWorker.process with "
        f"{markers_at_kill} of 8 shards written; actor restarts: {restarted['NumRestarts']}; "
        f"shards by the killed pid: {pids.count(victim['Pid'])}, by its restarted "
        f"process(es) {sorted(new_pids)}: {sum(p in new_pids for p in pids)}; exit 0; "
        f"{count_rows(rows)} rows equal to the reference, {figures['parquet_files']} Parquet "
        f"files read; {seconds:.1f} s",
    )
