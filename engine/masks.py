"""Masks to polygons, shared by the segmenters.

A polygon is a flat ``[x0, y0, x1, y1, ...]`` list of pixel coordinates of the largest
outer contour of a binary mask, simplified with Douglas-Peucker (``cv2.approxPolyDP``)
to ``tolerance`` pixels, and ordered clockwise on screen (y down) starting from the
point closest to the top-left corner. Empty when the mask is empty or degenerate.
"""

from __future__ import annotations

import numpy as np


def mask_to_polygon(
    mask: np.ndarray, tolerance: float = 2.0, offset: tuple[int, int] = (0, 0)
) -> list[float]:
    import cv2

    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if not binary.any():
        return []
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    contour = max(contours, key=cv2.contourArea)
    simplified = cv2.approxPolyDP(contour, tolerance, True).reshape(-1, 2).astype(np.float64)
    if len(simplified) < 3:
        return []
    # Shoelace sign: with y pointing down, a positive sum is clockwise on screen.
    x, y = simplified[:, 0], simplified[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:
        simplified = simplified[::-1]
    start = int(np.argmin(simplified.sum(axis=1)))
    simplified = np.roll(simplified, -start, axis=0)
    simplified += np.asarray(offset, dtype=np.float64)
    return [round(float(v), 1) for v in simplified.reshape(-1)]


def polygon_area(polygon: list[float]) -> float:
    if len(polygon) < 6:
        return 0.0
    x, y = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
    return float(abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2)
