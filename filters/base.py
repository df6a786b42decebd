"""The filter interface, in datatrove's spirit: a filter decides, the base class counts.

``decide(sample, items)`` receives the items of one image that are still kept (its
regions for a ``RegionFilter``, its texts for a ``TextFilter``) and returns, for each,
``True`` (keep) or ``(False, "reason")``. Filters that work better on many items at once
(spaCy's ``nlp.pipe``) override ``decide_batch`` instead. The base class applies the
decisions (rejected rows stay in the table with ``kept = false`` and ``drop_reason``)
and counts kept rows and each reason in ``counts``. Filters are pydantic dataclasses
whose fields are their config.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from engine.records import Region, Sample, Text

Decision = bool | tuple[bool, str]


class Filter:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    target: ClassVar[str]  # "regions" | "texts": the sample attribute it filters

    def setup(self) -> None:
        """Load anything heavy. Called once per worker."""

    def decide(self, sample: Sample, items: list) -> list[Decision]:
        raise NotImplementedError

    def decide_batch(self, samples: list[Sample], items: list[list]) -> list[list[Decision]]:
        return [self.decide(sample, kept) for sample, kept in zip(samples, items, strict=True)]

    @property
    def counts(self) -> Counter:
        if not hasattr(self, "_counts"):
            self._counts = Counter()
        return self._counts

    def apply(self, sample: Sample) -> None:
        self.apply_batch([sample])

    def apply_batch(self, samples: list[Sample]) -> None:
        items = [[item for item in getattr(sample, self.target) if item.kept] for sample in samples]
        if not any(items):
            return
        decisions = self.decide_batch(samples, items)
        for kept_items, sample_decisions in zip(items, decisions, strict=True):
            if len(sample_decisions) != len(kept_items):
                raise RuntimeError(
                    f"filter {self.name} returned {len(sample_decisions)} decisions for {len(kept_items)} items"
                )
            for item, decision in zip(kept_items, sample_decisions, strict=True):
                if decision is True:
                    self.counts["kept"] += 1
                    continue
                _, reason = decision
                item.drop(reason)
                self.counts[reason] += 1


class RegionFilter(Filter):
    target: ClassVar[str] = "regions"

    def decide(self, sample: Sample, items: list[Region]) -> list[Decision]:
        raise NotImplementedError


class TextFilter(Filter):
    target: ClassVar[str] = "texts"

    def decide(self, sample: Sample, items: list[Text]) -> list[Decision]:
        raise NotImplementedError
