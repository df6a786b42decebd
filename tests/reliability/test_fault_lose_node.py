"""Fault battery: a node leaves the cluster mid-run.

A local two-node Ray cluster (``tests/fixtures/two_nodes.py``: ``ray start --head`` with one
CPU, and a second ``ray start --address`` with its own temp dir and two CPUs), so of the run's
two workers at least one lives on the second node. Once shards are being written, that
node is killed (its raylet and every process of it, as a machine that dies). Its workers'
shards fail as crashes and are retried; their actors cannot come back (the head has no free
CPU), so the surviving worker takes the retries. The run must commit with every row equal
to the uninterrupted reference run's."""

from __future__ import annotations

import subprocess
import time

from tests.fixtures.battery import (
    REPO,
    check_corpus_integrity,
    count_rows,
    fld_command,
    marker_count,
    report,
    shared_photo_set,
)
from tests.fixtures.common import wait_for
from tests.fixtures.corpus_tools import all_rows
from tests.fixtures.two_nodes import _descendants, two_node_cluster
from tests.reliability.test_fault_kill_worker import title


def test_second_node_lost_mid_run(tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    out = tmp_path / "corpus"
    with two_node_cluster(head_cpus=1, worker_cpus=2) as cluster:
        command = fld_command(
            photos["folder"], out, photos["config"], "--shard-size", "1",
            "--address", cluster.address, "--workers", "2",
        )  # fmt: skip
        started = time.monotonic()
        driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert wait_for(lambda: marker_count(out) >= 2 or driver.poll() is not None, 300)
            assert driver.poll() is None, "the run ended before the node could be stopped"
            on_second = [
                pid for pid in _descendants(cluster.second.pid)
                if title(pid).startswith("ray::ShardWorker")
            ]  # fmt: skip
            assert on_second, "no worker of the run on the second node"
            at_stop = marker_count(out)
            cluster.stop_second_node()
            stdout, stderr = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        seconds = time.monotonic() - started
    assert driver.returncode == 0, stderr[-3000:]
    assert "committed iteration 0" in stdout, stdout
    check_corpus_integrity(out)
    rows = all_rows(out)
    assert rows == photos["rows"]
    report(
        capsys,
        f"[lose-node] 2-node cluster, {len(on_second)} worker(s) on the second node, which was "
        f"killed with {at_stop} of 16 shards written; committed, {count_rows(rows)} rows "
        f"equal to the reference; {seconds:.1f} s",
    )
