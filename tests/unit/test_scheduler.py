"""The driver's retry, split and write-off bookkeeping (``engine.executors.Scheduler``),
driven directly: calls fail or succeed in a chosen order, as Ray would report them. The
real thing on Ray is in ``tests/reliability/test_fault_poison.py`` and
``test_fault_lose_node.py``; these check the orders that are hard to provoke there."""

from __future__ import annotations

from types import SimpleNamespace

from ray.exceptions import WorkerCrashedError

from engine.executors import LOST_AFTER_S, FailurePolicy, Scheduler, Task, WorkerLost, restart_wait
from engine.sources import Shard

SHARD = Shard(1, ("a.jpg", "b.jpg", "c.jpg", "d.jpg"))


class Processor:
    """Records what the driver assembles."""

    def __init__(self):
        self.assembled = []

    def assemble(self, shard, parts, isolated):
        self.assembled.append((shard.index, [p.uris for p in parts], [e.uri for e in isolated]))
        return SimpleNamespace(marker={"shard": shard.index, "isolated": [e.error_type for e in isolated]})  # fmt: skip


def scheduler(max_attempts: int = 1) -> tuple[Scheduler, Processor]:
    processor = Processor()
    executor = SimpleNamespace(recoveries={})
    return Scheduler(executor, processor, FailurePolicy(max_attempts), notes=None), processor


def part_result(task: Task):
    return SimpleNamespace(uris=task.uris, marker={})


def test_a_crashing_image_is_isolated_and_the_rest_assembled_once():
    run, processor = scheduler(max_attempts=1)
    outcome, again = run.failed(Task(SHARD), WorkerCrashedError())
    assert outcome is None and again is None
    halves = [run.retry.popleft(), run.retry.popleft()]
    assert [t.part for t in halves] == [(0, 2), (2, 4)]
    assert run.succeeded(halves[0], part_result(halves[0])) is None
    run.failed(halves[1], WorkerCrashedError())  # c or d kills its worker
    quarters = [run.retry.popleft(), run.retry.popleft()]
    assert run.succeeded(quarters[1], part_result(quarters[1])) is None
    outcome, _ = run.failed(quarters[0], WorkerCrashedError())  # c, alone: written off
    assert outcome.marker == {"shard": 1, "isolated": ["worker_crashed"]}
    assert processor.assembled == [(1, [("a.jpg", "b.jpg"), ("d.jpg",)], ["c.jpg"])]
    assert run.recoveries == {"worker_deaths": 3, "shard_splits": 2, "worker_crashed": 1}
    assert not run.isolations


def test_an_error_in_one_part_fails_the_shard_once_after_its_other_parts():
    run, processor = scheduler(max_attempts=1)
    run.failed(Task(SHARD), WorkerCrashedError())
    first, second = run.retry.popleft(), run.retry.popleft()
    outcome, _ = run.failed(first, ValueError("disk full"))
    assert outcome is None, "not before the other part is back"
    outcome, _ = run.failed(second, WorkerCrashedError())  # no further split once failed
    assert not run.retry
    assert isinstance(outcome.error, ValueError) and outcome.marker is None
    assert processor.assembled == [] and not run.isolations


def test_a_lost_node_is_retried_without_counting_a_try():
    run, _ = scheduler(max_attempts=1)
    outcome, again = run.failed(Task(SHARD), WorkerLost("node gone"))
    assert outcome is None and again == Task(SHARD, None, 1) and not run.retry
    outcome, again = run.failed(Task(SHARD), WorkerCrashedError())  # 1 try allowed: split
    assert again is None and len(run.retry) == 2


def test_a_retry_waits_for_its_actor_as_long_as_the_slowest_first_answer_twice():
    # A loaded machine took 30 s for a worker's setup and first shard: its restart is given
    # 60 s before an idle worker takes the retry; a fast run still waits LOST_AFTER_S.
    assert restart_wait([12.0, 30.0], elapsed=100.0) == 60.0
    assert restart_wait([1.0, 2.0], elapsed=100.0) == LOST_AFTER_S
    assert restart_wait([], elapsed=40.0) == 80.0  # killed before any answer: the run's age
