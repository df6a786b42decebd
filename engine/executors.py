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
keep one replica busy. The shard stays the unit of work and of commit. Actors that die
are restarted for the whole run (``max_restarts=-1``) and their call retried.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from engine.offline import apply_offline_env
from engine.sources import Shard
from engine.steps import Resources, Step, worker_context


class Processor(Protocol):
    def setup(self) -> None: ...
    def process(self, shard: Shard): ...
    def model_pools(self) -> list[ModelPool]: ...
    def attach_pools(self, replicas: dict[int, list]) -> None: ...


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
    for name, amount in wanted.items():
        if amount > available.get(name, 0):
            raise PlacementError(
                f"annotators.{pool.key}.resources asks {amount} {name} per replica; the Ray "
                f"cluster has {available.get(name, 0)} (start it with the resource, e.g. "
                "`ray start --num-gpus N`, and pass --address)"
            )


class ModelWorker:
    """The Ray actor of a model pool: one step, set up once with the device Ray assigned
    this actor (``engine.steps.worker_context``), running the batches CPU workers send."""

    def __init__(self, pool: ModelPool):
        apply_offline_env()
        self.step = pool.build()
        self.context = worker_context(pool.threads)
        self.step.setup(self.context)

    def run(self, batch: list) -> tuple[list, list]:
        """Run the step on a batch (with its per-image failure isolation); return each
        sample's rows (``Sample.snapshot``) and the errors."""
        errors: list = []
        self.step.run_isolated(batch, errors)
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

    def map(self, processor: Processor, shards: Iterable[Shard]) -> Iterator:
        processor.setup()  # every step in this process, model pools included
        for shard in shards:
            yield processor.process(shard)


class ShardWorker:
    """The Ray actor: holds one set-up processor for its lifetime."""

    def __init__(self, processor: Processor):
        apply_offline_env()
        self.processor = processor
        self.processor.setup()

    def process(self, shard: Shard):
        return self.processor.process(shard)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    """Args:
    workers: number of actors (each holds its own loaded models).
    threads_per_worker: CPUs each actor reserves (and its models may use).
    address: a Ray cluster to join (``host:port`` or ``ray://...``); None starts one here.
    """

    name = "ray"

    def __init__(self, workers: int = 2, threads_per_worker: int = 1, address: str | None = None):
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.address = address
        self.actors: list = []
        self.pool_actors: list = []
        self.placements: list[dict] = []  # one per model-pool replica, once started

    def start_ray(self, pool_cpus: float = 0) -> bool:
        """Initialise Ray unless this process already has; True if we started it. A local
        Ray gets CPUs for the workers and the model pools' replicas (``pool_cpus``)."""
        import ray

        if ray.is_initialized():
            return False
        env = apply_offline_env()
        env["OMP_NUM_THREADS"] = str(self.threads_per_worker)
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

    def start_pools(self, processor: Processor, pools: list[ModelPool]) -> list:
        """One actor per replica of every model pool, with the pool's resources as Ray
        options (Ray gives each its GPU, or its share of one); the processor gets the
        handles before it is sent to the CPU workers."""
        import ray

        handles: dict[int, list] = {}
        available = ray.cluster_resources()
        for pool in pools:
            check_placeable(pool, available)
            actor_class = ray.remote(max_restarts=-1, max_task_retries=3)(ModelWorker)
            options = pool.resources.ray_options()
            handles[pool.key] = [
                actor_class.options(**options).remote(pool) for _ in range(pool.replicas)
            ]
        processor.attach_pools(handles)
        return [actor for replicas in handles.values() for actor in replicas]

    def map(self, processor: Processor, shards: Iterable[Shard]) -> Iterator:
        import ray

        pending_shards = list(shards)
        if not pending_shards:
            return
        # A processor with no model step of its own placement need not declare pools.
        model_pools = getattr(processor, "model_pools", None)
        pools = model_pools() if model_pools else []
        started = self.start_ray(sum(pool.resources.num_cpus * pool.replicas for pool in pools))
        try:
            self.pool_actors = self.start_pools(processor, pools) if pools else []
            # Waits for the replicas' models to load (as the first batch would).
            self.placements = ray.get([actor.placement.remote() for actor in self.pool_actors])
            actor_class = ray.remote(
                num_cpus=self.threads_per_worker, max_restarts=-1, max_task_retries=3
            )(ShardWorker)
            count = min(self.workers, len(pending_shards))
            self.actors = [actor_class.remote(processor) for _ in range(count)]
            running = {}
            queue = iter(pending_shards)
            for actor in self.actors:
                shard = next(queue, None)
                if shard is not None:
                    running[actor.process.remote(shard)] = actor
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                actor = running.pop(done[0])
                result = ray.get(done[0])
                shard = next(queue, None)
                if shard is not None:
                    running[actor.process.remote(shard)] = actor
                yield result
        finally:
            for actor in [*self.actors, *self.pool_actors]:
                ray.kill(actor)
            self.actors, self.pool_actors = [], []
            if started:
                ray.shutdown()


def make_executor(run_config) -> LocalExecutor | RayExecutor:
    if run_config.executor == "local":
        return LocalExecutor()
    return RayExecutor(run_config.workers, run_config.threads_per_worker, run_config.address)
