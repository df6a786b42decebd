"""The filter interface, in datatrove's spirit: a filter decides, the base class counts.

``decide(sample, regions)`` receives the regions of one image that are still kept and
returns, for each, ``True`` (keep) or ``(False, "reason")``. The base class applies the
decisions (rejected rows stay in the table with ``kept = false`` and ``drop_reason``)
and counts kept rows and each reason in ``counts``. Filters are pydantic dataclasses
whose fields are their config.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from engine.records import Region, Sample

Decision = bool | tuple[bool, str]


class RegionFilter:
    name: ClassVar[str]
    version: ClassVar[str] = "1"

    def setup(self) -> None:
        """Load anything heavy. Called once per worker."""

    def decide(self, sample: Sample, regions: list[Region]) -> list[Decision]:
        raise NotImplementedError

    @property
    def counts(self) -> Counter:
        if not hasattr(self, "_counts"):
            self._counts = Counter()
        return self._counts

    def apply(self, sample: Sample) -> None:
        candidates = [region for region in sample.regions if region.kept]
        if not candidates:
            return
        decisions = self.decide(sample, candidates)
        if len(decisions) != len(candidates):
            raise RuntimeError(
                f"filter {self.name} returned {len(decisions)} decisions for {len(candidates)} regions"
            )
        for region, decision in zip(candidates, decisions, strict=True):
            if decision is True:
                self.counts["kept"] += 1
                continue
            _, reason = decision
            region.drop(reason)
            self.counts[reason] += 1
