"""Confidence thresholds: drop regions whose ``score`` is under the threshold that applies
to them (``low_score``). A threshold for the region's source (``name@version``, bare
``name``, or a prefix of the name such as ``student``, which names every iteration's
student) wins over one for its kind, which wins over ``default``."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from engine.records import REGION_KINDS, Region, Sample
from engine.steps import STRICT
from filters.base import Decision, RegionFilter

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass(config=STRICT)
class ConfidenceFilter(RegionFilter):
    """Args:
    default: threshold for every region not covered below.
    per_kind: thresholds by region kind (``object``, ``ocr``, ``dense``, ``proposal``).
    per_source: thresholds by source, ``name@version``, ``name`` or a name prefix
        (``student``: the refinement loop's students, ``student_ssd_i1``, ...).
    """

    name: ClassVar[str] = "confidence"

    default: Threshold = 0.3
    per_kind: dict[str, Threshold] = Field(default_factory=lambda: {"ocr": 0.5})
    per_source: dict[str, Threshold] = Field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.per_kind) - set(REGION_KINDS)
        if unknown:
            raise ValueError(f"per_kind: unknown region kind(s) {sorted(unknown)}")

    def threshold(self, region: Region) -> float:
        bare_name = region.source.split("@", 1)[0]
        for key in (region.source, bare_name):
            if key in self.per_source:
                return self.per_source[key]
        for key, value in self.per_source.items():
            if bare_name.startswith(key):
                return value
        return self.per_kind.get(region.kind, self.default)

    def decide(self, sample: Sample, regions: list[Region]) -> list[Decision]:
        return [
            True if region.score >= self.threshold(region) else (False, "low_score")
            for region in regions
        ]
