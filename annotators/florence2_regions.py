"""Florence-2 as a region specialist: ``<OD>`` (objects), ``<DENSE_REGION_CAPTION>``
(dense region captions) and ``<OCR_WITH_REGION>`` (text lines with quads), each image
encoded once for all tasks (``annotators.florence2_model``), one batched ``generate`` per
task. Phrase grounding (``<CAPTION_TO_PHRASE_GROUNDING>``) runs after the text filters, so
it is ``hf_grounder`` with a Florence-2 model, not this annotator.

Output, one ``Region`` per parsed instance, appended to ``sample.regions`` before the
region filters (so confidence, NMS and fusion judge them with the other detectors'):

- ``<OD>`` -> kind ``object``, ``label`` the category name Florence-2 wrote (lower case);
- ``<DENSE_REGION_CAPTION>`` -> kind ``dense``, ``label`` the region's caption;
- ``<OCR_WITH_REGION>`` -> kind ``ocr``, ``label`` the line's text, ``quad`` the 8
  coordinates Florence-2 wrote (``x0 y0 ... x3 y3``, its order: clockwise from the top
  left), the box their bounds.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the image: ``post_process_generation``'s bin
centres, corners put in order, clipped to the image; instances with an empty label or a
side under ``min_box_side`` are skipped. ``score``: the geometric mean of the probabilities
of the instance's own location tokens (4 for a box, 8 for a quad), or of the whole
output's tokens where the parser skipped a malformed instance and the two cannot be
matched. ``source``: ``florence2_regions@1`` (or ``<source_name>@1``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator, model_folder_of_type
from annotators.florence2_model import MODEL_TYPE, Florence2, ModelSource
from annotators.hf_generation import Decoding, Generated
from engine.records import Region
from engine.steps import WorkerContext, resolve_device

TASKS = {
    "od": ("<OD>", "object", 4),
    "dense_region_caption": ("<DENSE_REGION_CAPTION>", "dense", 4),
    "ocr_with_region": ("<OCR_WITH_REGION>", "ocr", 8),
}


@dataclass(config=STRICT)
class Florence2Regions(Annotator):
    """Args:
    model: a Florence-2 hub id (``florence-community/Florence-2-large``), read from the
        local hub cache, or a local folder of a native transformers Florence-2 (its
        ``config.json`` must say ``model_type: florence2``; checked when the config is read).
    revision: hub revision to pin a hub id to.
    tasks: which of ``od``, ``dense_region_caption``, ``ocr_with_region`` to run.
    max_new_tokens: longest output per task and image, in tokens (an instance costs
        its words plus 4 or 8 location tokens).
    num_beams: 1 for greedy decoding, more for beam search (Florence-2's own examples
        use 3).
    generate_kwargs: further ``generate`` arguments; sampling is not allowed.
    min_box_side: instances whose box (clipped) has a side under this many pixels are
        skipped.
    device: ``auto`` (the GPU Ray assigned this worker, else CPU), or ``cpu``, ``cuda:0``...
    dtype: ``float32``, or ``float16``/``bfloat16`` on a GPU.
    source_name: overrides ``name`` in ``source``.
    """

    name: ClassVar[str] = "florence2_regions"
    version: ClassVar[str] = "1"

    model: str
    revision: str | None = None
    tasks: list[Literal["od", "dense_region_caption", "ocr_with_region"]] = Field(
        default_factory=lambda: list(TASKS), min_length=1
    )
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    num_beams: Annotated[int, Field(ge=1, le=64)] = 1
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)
    min_box_side: Annotated[float, Field(ge=0.0)] = 1.0
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    source_name: str | None = None

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str) -> str:
        return model_folder_of_type(model, (MODEL_TYPE,))

    @field_validator("generate_kwargs")
    @classmethod
    def _deterministic(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("do_sample"):
            raise ValueError("sampling (do_sample) is not allowed: labels must be repeatable")
        return kwargs

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        device = resolve_device(self.device, worker)
        self._florence2 = Florence2(ModelSource(self.model, self.revision, device, self.dtype))
        self._decoding = Decoding(self.max_new_tokens, self.num_beams, dict(self.generate_kwargs))

    def models(self) -> list:
        return [self._florence2.model]

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        if not images:
            return []
        from PIL import Image

        pil_images = [Image.fromarray(pixels).convert("RGB") for pixels in images]
        features = self._florence2.encode(pil_images)
        per_image: list[list[Region]] = [[] for _ in images]
        for task in self.tasks:
            prompt = TASKS[task][0]
            outputs = self._florence2.generate(features, [prompt] * len(images), self._decoding)
            for regions, pixels, output in zip(per_image, images, outputs, strict=True):
                regions.extend(self.regions(task, output, pixels.shape[1], pixels.shape[0]))
        return per_image

    def regions(self, task: str, output: Generated, width: int, height: int) -> list[Region]:
        """The rows of one image's output for ``task``."""
        prompt, kind, per_instance = TASKS[task]
        parsed = self._florence2.parse(output, prompt, (width, height))
        if not parsed:
            return []
        if kind == "ocr":
            shapes, labels = parsed["quad_boxes"], parsed["labels"]
        else:
            shapes, labels = parsed["bboxes"], parsed["labels"]
        scores = self._florence2.location_scores(output, per_instance)
        if len(scores) != len(shapes):
            scores = [output.score] * len(shapes)
        rows = []
        for shape, label, score in zip(shapes, labels, scores, strict=True):
            label = clean_label(label)
            if kind == "object":
                label = label.lower()
            box = bounds(shape, width, height)
            if not label or min(box[2] - box[0], box[3] - box[1]) < max(self.min_box_side, 1e-6):
                continue
            quad = [float(v) for v in shape] if kind == "ocr" else None
            rows.append(
                Region(kind, *box, label=label, score=float(score), source=self.source, quad=quad)
            )
        return rows


def clean_label(label: str) -> str:
    """The parser's label with what a malformed output leaves in it removed: stray
    location tokens or their tails (``loc_337> parked`` -> ``parked``) and tags."""
    label = re.sub(r"<?/?loc_\d+>?|<[^<>]*>", " ", str(label))
    return " ".join(label.replace("<", " ").replace(">", " ").split())


def bounds(shape: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a box or quad's points, in order, clipped to the image."""
    xs = np.clip(np.asarray(shape[0::2], dtype=np.float64), 0, width)
    ys = np.clip(np.asarray(shape[1::2], dtype=np.float64), 0, height)
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
