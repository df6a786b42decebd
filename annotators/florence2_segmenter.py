"""Florence-2 as a segmenter: ``<REGION_TO_SEGMENTATION>`` with each box as its input (4
location tokens), the polygon Florence-2 writes for it. The refinement loop's Florence-2
student runs it on its own rows; any Florence-2 trained on that task can.

Output, like ``sam_segmenter``'s: ``Phrase.polygon`` of kept phrase rows with a box, and
``Region.polygon`` of kept ``object`` regions (``segment_regions``), as a flat ``[x0, y0,
x1, y1, ...]`` list in pixels of the image: the first polygon of Florence-2's answer
(``post_process_generation``'s bin centres), its vertices clipped to the box; an answer
with fewer than 3 points leaves the row as it was. With ``sources`` only rows whose
``source`` is listed are segmented, and their polygons are replaced (the student redraws
its own rows after the configured segmenter drew everything); without it, rows without a
polygon are filled. Each image is encoded once; one batched ``generate`` per image's
distinct boxes.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator, model_folder_of_type
from annotators.florence2_model import MODEL_TYPE, Florence2, ModelSource
from annotators.hf_generation import Decoding
from engine import florence2 as f2
from engine.records import Sample
from engine.steps import WorkerContext, resolve_device

TASK = "<REGION_TO_SEGMENTATION>"


@dataclass(config=STRICT)
class Florence2Segmenter(SampleAnnotator):
    """Args:
    model: a Florence-2 hub id or local folder (``model_type: florence2``).
    revision: hub revision to pin a hub id to.
    sources: segment only rows of these sources (``name@version``), replacing their
        polygons; ``None``: every kept row with a box and no polygon yet.
    segment_regions: also segment kept ``object`` regions.
    max_new_tokens: longest answer per box, in tokens (2 per vertex).
    device: ``auto`` (the GPU Ray assigned this worker, else CPU), or ``cpu``, ``cuda:0``...
    dtype: ``float32``, or ``float16``/``bfloat16`` on a GPU.
    source_name: overrides ``name`` in ``source`` (the timing key of this step).
    """

    name: ClassVar[str] = "florence2_segmenter"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "masks"

    model: str
    revision: str | None = None
    sources: list[str] | None = None
    segment_regions: bool = True
    max_new_tokens: Annotated[int, Field(ge=8, le=4096)] = 256
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    source_name: str | None = None

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str) -> str:
        return model_folder_of_type(model, (MODEL_TYPE,))

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        device = resolve_device(self.device, worker)
        self._florence2 = Florence2(ModelSource(self.model, self.revision, device, self.dtype))
        self._decoding = Decoding(self.max_new_tokens)

    def models(self) -> list:
        return [self._florence2.model]

    def wanted(self, row) -> bool:
        if not row.kept or row.box is None:
            return False
        return row.source in self.sources if self.sources is not None else not row.polygon

    def annotate_samples(self, samples: list[Sample]) -> None:
        # Every image first, then the rows: a failure leaves the batch as it was.
        results = []
        for sample in samples:
            rows = [p for p in sample.phrases if self.wanted(p)]
            if self.segment_regions:
                rows += [r for r in sample.kept_regions if r.kind == "object" and self.wanted(r)]
            boxes = list(dict.fromkeys(tuple(float(v) for v in row.box) for row in rows))
            results.append((rows, dict(zip(boxes, self.segment(sample, boxes), strict=True))))
        for rows, polygons in results:
            for row in rows:
                polygon = polygons[tuple(float(v) for v in row.box)]
                if polygon:
                    row.polygon = polygon

    def segment(self, sample: Sample, boxes: list[tuple]) -> list[list[float]]:
        if not boxes:
            return []
        from PIL import Image

        width, height = sample.width, sample.height
        features = self._florence2.encode([Image.fromarray(sample.pixels).convert("RGB")])
        prompts = [TASK + f2.encode_box(box, width, height) for box in boxes]
        outputs = self._florence2.generate(features, prompts, self._decoding, [0] * len(boxes))
        return [
            first_polygon(self._florence2.parse(output, TASK, (width, height)), box)
            for output, box in zip(outputs, boxes, strict=True)
        ]


def first_polygon(parsed: dict, box: tuple) -> list[float]:
    """The first polygon of a parsed answer, clipped to ``box``; ``[]`` under 3 points."""
    polygons = (parsed or {}).get("polygons") or []
    if not polygons or not polygons[0]:
        return []
    points = np.asarray(polygons[0][0], dtype=np.float64).reshape(-1, 2)
    if len(points) < 3:
        return []
    x0, y0, x1, y1 = box
    points[:, 0] = points[:, 0].clip(x0, x1)
    points[:, 1] = points[:, 1].clip(y0, y1)
    return [round(float(v), 1) for v in points.reshape(-1)]
