"""The step contract: every annotator and every filter is a ``Step``.

A step is a pydantic dataclass whose fields are its config (validated when the config is
read, before any model loads), with class attributes as data:

- ``name`` and ``version``: the rows it writes name ``source = "name@version"``; bump
  ``version`` whenever its output for the same image can change;
- ``stage``: when it runs in a batch, one of ``STAGES`` (the order is data, here);
- ``resources``: what one instance needs, as Ray resource names
  (``{"num_cpus": 1}``);
- ``isolate_failures``: whether a failure on one image is contained to that image (the
  batch is rolled back and retried image by image, the failing image becomes an
  ``errors`` row whose stage is the step's ``source``). Annotators isolate: the image keeps
  the other annotators' rows. Filters do not: an image whose filter failed would keep
  unfiltered rows marked ``kept``, so their failure fails the shard.

Lifecycle (NeMo Curator's): ``setup(worker)`` once per worker, where the model is loaded
(never in ``__init__``: instances are pickled to Ray workers), then ``run(samples)`` on
each batch; ``run`` mutates the samples in place (appends rows, or flips ``kept``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.records import ErrorRecord, Sample

# The config of every step: unknown keys are errors.
STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

# The stages of a batch, in the order they run; each stage sees what the earlier ones kept.
STAGES: tuple[str, ...] = (
    "regions",  # region annotators: decoded images -> Sample.regions
    "region_filters",  # geometry, confidence, NMS, fusion: Sample.regions kept or dropped
    "texts",  # captioners and dense region captioners: see the kept regions
    "text_filters",  # the spaCy complexity filter: Sample.texts
    "phrases",  # phrase extraction and grounding: see the kept texts
    "phrase_filters",  # phrase confidence: Sample.phrases
    "masks",  # segmenters: polygons for the kept phrase boxes (and object regions)
)


class Resources(BaseModel):
    """What one instance of a step needs, as data; the Ray executor turns it into actor
    options (``ray_options``). In a config: ``annotators.N.resources`` (fractional GPUs
    allowed: ``num_gpus: 0.5`` puts two replicas on one GPU)."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: Annotated[float, Field(ge=0)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0
    memory: Annotated[int, Field(ge=0)] | None = None  # bytes
    custom: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    def ray_options(self) -> dict:
        options: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@dataclass(frozen=True)
class WorkerContext:
    """What a worker gives its steps at ``setup``: ``threads`` its models may use and the
    ``device`` a model with ``device: auto`` runs on: ``cuda:0`` when the worker holds a
    GPU (under Ray, the one Ray assigned it: Ray sets ``CUDA_VISIBLE_DEVICES`` so that it
    is ``cuda:0``), ``cpu`` in a Ray worker without one, ``auto`` outside Ray (decided by
    ``resolve_device``). ``accelerator_ids``: the GPU ids Ray assigned."""

    threads: int = 1
    device: str = "cpu"
    accelerator_ids: tuple[str, ...] = ()


def worker_context(threads: int = 1) -> WorkerContext:
    """The context of this process: inside a Ray worker, the GPUs Ray assigned it (none
    means CPU, whatever the machine has: Ray hides unassigned GPUs); outside Ray, ``auto``:
    a step that asks is given CUDA if torch sees a GPU (``resolve_device``; torch is not
    imported here, only by the steps that use it)."""
    import os
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id():
        ids = tuple(str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if ids and visible != ",".join(ids):  # what torch will see must be what Ray assigned
            raise RuntimeError(f"Ray assigned GPUs {ids}, CUDA_VISIBLE_DEVICES is {visible!r}")
        return WorkerContext(threads, "cuda:0" if ids else "cpu", ids)
    return WorkerContext(threads, "auto")


def resolve_device(device: str, worker: WorkerContext) -> str:
    """A step's ``device`` setting: ``auto`` takes the worker's (outside Ray: CUDA if torch
    sees a GPU, else CPU); anything else is kept."""
    if device != "auto":
        return device
    if worker.device != "auto":
        return worker.device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class Step:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    stage: ClassVar[str]
    resources: ClassVar[dict] = {"num_cpus": 1}
    isolate_failures: ClassVar[bool] = True

    @property
    def source(self) -> str:
        """``name@version``; a step with a ``source_name`` field (several instances of one
        model, e.g. the refinement loop's students) writes that name instead."""
        return f"{getattr(self, 'source_name', None) or self.name}@{self.version}"

    @property
    def timing_key(self) -> str:
        """The key of this step's seconds in a shard marker's ``timings``."""
        return self.source

    @property
    def counts(self) -> Counter:
        """What this step counted in the current shard (filters: kept rows and each drop
        reason); the processor clears it per shard and stores it in the shard's marker."""
        if not hasattr(self, "_counts"):
            self._counts = Counter()
        return self._counts

    def models(self) -> list:
        """The torch modules this step loaded in ``setup`` (none by default): where their
        parameters are is reported with a model pool's placement (``run.json``)."""
        return []

    def preflight(self) -> str | None:
        """Why this step's model cannot load on this machine, as one sentence, or None.
        Cheap (files present, runtime able to run them; nothing loads): ``fld run`` asks every
        step before Ray starts, and ``fld doctor`` prints the answers."""
        return None

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008 - frozen
        """Load the model. Called once per worker before the first batch."""

    def run(self, samples: list[Sample]) -> None:
        raise NotImplementedError

    def run_isolated(self, batch: list[Sample], errors: list) -> None:
        """``run``, with failures contained per image when ``isolate_failures`` (see the
        module docstring); ``errors`` collects the ``ErrorRecord`` of failed images."""
        run_step(self, batch, errors)


class RemoteStep(Step):
    """A step that runs in its own pool of Ray actors (``engine.executors.ModelWorker``):
    a model step with resources of its own (a GPU), scaled apart from the CPU work. It
    stands in for the step in the shard processor: same name, version, stage and source;
    each batch goes to one replica (in turn), which runs the step with its failure
    isolation and sends back the rows it added and the errors."""

    isolate_failures: ClassVar[bool] = False

    def __init__(self, step: Step, replicas: list):
        self.name, self.version, self.stage = step.name, step.version, step.stage
        self._source, self._timing_key = step.source, step.timing_key
        self.replicas = list(replicas)
        self._turn = 0

    @property
    def source(self) -> str:
        return self._source

    @property
    def timing_key(self) -> str:
        return self._timing_key

    def replica(self, index: int):
        """The handle of replica ``index``: ``replicas`` holds actor handles, or the names
        of named actors (what the Ray executor gives), looked up once."""
        import ray

        if isinstance(self.replicas[index], str):
            self.replicas[index] = ray.get_actor(self.replicas[index])
        return self.replicas[index]

    def run(self, samples: list[Sample]) -> None:
        self.run_isolated(samples, [])

    def run_isolated(self, batch: list[Sample], errors: list) -> None:
        import ray

        replica = self.replica(self._turn % len(self.replicas))
        self._turn += 1
        rows, remote_errors = ray.get(replica.run.remote(batch))
        for sample, state in zip(batch, rows, strict=True):
            sample.restore(state)
        errors.extend(remote_errors)


def order_steps(steps: list[Step]) -> list[Step]:
    """Steps in ``STAGES`` order; within a stage, in the order given (the config's)."""
    for step in steps:
        if step.stage not in STAGES:
            raise ValueError(f"step {step.name}: unknown stage {step.stage!r}; known: {STAGES}")
    return sorted(steps, key=lambda step: STAGES.index(step.stage))


def run_step(step: Step, batch: list[Sample], errors: list) -> None:
    """Run one step on a batch. If the step isolates failures and the batch call fails,
    undo what it did and retry image by image, so one bad image costs only its own rows
    (an ``errors`` row with the step's source as the stage)."""
    if not batch:
        return
    if not step.isolate_failures:
        step.run(batch)
        return
    saved = [sample.snapshot() for sample in batch]
    try:
        step.run(batch)
        return
    except Exception as exc:  # noqa: BLE001 - isolate the failing image below
        for sample, state in zip(batch, saved, strict=True):
            sample.restore(state)
        if len(batch) == 1:
            sample = batch[0]
            message = f"{type(exc).__name__}: {exc}"[:2000]
            errors.append(
                ErrorRecord(sample.uri, step.source, "annotator_failed", message, sample.image_id)
            )
            return
    for sample in batch:
        run_step(step, [sample], errors)


class StepSetupError(RuntimeError):
    """A step's ``setup()`` raised (a model that does not load, ...). It surfaces when a
    batch first needs the step; executors stop the run with it instead of counting it
    against the shard (every shard would fail the same way)."""


class StepLoader:
    """Sets up a worker's steps, in their order, in one background thread, so that a
    batch can run through the steps already loaded while the later ones still load
    (``run.setup: overlapped``): the SSD detects on the first batches while spaCy and the
    embedder load. One thread, in order, because steps may share what they load (the two
    spaCy steps share one pipeline) and most of a set-up is imports, which hold the GIL.

    ``ready(index)`` says whether step ``index`` is loaded; ``wait(index)`` blocks until it
    is, and raises ``StepSetupError`` if its ``setup()`` (or an earlier step's) failed.
    ``in_turn=True`` loads every step in the calling thread, before returning (``run.setup:
    before_work``, the default: on 2 CPU cores overlapping did not shorten a run,
    ``bench/results/setup_overlap.json``). ``loaded_at``: ``time.time()`` when the last step
    was loaded."""

    def __init__(self, steps: list[Step], worker: WorkerContext, in_turn: bool = False):
        import threading

        self.steps = steps
        self.worker = worker
        self.loaded = 0  # steps[:loaded] are set up
        self.failure: tuple[int, BaseException] | None = None
        self.loaded_at: float | None = None
        self.changed = threading.Condition()
        if in_turn:
            self.load_all()
            self.wait_all()  # raises here, as a plain setup() would
        else:
            # Not a daemon: a process that ends while a step still loads (a run whose
            # shards had no decodable image) waits for it, rather than being finalised
            # under an import that is running in C.
            threading.Thread(target=self.load_all, name="fld-step-setup").start()

    def load_all(self) -> None:
        import time

        for index, step in enumerate(self.steps):
            try:
                step.setup(self.worker)
            except KeyboardInterrupt:  # in_turn, in the main thread: Ctrl-C stays Ctrl-C
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
                with self.changed:
                    self.failure = (index, exc)
                    self.changed.notify_all()
                return
            with self.changed:
                if index + 1 == len(self.steps):
                    self.loaded_at = time.time()
                self.loaded = index + 1
                self.changed.notify_all()
        if not self.steps:
            self.loaded_at = time.time()

    def wait_all(self) -> None:
        """Block until every step is loaded (raises as ``wait`` does)."""
        if self.steps:
            self.wait(len(self.steps) - 1)

    def ready(self, index: int) -> bool:
        return index < self.loaded

    def wait(self, index: int) -> None:
        with self.changed:
            while index >= self.loaded and self.failure is None:
                self.changed.wait()
        if index >= self.loaded:
            failed, error = self.failure
            step = self.steps[failed]
            raise StepSetupError(
                f"step {step.source} could not set up: {type(error).__name__}: {error}"
            ) from error
