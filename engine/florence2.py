"""Florence-2 location tokens: encode boxes, quads and polygons as ``<loc_N>`` sequences and
decode them back.

Quantisation is the transformers Florence-2 processor's (``Florence2PostProcessor.quantize``
and ``dequantize`` in ``transformers/models/florence2/processing_florence2.py``):

- 1000 bins per axis; the bin size is ``width / 1000`` for x and ``height / 1000`` for y;
- a coordinate ``c`` goes to bin ``floor(c / bin_size)``, clamped to ``0..999``
  (so ``x1 == width`` lands in bin 999);
- bin ``b`` comes back as its centre, ``(b + 0.5) * bin_size``. Every coordinate inside the
  image therefore returns within half a bin (within one bin at the clamped right/bottom
  edge). The transformers post-processor truncates the centre to an int; ours keeps floats.

Sequence formats (what Florence-2 generates for each task; targets of the ``florence2``
export, see ``pipelines/exports/florence2.py``):

=====================================  ==================================================
task                                   target
=====================================  ==================================================
``<OD>``, ``<DENSE_REGION_CAPTION>``   ``label<x0><y0><x1><y1>`` per box, concatenated
``<REGION_PROPOSAL>``                  ``<x0><y0><x1><y1>`` per box, no labels
``<CAPTION_TO_PHRASE_GROUNDING>``      ``phrase<box><box>...`` per phrase (one or more boxes)
``<OCR_WITH_REGION>``                  ``text<x1><y1>...<x4><y4>`` per line, the quad's corners
                                       clockwise from top-left
``<REFERRING_EXPRESSION_SEGMENTATION>``  ``<x><y><x><y>...`` a polygon's points; several
``<REGION_TO_SEGMENTATION>``           polygons of one object are separated by ``<sep>``
=====================================  ==================================================

Every text written into a sequence (labels, OCR lines, phrases, captions, task inputs) is
written as it is, except that ``<`` and ``>`` (which would start a token)
become ``(`` and ``)``, and runs of whitespace (newlines included) become one space.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

BINS = 1000
POLYGON_SEP = "<sep>"

LOC_RE = re.compile(r"<loc_(\d+)>")
# A label (no "<") followed by one or more location tokens: what <OD> and its kin generate.
LABELLED_RUN_RE = re.compile(r"([^<]*)((?:<loc_\d+>)+)")
OCR_RE = re.compile(r"(.+?)" + r"<loc_(\d+)>" * 8)

# Florence-2's task tokens and the natural-language prompts the processor substitutes for
# them (``Florence2Processor.task_prompts_without_inputs`` / ``task_prompts_with_input``).
TASK_PROMPTS = {
    "<CAPTION>": "What does the image describe?",
    "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
    "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image.",
    "<OD>": "Locate the objects with category name in the image.",
    "<DENSE_REGION_CAPTION>": "Locate the objects in the image, with their descriptions.",
    "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
    "<OCR>": "What is the text in the image?",
    "<OCR_WITH_REGION>": "What is the text in the image, with regions?",
    "<CAPTION_TO_PHRASE_GROUNDING>": "Locate the phrases in the caption: {input}",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "Locate {input} in the image with mask",
    "<REGION_TO_SEGMENTATION>": "What is the polygon mask of region {input}",
}


# ------------------------------------------------------------------------------- quantise


def quantize(value: float, size: float, bins: int = BINS) -> int:
    """The bin of one coordinate along an axis of ``size`` pixels: floor, clamped."""
    return min(bins - 1, max(0, math.floor(value / (size / bins))))


def dequantize(index: int, size: float, bins: int = BINS) -> float:
    """The centre of bin ``index`` in pixels."""
    return (index + 0.5) * (size / bins)


def quantize_points(coords: Sequence[float], width: float, height: float) -> list[int]:
    """Bins of a flat ``[x, y, x, y, ...]`` list (boxes ``[x0, y0, x1, y1]`` included);
    the arithmetic of :func:`quantize`, inlined (an export calls this for every box)."""
    per_bin = (width / BINS, height / BINS)
    top = BINS - 1
    bins = []
    for index, value in enumerate(coords):
        b = math.floor(value / per_bin[index & 1])
        bins.append(0 if b < 0 else top if b > top else b)
    return bins


def dequantize_points(bins: Sequence[int], width: float, height: float) -> list[float]:
    return [
        dequantize(index_value, width if index % 2 == 0 else height)
        for index, index_value in enumerate(bins)
    ]


LOC_TOKENS = tuple(f"<loc_{b}>" for b in range(BINS))


def loc_tokens(bins: Iterable[int]) -> str:
    return "".join([LOC_TOKENS[b] for b in bins])


# --------------------------------------------------------------------------------- encode


def clean_label(label: str) -> str:
    """A label that cannot be mistaken for a token: ``<``/``>`` replaced, whitespace
    collapsed (the processor's parsers read a label up to the next ``<``, and an OCR line
    up to its first location token without crossing a newline)."""
    return " ".join(label.replace("<", "(").replace(">", ")").split())


def encode_box(box: Sequence[float], width: float, height: float) -> str:
    """``[x0, y0, x1, y1]`` in pixels -> four location tokens."""
    return loc_tokens(quantize_points(box, width, height))


def encode_quad(quad: Sequence[float], width: float, height: float) -> str:
    """Eight floats (corners clockwise from top-left) -> eight location tokens."""
    if len(quad) != 8:
        raise ValueError(f"a quad has 8 coordinates, got {len(quad)}")
    return loc_tokens(quantize_points(quad, width, height))


def encode_polygon(polygon: Sequence[float], width: float, height: float) -> str:
    """A flat ``[x, y, ...]`` polygon -> location tokens, one pair per point."""
    if len(polygon) % 2:
        raise ValueError("a polygon has an even number of coordinates")
    return loc_tokens(quantize_points(polygon, width, height))


def encode_labelled_boxes(
    items: Iterable[tuple[str, Sequence[Sequence[float]]]], width: float, height: float
) -> str:
    """``[(label, [box, ...]), ...]`` -> ``label<box>...label<box>...`` (``<OD>``,
    ``<DENSE_REGION_CAPTION>``, ``<CAPTION_TO_PHRASE_GROUNDING>``; label ``""`` for
    ``<REGION_PROPOSAL>``)."""
    return "".join(
        clean_label(label) + "".join(encode_box(box, width, height) for box in boxes)
        for label, boxes in items
    )


def encode_ocr(items: Iterable[tuple[str, Sequence[float]]], width: float, height: float) -> str:
    """``[(text, quad), ...]`` -> ``text<8 loc tokens>...`` (``<OCR_WITH_REGION>``)."""
    return "".join(clean_label(text) + encode_quad(quad, width, height) for text, quad in items)


# --------------------------------------------------------------------------------- decode


def _strip_specials(sequence: str) -> str:
    return sequence.replace("<s>", "").replace("</s>", "").replace("<pad>", "")


def decode_labelled_boxes(
    sequence: str, width: float, height: float
) -> list[tuple[str, list[list[float]]]]:
    """``label<box>...`` -> ``[(label, [[x0, y0, x1, y1], ...]), ...]`` in pixels (bin
    centres). A label followed by a number of tokens that is not a multiple of four keeps
    its whole boxes only."""
    decoded = []
    for label, tokens in LABELLED_RUN_RE.findall(_strip_specials(sequence)):
        bins = [int(b) for b in LOC_RE.findall(tokens)]
        boxes = [
            dequantize_points(bins[i : i + 4], width, height) for i in range(0, len(bins) - 3, 4)
        ]
        if boxes:
            decoded.append((label.strip(), boxes))
    return decoded


def decode_boxes(sequence: str, width: float, height: float) -> list[tuple[str, list[float]]]:
    """Flattened :func:`decode_labelled_boxes`: one ``(label, box)`` per box."""
    return [
        (label, box)
        for label, boxes in decode_labelled_boxes(sequence, width, height)
        for box in boxes
    ]


def decode_ocr(sequence: str, width: float, height: float) -> list[tuple[str, list[float]]]:
    """``text<8 loc tokens>...`` -> ``[(text, [8 floats]), ...]``."""
    return [
        (match[0].strip(), dequantize_points([int(b) for b in match[1:]], width, height))
        for match in OCR_RE.findall(_strip_specials(sequence))
    ]


def decode_polygons(sequence: str, width: float, height: float) -> list[list[float]]:
    """``<x><y>...<sep><x><y>...`` -> polygons as flat ``[x, y, ...]`` lists in pixels."""
    polygons = []
    for part in _strip_specials(sequence).split(POLYGON_SEP):
        bins = [int(b) for b in LOC_RE.findall(part)]
        if len(bins) % 2:
            bins = bins[:-1]
        if bins:
            polygons.append(dequantize_points(bins, width, height))
    return polygons


def bin_size(width: float, height: float) -> tuple[float, float]:
    """Pixels per bin along x and y: the precision of every location token."""
    return width / BINS, height / BINS
