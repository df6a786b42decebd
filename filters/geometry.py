"""Geometry: clip boxes (and quads) to the image, then drop boxes with a side under
``min_side`` pixels (``too_small``) or covering more than ``max_area_fraction`` of the
image (``too_large``)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from engine.records import Region, Sample
from engine.steps import STRICT
from filters.base import Decision, RegionFilter


@dataclass(config=STRICT)
class GeometryFilter(RegionFilter):
    """Args:
    min_side: smallest kept box width or height, in pixels (after clipping).
    max_area_fraction: largest kept box area as a fraction of the image area.
    """

    name: ClassVar[str] = "geometry"

    min_side: Annotated[float, Field(ge=0.0)] = 2.0
    max_area_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0

    def decide(self, sample: Sample, regions: list[Region]) -> list[Decision]:
        width, height = float(sample.width), float(sample.height)
        decisions: list[Decision] = []
        for region in regions:
            clip_region(region, width, height)
            box_width, box_height = region.x1 - region.x0, region.y1 - region.y0
            if min(box_width, box_height) < max(self.min_side, 1e-6):
                decisions.append((False, "too_small"))
            elif box_width * box_height > self.max_area_fraction * width * height:
                decisions.append((False, "too_large"))
            else:
                decisions.append(True)
        return decisions


def clip_region(region: Region, width: float, height: float) -> None:
    """Clip a region's box and quad to ``[0, width] x [0, height]`` in place."""
    region.x0 = min(max(region.x0, 0.0), width)
    region.x1 = min(max(region.x1, 0.0), width)
    region.y0 = min(max(region.y0, 0.0), height)
    region.y1 = min(max(region.y1, 0.0), height)
    if region.quad:
        region.quad = [
            min(max(value, 0.0), width if index % 2 == 0 else height)
            for index, value in enumerate(region.quad)
        ]
