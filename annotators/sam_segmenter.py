"""Segment-anything masks for boxes: one box prompt per box, all boxes of an image in one
batched ``SamPredictor.predict_torch`` call after a single ``set_image``.

Output (the same as ``grabcut_segmenter``'s, so either can fill the masks stage):

- ``Phrase.polygon`` of every kept phrase row with a box and no polygon yet (a phrase
  grounded to an OCR line already has the line's quad);
- ``Region.polygon`` of kept ``object`` regions, when ``segment_regions`` is set
  (replacing any polygon they had, as GrabCut does).

A polygon is ``engine.masks.mask_to_polygon`` of the box's mask (largest outer contour,
Douglas-Peucker simplified to ``tolerance`` pixels, clockwise on screen from the point
nearest the top-left), as a flat ``[x0, y0, x1, y1, ...]`` list in pixels of the image.
SAM's mask may spill out of its box prompt: only the part inside the box is traced, and
the vertices are clipped to the box, so a polygon always lies inside its box. A box whose
mask is empty inside the box gets no polygon (``[]``). Each distinct box (rounded to
0.01 px) is segmented once per image, however many rows share it.

With ``multimask`` SAM proposes three masks per box and the one with the highest
predicted IoU is used; without it, SAM's single-mask output.

Models: ``model_type`` names a builder of ``segment_anything.sam_model_registry``
(``vit_h``/``default``, ``vit_l``, ``vit_b``) and ``checkpoint`` the matching official
``.pth`` file; ``custom`` builds the same SAM through ``segment_anything.build_sam``'s
``_build_sam`` with the image-encoder sizes of ``encoder`` (prompt encoder and mask
decoder are SAM's fixed ones), for checkpoints of other encoder sizes such as the tiny
one the tests build. Either way the checkpoint is a ``state_dict`` loaded strictly, as
segment-anything's builders load it (mapped to the CPU first, so that a checkpoint saved
from a GPU also loads on a machine without one), then moved to ``device``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from engine.masks import mask_to_polygon
from engine.records import Sample
from engine.steps import WorkerContext, resolve_device

# The keys of segment_anything.build_sam.sam_model_registry (kept here so that reading a
# config does not import torch; a test checks they agree).
SAM_MODEL_TYPES = ("default", "vit_h", "vit_l", "vit_b")


@dataclass(config=STRICT)
class SamEncoder:
    """Image-encoder sizes of a ``custom`` SAM (``_build_sam``'s ``encoder_*`` arguments).
    For reference, ``vit_b`` is ``{embed_dim: 768, depth: 12, num_heads: 12,
    global_attn_indexes: [2, 5, 8, 11]}``."""

    embed_dim: Annotated[int, Field(ge=1)]
    depth: Annotated[int, Field(ge=1)]
    num_heads: Annotated[int, Field(ge=1)]
    global_attn_indexes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SamEncoder:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"encoder embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        outside = [i for i in self.global_attn_indexes if i >= self.depth]
        if outside:
            raise ValueError(f"encoder global_attn_indexes {outside} are not < depth {self.depth}")
        return self


@dataclass(config=STRICT)
class SamSegmenter(SampleAnnotator):
    """Args:
    checkpoint: path of a SAM ``state_dict`` (``sam_vit_b_01ec64.pth``...); must exist.
    model_type: a ``sam_model_registry`` key (``vit_b``, ``vit_l``, ``vit_h``, ``default``)
        or ``custom`` (then ``encoder`` gives the image-encoder sizes).
    encoder: ``{embed_dim, depth, num_heads, global_attn_indexes}``, for ``custom`` only.
    tolerance: polygon simplification, in pixels of the image.
    segment_regions: also fill ``regions.polygon`` of kept object regions.
    device: ``auto`` (default: the GPU Ray assigned this worker, else CPU; in-process,
            CUDA if torch sees it), or ``cpu``, ``cuda:0``...
    multimask: ask SAM for three masks per box and keep the best by predicted IoU.
    max_boxes_per_call: split an image's boxes into calls of at most this many (memory:
        each box costs a copy of the 256x64x64 image embedding and a full-size mask);
        ``None``: all boxes of an image in one call.
    """

    name: ClassVar[str] = "sam_segmenter"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "masks"

    checkpoint: str
    model_type: str = "vit_b"
    encoder: SamEncoder | None = None
    tolerance: Annotated[float, Field(gt=0.0)] = 2.0
    segment_regions: bool = True
    device: str = "auto"
    multimask: bool = False
    max_boxes_per_call: Annotated[int, Field(ge=1)] | None = None

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_found(cls, checkpoint: str) -> str:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ValueError(f"checkpoint file not found: {checkpoint}")
        return str(path.resolve())

    @field_validator("model_type")
    @classmethod
    def _known_model_type(cls, model_type: str) -> str:
        if model_type not in (*SAM_MODEL_TYPES, "custom"):
            raise ValueError(
                f"unknown model_type {model_type!r}; known: {[*SAM_MODEL_TYPES, 'custom']}"
            )
        return model_type

    @model_validator(mode="after")
    def _encoder_for_custom(self) -> SamSegmenter:
        if self.model_type == "custom" and self.encoder is None:
            raise ValueError("model_type custom needs encoder: {embed_dim, depth, num_heads, ...}")
        if self.model_type != "custom" and self.encoder is not None:
            raise ValueError(f"encoder is for model_type custom only (not {self.model_type!r})")
        return self

    # ------------------------------------------------------------------ model

    def build(self, device: str = "cpu"):
        """The ``Sam`` module with the checkpoint's weights, on ``device``, in eval mode."""
        import torch
        from segment_anything.build_sam import _build_sam, sam_model_registry

        if self.model_type == "custom":
            sam = _build_sam(
                encoder_embed_dim=self.encoder.embed_dim,
                encoder_depth=self.encoder.depth,
                encoder_num_heads=self.encoder.num_heads,
                encoder_global_attn_indexes=list(self.encoder.global_attn_indexes),
            )
        else:
            sam = sam_model_registry[self.model_type]()
        state_dict = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        try:
            sam.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise ValueError(
                f"{self.checkpoint} does not fit a SAM of model_type {self.model_type!r}"
                f"{' with encoder ' + str(self.encoder) if self.encoder else ''}: {exc}"
            ) from exc
        return sam.to(device).eval()

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        from segment_anything import SamPredictor

        self._predictor = SamPredictor(self.build(self._device))

    # ------------------------------------------------------------------ annotate

    def annotate_samples(self, samples: list[Sample]) -> None:
        # Segment every image before changing any sample: if one image fails, the batch
        # is left as it was (the pipeline then retries image by image).
        jobs = []
        for sample in samples:
            phrases = [p for p in sample.phrases if p.kept and p.box is not None and not p.polygon]
            regions = (
                [r for r in sample.kept_regions if r.kind == "object"]
                if self.segment_regions
                else []
            )
            boxes: dict[tuple, tuple] = {}
            for box in [p.box for p in phrases] + [r.box for r in regions]:
                boxes.setdefault(box_key(box), tuple(float(v) for v in box))
            if boxes:
                polygons = self.segment(sample.pixels, list(boxes.values()))
                jobs.append((phrases, regions, dict(zip(boxes, polygons, strict=True))))
        for phrases, regions, polygons in jobs:
            for phrase in phrases:
                phrase.polygon = list(polygons[box_key(phrase.box)])
            for region in regions:
                region.polygon = list(polygons[box_key(region.box)])

    def segment(self, pixels: np.ndarray, boxes: list[tuple]) -> list[list[float]]:
        """One polygon per box (``[]`` where the mask is empty inside the box): one
        ``set_image`` and one batched ``predict_torch`` call (per ``max_boxes_per_call``)."""
        import torch

        predictor = self._predictor
        predictor.set_image(np.ascontiguousarray(pixels), image_format="RGB")
        size = pixels.shape[:2]
        step = self.max_boxes_per_call or len(boxes)
        polygons: list[list[float]] = []
        for start in range(0, len(boxes), step):
            chunk = boxes[start : start + step]
            prompts = torch.as_tensor(chunk, dtype=torch.float32, device=predictor.device)
            with torch.inference_mode():
                masks, iou, _ = predictor.predict_torch(
                    point_coords=None,
                    point_labels=None,
                    boxes=predictor.transform.apply_boxes_torch(prompts, size),
                    multimask_output=self.multimask,
                )
                # masks: (boxes, 1 or 3, H, W) bool at the image's size; iou: (boxes, 1 or 3)
                best = iou.argmax(dim=1)
                masks = masks[torch.arange(len(chunk), device=masks.device), best].cpu().numpy()
            polygons += [
                self.box_polygon(mask, box) for mask, box in zip(masks, chunk, strict=True)
            ]
        predictor.reset_image()
        return polygons

    def box_polygon(self, mask: np.ndarray, box: tuple) -> list[float]:
        """The polygon of the part of ``mask`` inside ``box``, its vertices clipped to the box."""
        height, width = mask.shape
        x0, y0, x1, y1 = box
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if ix1 <= ix0 or iy1 <= iy0:
            return []
        polygon = mask_to_polygon(mask[iy0:iy1, ix0:ix1], self.tolerance, offset=(ix0, iy0))
        if not polygon:
            return []
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        points[:, 0] = points[:, 0].clip(x0, x1)
        points[:, 1] = points[:, 1].clip(y0, y1)
        return [round(float(v), 1) for v in points.reshape(-1)]


def box_key(box: tuple) -> tuple:
    return tuple(round(float(v), 2) for v in box)
