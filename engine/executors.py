"""Executors run a ``ShardProcessor`` over shards and yield results as shards finish.

- ``RayExecutor`` (the default): one Ray actor per worker; each actor calls the
  processor's ``setup()`` once (models loaded once per worker) and then processes one
  whole shard per task. It starts a local Ray in this process, joins the cluster at
  ``address``, or reuses a Ray that this process already initialised. Actors are
  restarted and their task retried if a worker process dies mid-shard.
- ``LocalExecutor``: the same processor in this process, one shard after the other, for
  debugging and unit tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from engine.offline import apply_offline_env
from engine.sources import Shard


class Processor(Protocol):
    def setup(self) -> None: ...
    def process(self, shard: Shard): ...


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
        processor.setup()
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

    def start_ray(self) -> bool:
        """Initialise Ray unless this process already has; True if we started it."""
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
            needed = self.workers * self.threads_per_worker
            with environment(env):
                ray.init(num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False, **options)  # fmt: skip
        return True

    def map(self, processor: Processor, shards: Iterable[Shard]) -> Iterator:
        import ray

        pending_shards = list(shards)
        if not pending_shards:
            return
        started = self.start_ray()
        try:
            actor_class = ray.remote(
                num_cpus=self.threads_per_worker, max_restarts=3, max_task_retries=3
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
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []
            if started:
                ray.shutdown()


def make_executor(run_config) -> LocalExecutor | RayExecutor:
    if run_config.executor == "local":
        return LocalExecutor()
    return RayExecutor(run_config.workers, run_config.threads_per_worker, run_config.address)
