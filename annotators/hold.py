"""A stand-in model step for the executor's benchmarks and placement checks: it holds its
worker (and whatever resources Ray gave it, a GPU included) for a fixed time per image,
like a model call that keeps an accelerator busy, and adds no row. With ``spin`` it keeps a
CPU core busy for that time instead of sleeping (a stand-in for CPU work).

With ``log`` set, every batch appends one JSON line to that file: ``start`` and ``end``
(``time.time()`` seconds), ``images``, ``pid``, and the ``device`` and ``gpu_ids`` the
worker was given (``engine.steps.WorkerContext``), so a test or a benchmark can see where
the step ran and how busy it was.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.records import Region
from engine.steps import WorkerContext


@dataclass(config=STRICT)
class HoldAnnotator(Annotator):
    """Args:
    seconds_per_image: how long each image holds the worker.
    log: a file to append one JSON line per batch to (None: no log).
    spin: burn CPU for the time instead of sleeping.
    """

    name: ClassVar[str] = "hold"
    version: ClassVar[str] = "1"

    seconds_per_image: Annotated[float, Field(ge=0.0, le=60.0)] = 0.05
    log: str | None = None
    spin: bool = False

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._worker = worker

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        start = time.time()
        until = time.perf_counter() + self.seconds_per_image * len(images)
        if self.spin:
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(self.seconds_per_image * len(images))
        if self.log:
            line = {
                "start": start,
                "end": time.time(),
                "images": len(images),
                "pid": os.getpid(),
                "device": self._worker.device,
                "gpu_ids": list(self._worker.accelerator_ids),
            }
            with open(self.log, "a") as handle:  # one short write per batch: atomic append
                handle.write(json.dumps(line) + "\n")
        return [[] for _ in images]
