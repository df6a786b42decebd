"""Offline dense region captions: for each kept ``object`` region, a ``dense`` region with
the same box whose label is a short phrase about it: attribute + category + position,
e.g. "large blue bus in the center". The colour is measured from the region's central
pixels, the size and position from its box.

Output rows: kind ``dense``, ``source`` ``dense_captioner@1``, ``score`` the object
region's score, ``sources`` the object region's source.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from annotators.describe import position, region_colour, size_word
from engine.records import Region, Sample


@dataclass(config=STRICT)
class DenseRegionCaptioner(SampleAnnotator):
    """Args:
    with_size: start the phrase with a size word (small / medium-sized / large).
    with_position: end the phrase with the region's place in the frame.
    """

    name: ClassVar[str] = "dense_captioner"
    version: ClassVar[str] = "1"

    with_size: bool = True
    with_position: bool = True

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            objects = [r for r in sample.kept_regions if r.kind == "object"]
            sample.regions.extend(self.caption(sample, region) for region in objects)

    def caption(self, sample: Sample, region: Region) -> Region:
        words = []
        if self.with_size:
            words.append(size_word(region.box, sample.width, sample.height))
        colour = region_colour(sample.pixels, region.box, region.label)
        if colour:
            words.append(colour)
        words.append(region.label)
        if self.with_position:
            words.append(position(region.box, sample.width, sample.height))
        return Region(
            kind="dense",
            x0=region.x0,
            y0=region.y0,
            x1=region.x1,
            y1=region.y1,
            label=" ".join(words),
            score=region.score,
            source=self.source,
            sources=[region.source],
        )
