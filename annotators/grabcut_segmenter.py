"""Offline segmentation: OpenCV GrabCut seeded by each box, turned into a polygon
(``engine.masks.mask_to_polygon``: largest contour, simplified, clockwise).

Fills ``polygon`` of every kept phrase row with a box and no polygon yet (a phrase
grounded to an OCR line already has the line's quad), and, when ``segment_regions``
is set, of kept ``object`` regions. Each distinct box is segmented once per image.
GrabCut runs on a crop around the box (the box plus ``margin`` of its size), scaled so
that its longer side is at most ``max_side`` pixels, with a fixed RNG seed (so the same
box always gives the same polygon); polygons are in image pixels, inside the box. A mask
covering under ``min_fill`` of its box falls back to the convex hull of the foreground,
then to the box's rectangle.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from engine.masks import mask_to_polygon, polygon_area
from engine.records import Sample


def box_polygon(box: tuple) -> list[float]:
    """The box as a clockwise polygon from its top-left corner."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    import cv2

    points = cv2.findNonZero(mask)
    hull_mask = np.zeros_like(mask)
    if points is not None and len(points) >= 3:
        cv2.fillConvexPoly(hull_mask, cv2.convexHull(points), 1)
    return hull_mask


@dataclass(config=STRICT)
class GrabCutSegmenter(SampleAnnotator):
    """Args:
    iterations: GrabCut iterations.
    tolerance: polygon simplification, in pixels of the image.
    segment_regions: also fill ``regions.polygon`` of kept object regions.
    margin: context around the box, as a fraction of its size.
    max_side: longest side of the crop GrabCut works on (speed).
    min_fill: a mask covering less than this share of its box is not trusted: the
        convex hull of all foreground pieces is used, or the box's rectangle if that
        is still smaller.
    """

    name: ClassVar[str] = "grabcut_segmenter"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "masks"

    iterations: Annotated[int, Field(ge=1, le=20)] = 3
    tolerance: Annotated[float, Field(gt=0.0)] = 2.0
    segment_regions: bool = True
    margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    max_side: Annotated[int, Field(ge=32, le=4096)] = 256
    min_fill: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            cache: dict[tuple, list[float]] = {}
            for phrase in sample.phrases:
                if phrase.kept and phrase.box is not None and not phrase.polygon:
                    phrase.polygon = self.polygon(sample, phrase.box, cache)
            if self.segment_regions:
                for region in sample.kept_regions:
                    if region.kind == "object":
                        region.polygon = self.polygon(sample, region.box, cache)

    def polygon(self, sample: Sample, box: tuple, cache: dict) -> list[float]:
        key = tuple(round(v, 2) for v in box)
        if key not in cache:
            cache[key] = self.segment(sample.pixels, box)
        return cache[key]

    def segment(self, pixels: np.ndarray, box: tuple) -> list[float]:
        import cv2

        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = box
        pad_x, pad_y = (x1 - x0) * self.margin, (y1 - y0) * self.margin
        cx0, cy0 = int(max(0, x0 - pad_x)), int(max(0, y0 - pad_y))
        cx1, cy1 = int(min(width, np.ceil(x1 + pad_x))), int(min(height, np.ceil(y1 + pad_y)))
        crop = pixels[cy0:cy1, cx0:cx1]
        if crop.shape[0] < 4 or crop.shape[1] < 4:
            return []
        scale = min(1.0, self.max_side / max(crop.shape[:2]))
        small = (
            cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if scale < 1
            else crop
        )
        rect = (
            int((x0 - cx0) * scale), int((y0 - cy0) * scale),
            max(1, int((x1 - x0) * scale)), max(1, int((y1 - y0) * scale)),
        )  # fmt: skip
        mask = np.zeros(small.shape[:2], np.uint8)
        background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        # GrabCut seeds its colour models with k-means on OpenCV's global RNG: without a
        # fixed seed the same box gives a different mask from run to run.
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(
                bgr, mask, rect, background, foreground, self.iterations, cv2.GC_INIT_WITH_RECT
            )
        except cv2.error:
            return box_polygon(box)
        chosen = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
        chosen = cv2.morphologyEx(chosen, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        polygon = mask_to_polygon(chosen, tolerance=self.tolerance * scale)
        box_area = max(rect[2] * rect[3], 1)
        if polygon_area(polygon) < self.min_fill * box_area:
            # GrabCut found no coherent object: the largest piece is a sliver. The convex
            # hull of all foreground pieces, or failing that the box itself, is the mask.
            polygon = mask_to_polygon(convex_hull_mask(chosen), tolerance=self.tolerance * scale)
            if polygon_area(polygon) < self.min_fill * box_area:
                return box_polygon(box)
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) / scale + (cx0, cy0)
        points[:, 0] = points[:, 0].clip(x0, x1)  # GrabCut's mask never leaves its rectangle
        points[:, 1] = points[:, 1].clip(y0, y1)
        return [round(float(v), 1) for v in points.reshape(-1)]
