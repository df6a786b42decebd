"""The annotator interface: a ``Step`` (``engine.steps``: config as fields, ``name``,
``version``, ``stage``, ``resources``, ``setup(worker)`` then ``run(batch)``) that adds
rows. ``Annotator.annotate(images)`` takes a batch of ``HxWx3`` uint8 RGB arrays and
returns one list of ``Region`` per image, in pixel coordinates; ``SampleAnnotator``
sees whole samples after the region filters.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.records import Region, Sample
from engine.steps import STRICT, Step

__all__ = ["STRICT", "Annotator", "SampleAnnotator", "hub_id_or_folder", "model_folder_of_type"]


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


def model_folder_of_type(model: str, model_types: tuple[str, ...]) -> str:
    """``hub_id_or_folder``, and for a local folder, its ``config.json`` must name one of
    ``model_types`` (read as JSON when the config is read, before Ray starts or any
    model loads). A hub id's type is checked when the model loads."""
    import json
    from pathlib import Path

    resolved = hub_id_or_folder(model)
    folder = Path(resolved)
    if not folder.is_absolute():
        return resolved
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{model} has no config.json: not a transformers model folder")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{config_file} is not a readable model config: {exc}") from None
    if model_type not in model_types:
        raise ValueError(
            f"{model} is a {model_type!r} model; this annotator takes {list(model_types)}"
        )
    return resolved


class Annotator(Step):
    """A region annotator (``stage = "regions"``): sees the decoded images before any
    filter. Subclasses implement ``annotate(images)``: a batch of ``HxWx3`` uint8 RGB
    arrays in, one list of ``Region`` per image out, in pixel coordinates."""

    stage: ClassVar[str] = "regions"

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        raise NotImplementedError

    def run(self, samples: list[Sample]) -> None:
        per_image = self.annotate([sample.pixels for sample in samples])
        for sample, regions in zip(samples, per_image, strict=True):
            sample.regions.extend(regions)


class SampleAnnotator(Annotator):
    """Annotates whole samples after the region filters; ``annotate_samples`` mutates the
    samples of a batch in place. ``stage`` says when it runs (``engine.steps.STAGES``):

    - ``texts``: after the region filters: captioners (append ``Text`` to
      ``sample.texts``), dense region captioners (append ``dense`` regions);
    - ``phrases``: after the text filters: phrase extraction and grounding (``sample.phrases``);
    - ``masks``: after the phrase filters: segmenters (fill ``polygon`` of kept phrase
      boxes, and of object regions when configured)."""

    stage: ClassVar[str] = "texts"

    def annotate_samples(self, samples: list[Sample]) -> None:
        raise NotImplementedError

    def run(self, samples: list[Sample]) -> None:
        self.annotate_samples(samples)
