"""Offline captioner: writes the three FLD-5B granularities from an image's kept regions,
the way FLD-5B's detailed descriptions were written from region annotations.

- ``brief``: the main objects, counted ("A bus and three people.");
- ``detailed``: counts, positions, relative sizes, dominant colours (from each region's
  pixels) as attributes, and the text read by OCR;
- ``more_detailed``: the detailed text plus every kept region on its own, relations
  between objects (from box geometry only: left of, above, overlaps, within) and the
  layout of colours in the frame.

Deterministic given the image and its regions; phrasing varies between images (chosen
by a hash of the ``image_id``). ``score`` is the mean score of the regions a text
mentions (0.0 when it mentions none: an image with no kept region is described by
its colours and layout alone, and such a text says so by its score). People get no colour
word (``describe.PEOPLE_LABELS``): their box's colour is their clothing's or the
background's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from annotators.describe import (
    colour_of_pixel_block,
    counted,
    frame_share,
    join_words,
    pick,
    position,
    region_colour,
    relation,
    size_word,
)
from engine.records import Region, Sample, Text


def area(region: Region) -> float:
    return (region.x1 - region.x0) * (region.y1 - region.y0)


def quoted(text: str) -> str:
    return "\u201c" + text.replace("\u201d", "'") + "\u201d"


@dataclass(config=STRICT)
class RegionCaptioner(SampleAnnotator):
    """Args:
    max_objects_brief: how many object labels (the largest, most confident) the brief
        caption names.
    max_relations: how many pairwise relations the more-detailed text states.
    max_ocr_lines: how many OCR lines the detailed text quotes.
    """

    name: ClassVar[str] = "region_captioner"
    version: ClassVar[str] = "1"

    max_objects_brief: Annotated[int, Field(ge=1, le=20)] = 3
    max_relations: Annotated[int, Field(ge=0, le=50)] = 6
    max_ocr_lines: Annotated[int, Field(ge=0, le=50)] = 6

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            sample.texts.extend(self.describe(sample))

    def describe(self, sample: Sample) -> list[Text]:
        objects = sorted(
            (r for r in sample.kept_regions if r.kind == "object"),
            key=lambda r: (-area(r) * r.score, r.x0, r.y0),
        )
        ocr_lines = sorted(
            (r for r in sample.kept_regions if r.kind == "ocr"), key=lambda r: (r.y0, r.x0)
        )
        groups: OrderedDict[str, list[Region]] = OrderedDict()
        for region in objects:
            groups.setdefault(region.label, []).append(region)
        context = Context(sample, objects, ocr_lines[: self.max_ocr_lines], groups)
        brief = self.brief(context)
        detailed = self.detailed(context)
        more = self.more_detailed(context, detailed)
        return [
            Text(
                "brief",
                brief,
                self.source,
                context.score(objects[: self.max_objects_brief] or ocr_lines[:1]),
            ),
            Text("detailed", detailed, self.source, context.score(objects + context.ocr_lines)),
            Text("more_detailed", more, self.source, context.score(objects + ocr_lines)),
        ]

    def brief(self, c: Context) -> str:
        named = list(c.groups.items())[: self.max_objects_brief]
        if named:
            things = join_words([counted(label, len(regions)) for label, regions in named])
            template = pick(
                ["A photo of {}.", "An image showing {}.", "A picture with {}.", "{} in a photo."],
                c.key,
                "brief",
            )
            text = template.format(things)
            return text[0].upper() + text[1:]
        if c.ocr_lines:
            return pick(
                ["A sign with the text {}.", "An image of text that reads {}."], c.key, "brief"
            ).format(quoted(c.ocr_lines[0].label))
        colours = c.scene_colours()
        return pick(
            ["A photo with mostly {} tones.", "An image in shades of {}."], c.key, "brief"
        ).format(join_words(colours[:2]))

    def detailed(self, c: Context) -> str:
        sentences = []
        if c.groups:
            inventory = join_words(
                [counted(label, len(regions)) for label, regions in c.groups.items()]
            )
            sentences.append(
                pick(
                    ["The image shows {}.", "The picture contains {}.", "In this image we see {}."],
                    c.key,
                    "intro",
                ).format(inventory)
            )
            for label, regions in list(c.groups.items())[:4]:
                sentences.append(c.group_sentence(label, regions))
        if c.ocr_lines:
            texts = join_words([quoted(r.label) for r in c.ocr_lines])
            where = position(c.ocr_lines[0].box, c.sample.width, c.sample.height)
            if len(c.ocr_lines) == 1:
                options = ["The text {} is written {}.", "The text {} can be read {}."]
            else:
                options = ["The lines of text {} are written {}.", "The lines {} can be read {}."]
            sentences.append(pick(options, c.key, "ocr").format(texts, where))
        colours = c.scene_colours()
        sentences.append(
            pick(
                [
                    "The dominant colours of the scene are {}.",
                    "Overall the scene shows mostly {} colours.",
                ],
                c.key,
                "colours",
            ).format(join_words(colours[:3]))
        )
        return " ".join(sentences)

    def more_detailed(self, c: Context, detailed: str) -> str:
        sentences = [detailed]
        if len(c.objects) > 1 or any(len(regions) > 1 for regions in c.groups.values()):
            for region in c.objects:
                sentences.append(c.region_sentence(region))
        pairs = [(a, b) for i, a in enumerate(c.objects) for b in c.objects[i + 1 :]]
        for a, b in pairs[: self.max_relations]:
            sentences.append(f"The {c.short(a)} {relation(a.box, b.box)} the {c.short(b)}.")
        for region in c.ocr_lines[1:]:
            sentences.append(
                f"The words {quoted(region.label)} appear {position(region.box, c.sample.width, c.sample.height)}."
            )
        sentences.append(c.layout_sentence())
        return " ".join(sentences)


class Context:
    """What the templates draw on for one image."""

    def __init__(
        self, sample: Sample, objects: list[Region], ocr_lines: list[Region], groups: OrderedDict
    ):
        self.sample = sample
        self.objects = objects
        self.ocr_lines = ocr_lines
        self.groups = groups
        self.key = sample.image_id
        self._colours: dict[int, str | None] = {}

    def score(self, regions: list[Region]) -> float:
        """The mean score of the regions a text mentions; 0.0 when it mentions none (a
        text made from the image's colours alone has no detector evidence behind it)."""
        return sum(r.score for r in regions) / len(regions) if regions else 0.0

    def colour(self, region: Region) -> str | None:
        if id(region) not in self._colours:
            self._colours[id(region)] = region_colour(self.sample.pixels, region.box, region.label)
        return self._colours[id(region)]

    def short(self, region: Region) -> str:
        colour = self.colour(region)
        where = position(region.box, self.sample.width, self.sample.height)
        if len(self.groups.get(region.label, [])) > 1:
            return f"{region.label} {where}"
        return f"{colour} {region.label}" if colour else region.label

    def group_sentence(self, label: str, regions: list[Region]) -> str:
        width, height = self.sample.width, self.sample.height
        if len(regions) == 1:
            region = regions[0]
            colour = self.colour(region)
            described = " ".join(
                w for w in (size_word(region.box, width, height), colour, label) if w
            )
            return pick(
                ["The {} is {} and takes up {}.", "A {} appears {}, covering {}."], self.key, label
            ).format(
                described,
                position(region.box, width, height),
                frame_share(region.box, width, height),
            )
        places = join_words(sorted({position(r.box, width, height) for r in regions}))
        colours = join_words(sorted({c for c in (self.colour(r) for r in regions) if c}))
        sentence = f"{counted(label, len(regions)).capitalize()} appear {places}"
        return sentence + (f"; their regions are mostly {colours}." if colours else ".")

    def region_sentence(self, region: Region) -> str:
        width, height = self.sample.width, self.sample.height
        colour = self.colour(region)
        described = " ".join(
            w for w in (size_word(region.box, width, height), colour, region.label) if w
        )
        return f"{'An' if described[0] in 'aeiou' else 'A'} {described} is located {position(region.box, width, height)}."

    def scene_colours(self) -> list[str]:
        return [name for name, share in colour_of_pixel_block(self.sample.pixels) if share > 0.08][
            :3
        ] or ["mixed"]

    def layout_sentence(self) -> str:
        half = self.sample.height // 2
        top = colour_of_pixel_block(self.sample.pixels[:half])[0][0]
        bottom = colour_of_pixel_block(self.sample.pixels[half:])[0][0]
        if top == bottom:
            return f"Both the upper and the lower half of the frame are dominated by {top} tones."
        return f"The upper half of the frame is mostly {top}, while the lower half turns mostly {bottom}."
