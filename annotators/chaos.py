"""A failure drill, not a model: on chosen images it kills its own worker process or
hangs, as a segfaulting decoder, an out-of-memory kill or a deadlocked model call would,
and on every other image it does nothing (no row). Put it in a config to rehearse how a
run on a cluster copes (``engine.executors``: the image is isolated and becomes a
``worker_crashed`` or ``timeout`` errors row, the rest of its shard is written), and in
the tests that check it.

Images are chosen by the end of their URI (``bus.jpg`` matches ``/data/x/bus.jpg`` and
``s3://b/bus.jpg``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.records import Sample


@dataclass(config=STRICT)
class ChaosAnnotator(Annotator):
    """Args:
    crash_on: URI endings of the images on which the process SIGKILLs itself.
    hang_on: URI endings of the images on which the call sleeps ``hang_s`` seconds.
    hang_s: how long a hang lasts (longer than ``run.task_timeout_s`` to be one).
    """

    name: ClassVar[str] = "chaos"
    version: ClassVar[str] = "1"

    crash_on: list[str] = ()
    hang_on: list[str] = ()
    hang_s: Annotated[float, Field(ge=0.0)] = 3600.0

    def run(self, samples: list[Sample]) -> None:
        for sample in samples:
            if any(sample.uri.endswith(name) for name in self.crash_on):
                os.kill(os.getpid(), signal.SIGKILL)
            if any(sample.uri.endswith(name) for name in self.hang_on):
                time.sleep(self.hang_s)
