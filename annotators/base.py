"""The annotator interface.

An annotator is a pydantic dataclass whose fields are its config (validated when the
config is read, before any model loads), with three class attributes:

- ``name`` and ``version``: every row it writes has ``source = f"{name}@{version}"``;
  bump ``version`` whenever its output for the same image can change;
- ``resources``: what one instance needs, as data (``{"num_cpus": 1}``).

``setup()`` loads the model once per worker (never in ``__init__``: instances are
pickled to Ray workers); ``annotate(images)`` takes a batch of ``HxWx3`` uint8 RGB
arrays and returns one list of ``Region`` per image, in pixel coordinates.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import ConfigDict

from engine.records import Region, Sample

STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def hub_id_or_folder(model: str) -> str:
    """Validate a transformers ``model`` setting: a hub id is kept as given; anything that
    looks like a path must be an existing folder (returned absolute)."""
    from pathlib import Path

    if not model.strip():
        raise ValueError("model must be a hub id or a local folder")
    if model.startswith(("/", ".", "~")) or Path(model).exists():
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ValueError(f"model folder not found: {model}")
        return str(folder.resolve())
    return model


class Annotator:
    """Region annotators (``stage = "regions"``) see the decoded images before any
    filter; sample annotators (``SampleAnnotator``, stages ``texts``, ``phrases``, ``masks``) run after
    the region filters and see each image's kept regions."""

    name: ClassVar[str]
    version: ClassVar[str]
    resources: ClassVar[dict] = {"num_cpus": 1}
    stage: ClassVar[str] = "regions"

    @property
    def source(self) -> str:
        """``name@version``; an annotator with a ``source_name`` field (several instances
        of one model, e.g. the refinement loop's students) writes that name instead."""
        return f"{getattr(self, 'source_name', None) or self.name}@{self.version}"

    def setup(self) -> None:
        """Load the model. Called once per worker before the first batch."""

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        raise NotImplementedError


class SampleAnnotator(Annotator):
    """Annotates whole samples after the region filters; ``annotate_samples`` mutates the
    samples of a batch in place. ``stage`` says when it runs (``pipelines.annotate.STEP_ORDER``):

    - ``texts``: after the region filters: captioners (append ``Text`` to
      ``sample.texts``), dense region captioners (append ``dense`` regions);
    - ``phrases``: after the text filters: phrase extraction and grounding (``sample.phrases``);
    - ``masks``: after the phrase filters: segmenters (fill ``polygon`` of kept phrase
      boxes, and of object regions when configured)."""

    stage: ClassVar[str] = "texts"

    def annotate_samples(self, samples: list[Sample]) -> None:
        raise NotImplementedError
