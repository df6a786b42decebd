"""The filter interface, in datatrove's spirit: a filter decides, the base class counts.

``decide(sample, items)`` receives the items of one image that are still kept (its
regions for a ``RegionFilter``, its texts for a ``TextFilter``) and returns, for each,
``True`` (keep) or ``(False, "reason")``. Filters that work better on many items at once
(spaCy's ``nlp.pipe``) override ``decide_batch`` instead. A filter is a ``Step`` (``engine.steps``) whose stage is one
of ``region_filters``, ``text_filters``, ``phrase_filters``. The base class applies the
decisions (rejected rows stay in the table with ``kept = false`` and ``drop_reason``)
and counts kept rows and each reason in ``counts``. Filters are pydantic dataclasses
whose fields are their config.
"""

from __future__ import annotations

from typing import ClassVar

from engine.records import Region, Sample, Text
from engine.steps import Step

Decision = bool | tuple[bool, str]


# What a filter of each stage keeps or drops: the sample attribute it filters.
TARGETS = {"region_filters": "regions", "text_filters": "texts", "phrase_filters": "phrases"}


class Filter(Step):
    """A step that keeps or drops rows; never adds any. Its failure fails the shard (an
    image whose filter failed would otherwise keep unfiltered rows marked ``kept``)."""

    isolate_failures: ClassVar[bool] = False

    @property
    def target(self) -> str:
        """The sample attribute this filter decides on (from its ``stage``)."""
        return TARGETS[self.stage]

    @property
    def timing_key(self) -> str:
        return f"filter:{self.name}"

    def decide(self, sample: Sample, items: list) -> list[Decision]:
        raise NotImplementedError

    def decide_batch(self, samples: list[Sample], items: list[list]) -> list[list[Decision]]:
        return [self.decide(sample, kept) for sample, kept in zip(samples, items, strict=True)]

    def apply(self, sample: Sample) -> None:
        self.run([sample])

    def run(self, samples: list[Sample]) -> None:
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
    stage: ClassVar[str] = "region_filters"

    def decide(self, sample: Sample, items: list[Region]) -> list[Decision]:
        raise NotImplementedError


class TextFilter(Filter):
    stage: ClassVar[str] = "text_filters"

    def decide(self, sample: Sample, items: list[Text]) -> list[Decision]:
        raise NotImplementedError


class PhraseFilter(Filter):
    stage: ClassVar[str] = "phrase_filters"
