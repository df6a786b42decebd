"""Per-source non-maximum suppression (``torchvision.ops.batched_nms``): among the kept
regions of one source and kind (and label, unless ``class_agnostic``), a box overlapping
a higher-scoring one by more than ``iou_threshold`` is dropped with ``nms``."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from engine.records import REGION_KINDS, Region, Sample
from engine.steps import STRICT, WorkerContext
from filters.base import Decision, RegionFilter
from filters.human_review import is_human


@dataclass(config=STRICT)
class NMSFilter(RegionFilter):
    """Args:
    iou_threshold: boxes overlapping a better one by more IoU than this are dropped.
    class_agnostic: suppress across labels of one source too (default: per label).
    kinds: region kinds NMS applies to (OCR lines do not overlap by design). ``dense``
        is refused: dense region captions are made after the region filters (stage
        ``texts``), one per kept object box, so NMS never sees them.
    """

    name: ClassVar[str] = "nms"

    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    class_agnostic: bool = False
    kinds: list[str] = Field(default_factory=lambda: ["object", "proposal"])

    @field_validator("kinds")
    @classmethod
    def _kinds_it_sees(cls, kinds: list[str]) -> list[str]:
        allowed = [kind for kind in REGION_KINDS if kind != "dense"]
        for kind in kinds:
            if kind not in allowed:
                raise ValueError(
                    f"{kind!r} is not a kind NMS sees; allowed: {allowed} (dense regions are "
                    "made after the region filters)"
                )
        return kinds

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        from engine.boxes import torchvision_kernels

        torchvision_kernels()  # loaded once, not inside the first shard

    def decide(self, sample: Sample, regions: list[Region]) -> list[Decision]:
        import torch

        from engine.boxes import batched_nms

        decisions: list[Decision] = [True] * len(regions)
        # A person's boxes (human@1, fld import-reviews) are never suppressed.
        candidates = [
            i for i, region in enumerate(regions)
            if region.kind in self.kinds and not is_human(region)
        ]  # fmt: skip
        if len(candidates) < 2:
            return decisions
        groups: dict[tuple, int] = {}
        group_ids = []
        for i in candidates:
            region = regions[i]
            key = (region.source, region.kind, "" if self.class_agnostic else region.label)
            group_ids.append(groups.setdefault(key, len(groups)))
        boxes = torch.tensor([regions[i].box for i in candidates], dtype=torch.float32)
        scores = torch.tensor([regions[i].score for i in candidates], dtype=torch.float32)
        keep = set(batched_nms(boxes, scores, torch.tensor(group_ids), self.iou_threshold).tolist())
        for position, i in enumerate(candidates):
            if position not in keep:
                decisions[i] = (False, "nms")
        return decisions
