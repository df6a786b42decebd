"""Executors run a ``ShardProcessor`` over shards and yield results as shards finish.

- ``RayExecutor`` (the default): one Ray actor per worker; each actor calls the
  processor's ``setup()`` once (models loaded once per worker) and then processes one
  whole shard per task. It starts a local Ray in this process, joins the cluster at
  ``address``, or reuses a Ray that this process already initialised. Actors are
  restarted and their task retried if a worker process dies mid-shard.
- ``LocalExecutor``: the same processor in this process, one shard after the other, for
  debugging and unit tests.

Stages that scale separately: a model step with resources of its own (a GPU: see
``pipelines.config.AnnotatorSpec``) runs in a pool of ``ModelWorker`` actors, its
``replicas``, each holding the step's resources; the CPU workers (``ShardWorker``, one
per ``run.workers``) read, decode, run the CPU steps and filters, build the tables, and
send the model step's batches to a replica (``engine.steps.RemoteStep``). So while one
CPU worker decodes its next shard, another's batch is on the GPU, and several shards
keep one replica busy. The shard stays the unit of work and of commit.

Failures (``RayExecutor``; ``FailurePolicy``):

- Actors that die are restarted for the whole run (``max_restarts=-1``): a dead worker,
  or every worker of a node that left the cluster, comes back (elsewhere if need be).
- The driver, not Ray, retries a shard whose worker died under it, up to
  ``max_attempts`` tries: on the same actor once restarted (models and all; an idle worker
  takes the shard if the restart takes more than twice the slowest first answer of the
  run's workers), or on any worker if the actor's node left the cluster. A shard that
  still kills its worker is split in halves, each half run on its own, a failing half
  split again, until the image that kills the worker is alone; after ``max_attempts``
  tries it becomes an ``errors`` row (``worker_crashed``) and the other images' rows are
  written with it (``Processor.assemble``, on the driver).
- A hang: each worker has a watchdog thread; a model call on one batch that runs past
  ``task_timeout_s`` is noted (``FailureNotes``, an actor of the driver's) and the worker
  process exits, which the driver sees as above; the image that was isolated from it
  becomes a ``timeout`` row instead.
- Any other error in a shard (a disk that is full, a bug) fails the shard: it is yielded
  as a ``ShardOutcome`` with its ``error``, and the caller decides (``run.max_failed_shards``).

``LocalExecutor`` runs everything in the driver process: a crash or a hang there is the
driver's own, so it has no isolation; its shards' errors are yielded the same way.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.offline import apply_offline_env
from engine.sources import Shard
from engine.steps import Resources, Step, StepSetupError, worker_context
from engine.storage import store_env


class Processor(Protocol):
    def setup(self) -> None: ...
    def process(self, shard: Shard): ...
    def process_part(self, shard: Shard, uris: tuple[str, ...]): ...
    def assemble(self, shard: Shard, parts: list, isolated: list): ...
    def model_pools(self) -> list[ModelPool]: ...
    def attach_pools(self, replicas: dict[int, list[str]]) -> None: ...


@dataclass(frozen=True)
class FailurePolicy:
    """``max_attempts``: tries of a shard (and of an isolated image) whose worker died
    before it is split (or written off); ``task_timeout_s``: the longest one model call on
    one batch may run (None: no limit)."""

    max_attempts: int = 2
    task_timeout_s: float | None = None


@dataclass
class ShardOutcome:
    """A shard finished: its ``marker`` (its files are written), or the ``error`` it failed
    with (nothing of it is marked done)."""

    shard: Shard
    marker: dict | None = None
    error: BaseException | None = None


@dataclass
class Task:
    """One call to a worker: a whole shard (``part`` None) or a part ``(start, stop)`` of
    its URIs, being isolated."""

    shard: Shard
    part: tuple[int, int] | None = None
    attempt: int = 1

    @property
    def uris(self) -> tuple[str, ...]:
        return self.shard.uris if self.part is None else self.shard.uris[self.part[0] : self.part[1]]  # fmt: skip


@dataclass
class Isolation:
    """A shard being split: its parts' results by ``(start, stop)``, the images written
    off, and how many parts are still out."""

    shard: Shard
    results: dict = field(default_factory=dict)
    isolated: list = field(default_factory=list)
    open_parts: int = 0
    error: BaseException | None = None  # a part failed with an error: the shard fails


@dataclass(frozen=True)
class ModelPool:
    """A model step that runs in ``replicas`` actors of its own, each holding
    ``resources``; ``build`` makes the step (picklable; the model loads in the actor)."""

    key: int
    build: Callable[[], Step]
    resources: Resources
    replicas: int = 1
    threads: int = 1


class PlacementError(Exception):
    """A model pool asks for resources that no node of the cluster has."""


def check_placeable(pool: ModelPool, available: dict) -> None:
    """Fail before any work starts if one replica's resources exceed the cluster's (Ray
    would otherwise wait for them forever)."""
    wanted = {"CPU": pool.resources.num_cpus, "GPU": pool.resources.num_gpus}
    wanted.update(pool.resources.custom)
    check_resources(wanted, available, lambda name: f"annotators.{pool.key}.resources", " per replica")  # fmt: skip


def check_resources(wanted: dict, available: dict, key_of: Callable[[str], str], per: str = "") -> None:  # fmt: skip
    """Raise ``PlacementError`` for the first resource in ``wanted`` (name -> amount) that
    the cluster's ``available`` lacks, naming the config key (``key_of(name)``) that asked."""
    for name, amount in wanted.items():
        if amount > available.get(name, 0):
            raise PlacementError(
                f"{key_of(name)} asks {amount} {name}{per}; the Ray cluster has "
                f"{available.get(name, 0)} (start it with the resource, e.g. "
                "`ray start --num-gpus N`, and pass --address)"
            )


class ModelWorker:
    """The Ray actor of a model pool: one step, set up once with the device Ray assigned
    this actor (``engine.steps.worker_context``), running the batches CPU workers send."""

    def __init__(self, pool: ModelPool, task_timeout_s: float | None = None, notes: str | None = None):  # fmt: skip
        """``task_timeout_s``, ``notes``: a batch that runs longer is noted in the run's
        ``FailureNotes`` (by name) and this process exits (a watchdog thread, as in
        ``ShardWorker``); the calls queued behind it are retried on the restarted replica."""
        apply_offline_env()
        self.step = pool.build()
        self.context = worker_context(pool.threads)
        self.step.setup(self.context)
        self.current_call: tuple | None = None  # (monotonic start, URIs of the batch)
        if task_timeout_s and notes is not None:
            threading.Thread(target=watch, args=(self, task_timeout_s, notes), daemon=True).start()

    def run(self, batch: list) -> tuple[list, list]:
        """Run the step on a batch (with its per-image failure isolation); return each
        sample's rows (``Sample.snapshot``) and the errors."""
        errors: list = []
        self.current_call = (time.monotonic(), [sample.uri for sample in batch])
        try:
            self.step.run_isolated(batch, errors)
        finally:
            self.current_call = None
        return [sample.snapshot() for sample in batch], errors

    def placement(self) -> dict:
        """Where this replica runs, as recorded in ``run.json`` (``executor.model_pools``):
        its process, the device and GPU ids Ray gave it, and the device and dtype of its
        model's parameters, read from the loaded modules."""
        parameters = sorted(
            {
                f"{parameter.device} {str(parameter.dtype).removeprefix('torch.')}"
                for module in self.step.models()
                for parameter in module.parameters()
            }
        )
        return {
            "annotator": self.step.source,
            "pid": os.getpid(),
            "device": self.context.device,
            "gpu_ids": list(self.context.accelerator_ids),
            "parameters": parameters,
        }


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set ``variables`` in this process's environment for the ``with`` block only."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class LocalExecutor:
    name = "local"

    def map(self, processor: Processor, shards: Iterable[Shard], policy: FailurePolicy | None = None) -> Iterator[ShardOutcome]:  # fmt: skip
        try:
            processor.setup()  # every step in this process, model pools included
        except StepSetupError as exc:
            raise WorkerSetupError(f"could not set up the steps: {exc}") from exc
        for shard in shards:
            try:
                result = processor.process(shard)
            except StepSetupError as exc:  # every shard would fail the same way
                raise WorkerSetupError(f"could not set up the steps: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - the caller decides (max_failed_shards)
                yield ShardOutcome(shard, error=exc)
                continue
            yield ShardOutcome(shard, marker=result.marker)


class ShardWorker:
    """The Ray actor: holds one set-up processor for its lifetime. With a time limit, a
    watchdog thread ends the process when a model call overruns it (see the module
    docstring), after noting the call's shard and images in ``notes``."""

    def __init__(self, processor: Processor, policy: FailurePolicy | None = None, notes: str | None = None):  # fmt: skip
        """``notes``: the name of the run's ``FailureNotes`` actor (a name, not a handle: Ray
        warns that an actor restarted with a handle among its arguments may not restart)."""
        apply_offline_env()
        self.processor = processor
        self.processor.setup()
        limit = policy.task_timeout_s if policy else None
        if limit and notes is not None:  # the processor's current_call (a model pool's: None)
            threading.Thread(target=watch, args=(self.processor, limit, notes), daemon=True).start()  # fmt: skip

    def process(self, shard: Shard):
        return self.processor.process(shard)

    def process_part(self, shard: Shard, part: tuple[int, int]):
        return self.processor.process_part(shard, shard.uris[part[0] : part[1]])

    def pid(self) -> int:
        return os.getpid()


def watch(owner, limit: float, notes_name: str) -> None:
    """A watchdog thread: when ``owner.current_call`` (``(start, URIs)``: a ``ShardWorker``'s
    processor, or a ``ModelWorker``) has run past ``limit`` seconds, note its URIs in the
    run's ``FailureNotes`` and end the process (a call cannot be interrupted; Ray restarts
    the actor)."""
    import ray

    notes = ray.get_actor(notes_name)
    while True:
        time.sleep(min(0.25, limit / 4))
        call = getattr(owner, "current_call", None)
        if call is not None and time.monotonic() - call[0] > limit:
            message = f"a model call ran past run.task_timeout_s = {limit:g} s"
            try:
                ray.get(notes.record.remote(call[1], message), timeout=30)
            finally:
                os._exit(70)


class FailureNotes:
    """The driver's Ray actor where watchdogs note the calls they ended: the URIs of each
    hung call's batch, and why."""

    def __init__(self) -> None:
        self.hung: dict[str, str] = {}

    def record(self, uris: list[str], message: str) -> None:
        self.hung.update(dict.fromkeys(uris, message))

    def of(self, uris: list[str]) -> dict[str, str]:
        return {uri: self.hung[uri] for uri in uris if uri in self.hung}


LIVENESS_PERIOD_S = 5.0  # how often the actors of running calls are looked at
LOST_AFTER_S = 10.0  # a call whose actor is not alive for this long is failed as a crash
# A retry bound to a restarting actor goes to an idle one after this many times the slowest
# first answer of the run's workers (setup and one shard; at least LOST_AFTER_S): a loaded
# machine restarts a worker, models and all, more slowly than a fixed few seconds.
RESTART_PATIENCE = 2.0


def node_of(actor) -> str | None:
    """The id of the node an actor runs on (None if the cluster does not say)."""
    from ray._private import state

    info = state.actors(actor_id=actor._actor_id.hex()) or {}
    return (info.get("Address") or {}).get("NodeID")


def restart_wait(first_answers: Iterable[float], elapsed: float) -> float:
    """Seconds a retry waits for its restarting actor before an idle one takes it: twice
    the slowest first answer of the run's workers (or the run's age, before any answer),
    at least ``LOST_AFTER_S``."""
    slowest = max(first_answers, default=elapsed)
    return max(LOST_AFTER_S, RESTART_PATIENCE * slowest)


class WorkerLost(Exception):
    """A call given up: its actor stayed dead or restarting (``Scheduler.lost_calls``)."""


class WorkerSetupError(RuntimeError):
    """A worker's ``setup()`` raised (a model that does not load, ...): Ray does not
    restart an actor whose constructor failed, so the run stops with the reason."""


def start_notes():
    """The ``FailureNotes`` actor, on the driver's node (it outlives any worker's node),
    named uniquely in the job: workers look it up by its name."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    name = f"fld-failure-notes-{uuid.uuid4().hex[:12]}"
    actor_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(FailureNotes)
    return actor_class.options(name=name, scheduling_strategy=here).remote(), name


def failure_kind(error: BaseException) -> str:
    """``crashed`` (a worker process or node died, in the shard's worker or a model pool
    replica it called), or ``error`` (an exception in the shard's own code)."""
    import ray.exceptions as rex

    if isinstance(error, rex.RayActorError) and getattr(error, "actor_init_failed", False):
        return "fatal"
    if isinstance(error, StepSetupError) or isinstance(getattr(error, "cause", None), StepSetupError):  # fmt: skip
        return "fatal"  # a step that loads in the background (run.setup: overlapped) failed
    dead = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, WorkerLost)  # fmt: skip
    if isinstance(error, dead):
        return "crashed"
    cause = getattr(error, "cause", None)
    if isinstance(error, rex.RayTaskError) and isinstance(cause, dead):
        return "crashed"
    return "error"


class RayExecutor:
    """Args:
    workers: number of actors (each holds its own loaded models).
    threads_per_worker: CPUs each actor reserves (and its models may use).
    address: a Ray cluster to join (``host:port`` or ``ray://...``); None starts one here.
    max_shards: a worker that has answered this many tasks (shards, or parts of one) is
        replaced by a fresh one when its last answer is in, so none is in flight
        (``run.worker_max_shards``: a guard against memory that a model leaks); 0: never.
    """

    name = "ray"

    def __init__(self, workers: int = 2, threads_per_worker: int = 1, address: str | None = None, max_shards: int = 0):  # fmt: skip
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.address = address
        self.max_shards = max_shards  # a worker is replaced after this many shards (0: never)
        self.new_actor: Callable[[], Any] | None = None  # starts one more worker, once mapping
        self.actors: list = []
        self.pool_actors: list = []
        self.placements: list[dict] = []  # one per model-pool replica, once started
        self.recoveries: dict[str, int] = {}  # worker deaths, splits, images written off

    def start_ray(self, pool_cpus: float = 0) -> bool:
        """Initialise Ray unless this process already has; True if we started it. A local
        Ray gets CPUs for the workers and the model pools' replicas (``pool_cpus``)."""
        import ray

        if ray.is_initialized():
            return False
        env = apply_offline_env()
        env["OMP_NUM_THREADS"] = str(self.threads_per_worker)
        env.update(store_env())  # the corpus's and inputs' store, for workers that write
        options = {"logging_level": "WARNING", "log_to_driver": True, "configure_logging": True}
        if self.address:
            ray.init(address=self.address, runtime_env={"env_vars": env}, **options)
        else:
            # A local Ray's processes inherit this process's environment, so the variables
            # are set here while it starts rather than in a runtime_env: an actor with a
            # runtime_env cannot use the worker processes Ray starts with the node, and
            # waits for a new one (about 1.5 s).
            needed = math.ceil(self.workers * self.threads_per_worker + pool_cpus)
            with environment(env):
                ray.init(num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False, **options)  # fmt: skip
        return True

    def start_pools(self, processor: Processor, pools: list[ModelPool], timeout: tuple = (None, None)) -> list:  # fmt: skip
        """One actor per replica of every model pool, with the pool's resources as Ray
        options (Ray gives each its GPU, or its share of one); the processor gets the
        handles before it is sent to the CPU workers."""
        import uuid

        import ray

        handles: dict[int, list] = {}
        names: dict[int, list[str]] = {}
        available = ray.cluster_resources()
        run = uuid.uuid4().hex[:12]
        for pool in pools:
            check_placeable(pool, available)
            actor_class = ray.remote(max_restarts=-1, max_task_retries=2)(ModelWorker)
            options = pool.resources.ray_options()
            # Named: the CPU workers look their replicas up by name (Ray warns that an actor
            # restarted with actor handles among its arguments may not restart).
            names[pool.key] = [f"fld-pool-{run}-{pool.key}-{i}" for i in range(pool.replicas)]
            handles[pool.key] = [
                actor_class.options(name=name, **options).remote(pool, *timeout)
                for name in names[pool.key]
            ]
        processor.attach_pools(names)
        return [actor for replicas in handles.values() for actor in replicas]

    def map(self, processor: Processor, shards: Iterable[Shard], policy: FailurePolicy | None = None) -> Iterator[ShardOutcome]:  # fmt: skip
        """Shards in, outcomes out as they finish (not in order); ``shards`` is consumed
        lazily, a few ahead of the workers, so a plan of any size streams through."""
        import ray

        policy = policy or FailurePolicy()
        queue = iter(shards)
        first = next(queue, None)
        if first is None:
            return
        # A processor with no model step of its own placement need not declare pools.
        model_pools = getattr(processor, "model_pools", None)
        pools = model_pools() if model_pools else []
        started = self.start_ray(sum(pool.resources.num_cpus * pool.replicas for pool in pools))
        notes = None
        try:
            notes, notes_name = start_notes() if policy.task_timeout_s else (None, None)
            timeout = (policy.task_timeout_s, notes_name)
            self.pool_actors = self.start_pools(processor, pools, timeout) if pools else []
            # Waits for the replicas' models to load (as the first batch would).
            self.placements = ray.get([actor.placement.remote() for actor in self.pool_actors])
            actor_class = ray.remote(
                num_cpus=self.threads_per_worker, max_restarts=-1, max_task_retries=0
            )(ShardWorker)
            self.new_actor = lambda: actor_class.remote(processor, policy, notes_name)
            self.actors = [self.new_actor() for _ in range(self.workers)]
            yield from Scheduler(self, processor, policy, notes).run(first, queue)
        finally:
            for actor in [*self.actors, *self.pool_actors, *([notes] if notes else [])]:
                ray.kill(actor)
            self.actors, self.pool_actors = [], []
            if started:
                ray.shutdown()


class Scheduler:
    """The driver's loop: one task per worker at a time, retries, splits and write-offs
    (see the module docstring)."""

    def __init__(self, executor: RayExecutor, processor: Processor, policy: FailurePolicy, notes):  # fmt: skip
        self.executor = executor
        self.processor = processor
        self.policy = policy
        self.notes = notes
        self.retry: deque[Task] = deque()  # tasks to run before new shards
        self.isolations: dict[int, Isolation] = {}
        self.recoveries = executor.recoveries
        self.suspects: dict = {}  # call -> when its actor was first seen not alive
        self.nodes: dict[int, str | None] = {}  # actor index -> the node it last answered from
        self.answered: Counter = Counter()  # actor index -> tasks answered (worker_max_shards)

    def run(self, first: Shard, queue: Iterator[Shard]) -> Iterator[ShardOutcome]:
        import ray

        pending = iter([Task(first)])
        actors = self.executor.actors
        running: dict = {}  # call -> (task, actor index); task None: a probe of a restarting actor
        idle = list(range(len(actors)))
        bound: dict[int, Task] = {}  # a retry waits for its actor's restart, then runs there
        bound_since: dict[int, float] = {}
        started = last_look = time.monotonic()
        first_answers: dict[int, float] = {}  # actor index -> seconds to its first answer
        exhausted = False

        def next_task() -> Task | None:
            nonlocal exhausted
            if self.retry:
                return self.retry.popleft()
            task = next(pending, None)
            if task is not None:
                return task
            shard = next(queue, None)
            exhausted = shard is None
            if shard is not None:
                return Task(shard)
            # Nothing else to do: a retry whose actor has not come back for restart_wait()
            # (a slow restart, or a node that left unnoticed) goes to this one instead.
            now = time.monotonic()
            for index, since in list(bound_since.items()):
                if now - since >= restart_wait(first_answers.values(), now - started):
                    del bound_since[index]
                    return bound.pop(index)
            return None

        def send(task: Task, index: int) -> None:
            actor = actors[index]
            call = actor.process.remote(task.shard) if task.part is None else actor.process_part.remote(task.shard, task.part)  # fmt: skip
            running[call] = (task, index)

        while True:
            while idle:
                task = next_task()
                if task is None:
                    break
                send(task, idle.pop())
            if exhausted and not self.retry and not bound and all(t is None for t, _ in running.values()):  # fmt: skip
                return
            done, _ = ray.wait(list(running), num_returns=1, timeout=LIVENESS_PERIOD_S)
            if time.monotonic() - last_look >= LIVENESS_PERIOD_S:
                # A call whose actor's node left may never answer: look, every period.
                last_look = time.monotonic()
                for call, error in self.lost_calls(running, actors):
                    task, index = running.pop(call)
                    running[actors[index].pid.remote()] = (None, index)
                    outcome, again = self.failed(task, error)
                    if again is not None:
                        self.retry.append(again)  # its node left: any worker takes it
                    if outcome is not None:
                        yield outcome
            if not done or done[0] not in running:
                continue
            task, index = running.pop(done[0])
            self.suspects.pop(done[0], None)
            first_answers.setdefault(index, time.monotonic() - started)
            try:
                result = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - sorted below
                kind = failure_kind(exc)
                if kind == "fatal":  # Ray does not restart an actor whose setup() raised
                    reason = exc.cause if isinstance(getattr(exc, "cause", None), StepSetupError) else exc  # fmt: skip
                    raise WorkerSetupError(f"a worker could not set up its steps: {reason}") from exc  # fmt: skip
                # Its actor is being restarted (or was): a task sent now would fail as
                # "unavailable" and count as a try, so it gets one once it answers a probe.
                if task is None:
                    time.sleep(0.2)
                running[actors[index].pid.remote()] = (None, index)
                outcome = None
                if task is not None:
                    if kind == "crashed" and self.node_gone(index):
                        exc = WorkerLost(f"its node left the cluster: {exc}")
                    outcome, again = self.failed(task, exc)
                    if again is not None and (isinstance(exc, WorkerLost) or getattr(exc, "preempted", False)):  # fmt: skip
                        self.retry.append(again)  # its node left or is going: any worker takes it
                    elif again is not None:
                        bound[index], bound_since[index] = again, time.monotonic()
            else:
                if task is None or index not in self.nodes:  # started, or restarted: where?
                    self.nodes[index] = node_of(actors[index])
                if task is None and index in bound:
                    bound_since.pop(index, None)
                    send(bound.pop(index), index)
                else:
                    if task is not None:
                        self.recycle_if_due(index)
                    idle.append(index)
                outcome = self.succeeded(task, result) if task is not None else None
            if outcome is not None:
                yield outcome

    def recycle_if_due(self, index: int) -> None:
        """After actor ``index`` answered a task: when it has answered ``max_shards``, it
        is killed (it is idle: nothing of it is in flight) and a fresh worker takes its
        place; tasks sent to it wait for its ``setup()``."""
        import ray

        self.answered[index] += 1
        limit = self.executor.max_shards
        if not limit or self.answered[index] < limit:
            return
        ray.kill(self.executor.actors[index], no_restart=True)
        self.executor.actors[index] = self.executor.new_actor()
        self.answered[index] = 0
        self.nodes.pop(index, None)
        self.recoveries["recycled"] = self.recoveries.get("recycled", 0) + 1

    def node_gone(self, index: int) -> bool:
        """Whether the node that actor ``index`` last answered from has left the cluster
        (then its restart waits for room that may never come, and the retry goes to any
        worker; a process that died on a live node is restarted there at once)."""
        import ray

        node = self.nodes.get(index)
        return node is not None and node not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    def lost_calls(self, running: dict, actors: list) -> list[tuple]:
        """Calls whose actor has not been alive for ``LOST_AFTER_S``: its node left the
        cluster, and Ray holds the call until the actor is restarted, which may never be
        (no room elsewhere). They are failed here, as crashes."""
        from ray._private import state

        now = time.monotonic()
        lost = []
        for call, (task, index) in running.items():
            if task is None:
                continue
            info = state.actors(actor_id=actors[index]._actor_id.hex()) or {}
            if info.get("State") == "ALIVE":
                self.suspects.pop(call, None)
                continue
            since = self.suspects.setdefault(call, now)
            if now - since >= LOST_AFTER_S:
                del self.suspects[call]
                lost.append((call, WorkerLost(f"worker actor {info.get('State', 'gone')} for {now - since:.0f} s (its node left?)")))  # fmt: skip
        return lost

    def succeeded(self, task: Task, result) -> ShardOutcome | None:
        if task.part is None:
            return ShardOutcome(task.shard, marker=result.marker)
        isolation = self.isolations[task.shard.index]
        isolation.results[task.part] = result
        isolation.open_parts -= 1
        return self.finish(isolation)

    def failed(self, task: Task, error: BaseException) -> tuple[ShardOutcome | None, Task | None]:
        """What follows a failed task: an outcome (the shard failed, or its isolation is
        complete), and/or the same task again, for its actor once restarted. (A worker whose
        setup failed stops the run before this: ``run``.)"""
        kind = failure_kind(error)
        isolation = self.isolations.get(task.shard.index)
        if kind == "error" or (isolation is not None and isolation.error is not None):
            if isolation is None:  # a whole shard
                return ShardOutcome(task.shard, error=error), None
            isolation.open_parts -= 1  # the other parts still out are let finish
            isolation.error = isolation.error or error
            return self.finish(isolation), None
        self.count("worker_deaths")
        if isinstance(error, WorkerLost) or getattr(error, "preempted", False):
            # The machine went, not the images: the same task again, not counted as a try.
            return None, Task(task.shard, task.part, task.attempt)
        start, stop = task.part or (0, len(task.shard.uris))
        hung = self.hung(task.uris)
        retried = (stop - start == 1 or task.part is None) and not hung.keys() & set(task.uris)
        if retried and task.attempt < self.policy.max_attempts:  # a dying node, not the images?
            return None, Task(task.shard, task.part, task.attempt + 1)
        isolation = self.isolations.setdefault(task.shard.index, Isolation(task.shard))
        if task.part is not None:
            isolation.open_parts -= 1
        if stop - start == 1:
            isolation.isolated.append(self.written_off(task.shard.uris[start], error, hung))
            return self.finish(isolation), None
        middle = (start + stop) // 2
        self.count("shard_splits")
        for part in ((start, middle), (middle, stop)):
            isolation.open_parts += 1
            self.retry.append(Task(task.shard, part))
        return None, None

    def hung(self, uris: tuple[str, ...]) -> dict[str, str]:
        """Those of ``uris`` whose batch a watchdog ended, and why."""
        import ray

        if self.notes is None:
            return {}
        try:
            return ray.get(self.notes.of.remote(list(uris)), timeout=60)
        except (ray.exceptions.RayError, TimeoutError):  # notes lost: a crash, not a hang
            return {}

    def written_off(self, uri: str, error: BaseException, hung: dict[str, str]):
        """The ``errors`` row of an image isolated from its shard: ``timeout`` if a watchdog
        ended its batch (``hung``, from ``hung()``), else ``worker_crashed``."""
        from engine.records import ErrorRecord

        if uri in hung:
            self.count("timeout")
            return ErrorRecord(uri, "worker", "timeout", hung[uri])
        self.count("worker_crashed")
        message = f"the worker process died on this image in every try ({self.policy.max_attempts}): {type(error).__name__}: {error}"  # fmt: skip
        return ErrorRecord(uri, "worker", "worker_crashed", message[:2000])

    def finish(self, isolation: Isolation) -> ShardOutcome | None:
        if isolation.open_parts > 0:
            return None
        del self.isolations[isolation.shard.index]
        if isolation.error is not None:
            return ShardOutcome(isolation.shard, error=isolation.error)
        parts = [isolation.results[key] for key in sorted(isolation.results)]
        written_off = sorted(isolation.isolated, key=lambda error: error.uri)
        try:
            result = self.processor.assemble(isolation.shard, parts, written_off)
        except Exception as exc:  # noqa: BLE001 - the caller decides (max_failed_shards)
            return ShardOutcome(isolation.shard, error=exc)
        return ShardOutcome(isolation.shard, marker=result.marker)

    def count(self, what: str) -> None:
        self.recoveries[what] = self.recoveries.get(what, 0) + 1


def make_executor(run_config, kind: str | None = None) -> LocalExecutor | RayExecutor:
    """``kind``: ``local`` or ``ray`` (``pipelines.annotate.choose_executor`` resolves
    ``auto``); None: ``run_config.executor``, where ``auto`` means Ray."""
    if (kind or run_config.executor) == "local":
        return LocalExecutor()
    return RayExecutor(
        run_config.workers, run_config.threads_per_worker, run_config.address,
        run_config.worker_max_shards,
    )  # fmt: skip
