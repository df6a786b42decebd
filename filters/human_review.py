"""People's labels overrule the models' on the images they reviewed (``fld import-reviews``,
``annotators.human_labels``). Runs after geometry, confidence and NMS (so a model's box
they drop keeps their reason) and before fusion.

On an image whose ``Sample.reviewed_kinds`` name a kind, every region of that kind still
kept that is not a person's (``source`` ``human@...``) is dropped:

- ``human_superseded`` when it overlaps a person's box of its kind by at least
  ``iou_threshold`` (IoU from ``engine.boxes``: torchvision's kernel): the person's box,
  label and text win, whatever the model said;
- ``human_rejected`` otherwise: the reviewer saw the whole image and drew no box there
  (this covers the boxes a reviewer deleted, and boxes a new student makes where nobody
  drew one).

The person's rows stay kept (score 1), so fusion, which runs later, has one source left
on those kinds and leaves them as they are: a person's box wins fusion outright. Images
nobody reviewed, and kinds not reviewed, are left alone.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from engine.boxes import iou_matrix
from engine.records import Region, Sample
from engine.reviews import HUMAN_PREFIX
from engine.steps import STRICT
from filters.base import Decision, RegionFilter


def is_human(region: Region) -> bool:
    return region.source.startswith(HUMAN_PREFIX)


@dataclass(config=STRICT)
class HumanReviewFilter(RegionFilter):
    """Args:
    iou_threshold: a model's box overlapping a person's box of its kind by at least this
        is ``human_superseded``; one overlapping none, ``human_rejected``.
    """

    name: ClassVar[str] = "human_review"

    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5

    def decide(self, sample: Sample, items: list[Region]) -> list[Decision]:
        decisions: list[Decision] = [True] * len(items)
        if not sample.reviewed_kinds:
            return decisions
        for kind in sample.reviewed_kinds:
            human = [r.box for r in items if r.kind == kind and is_human(r)]
            models = [i for i, r in enumerate(items) if r.kind == kind and not is_human(r)]
            if not models:
                continue
            overlaps = iou_matrix([items[i].box for i in models], human) if human else None
            for row, i in enumerate(models):
                matched = overlaps is not None and float(overlaps[row].max()) >= self.iou_threshold
                decisions[i] = (False, "human_superseded" if matched else "human_rejected")
        return decisions
