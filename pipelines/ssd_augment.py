"""Training-time augmentation of the SSD student (``pipelines.ssd_student``): one image
and its boxes in, the network's square input and the boxes on it out.

In order, each drawn from the ``numpy`` generator given (so an image's augmentation is a
function of the seed, the epoch and its index: a resumed training sees what an
uninterrupted one saw):

1. **colour jitter**: brightness, contrast and saturation each scaled by a factor in
   ``1 +- colour_jitter``, a random order not needed at these strengths;
2. **zoom out** (probability ``zoom_out_probability``): the image placed at a random spot
   of a canvas up to ``zoom_out_max`` times its size, filled with the image's mean colour.
   It mattered most in the experiment behind issue 23: an object the teacher found large in
   one image is learned small, and the student then finds it small where the teacher did
   not;
3. **SSD random crop** (probability ``crop_probability``; Liu et al.'s sampler, as TF's
   ``ssd_random_crop``): a window of 0.3-1 of each side with an aspect ratio of 0.5-2,
   whose IoU with some box is at least a threshold drawn from 0.1, 0.3, 0.5, 0.7, 0.9 (up to
   50 tries, else no crop); boxes whose centre falls outside the window are dropped, the
   others clipped to it;
4. **horizontal flip** (probability 0.5);
5. resize to ``input_size`` square (bilinear, as ``ssd_coco`` resizes at inference).

Steps 2-5 are one affine map from the image to the output (a window of the source plane,
possibly larger than the image, scaled to the output and maybe mirrored), applied with a
single ``cv2.warpAffine``: no intermediate canvas of three times the image is built.
Boxes go through the same map and come out normalised to the output (0-1). Ignore boxes
(uncertain pseudo-labels) are moved like boxes and kept while any part of them is in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
CROP_TRIES = 50


@dataclass(frozen=True)
class AugmentSettings:
    """``input_size``: the output's side; the probabilities and strengths of the steps
    in the module docstring (``zoom_out_max`` 1 or a probability 0 turns a step off)."""

    input_size: int = 300
    colour_jitter: float = 0.2
    zoom_out_probability: float = 0.5
    zoom_out_max: float = 3.0
    crop_probability: float = 0.5
    flip_probability: float = 0.5


@dataclass
class Augmented:
    """The network's input (``input_size`` square, uint8 RGB), the kept boxes
    (normalised x0, y0, x1, y1, ``[G, 4]`` float32), the indexes of the input boxes they
    are (for their classes) and the ignore boxes (normalised, ``[I, 4]``)."""

    pixels: np.ndarray
    boxes: np.ndarray
    kept: np.ndarray
    ignore: np.ndarray


def jitter_colour(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    if strength <= 0:
        return image
    pixels = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, 3)
    pixels *= brightness
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = (pixels - grey) * saturation + grey
    return pixels.clip(0, 255).astype(np.uint8)


def box_iou_with(window: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of ``boxes`` (all ``x0, y0, x1, y1``)."""
    x0 = np.maximum(window[0], boxes[:, 0])
    y0 = np.maximum(window[1], boxes[:, 1])
    x1 = np.minimum(window[2], boxes[:, 2])
    y1 = np.minimum(window[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (window[2] - window[0]) * (window[3] - window[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def zoom_out_window(width: int, height: int, settings: AugmentSettings, rng) -> np.ndarray:
    """The source-plane window the output shows: the image itself, or (zoom out) a window
    up to ``zoom_out_max`` times larger that holds it at a random place."""
    window = np.array([0.0, 0.0, width, height])
    if settings.zoom_out_max > 1 and rng.random() < settings.zoom_out_probability:
        ratio = rng.uniform(1.0, settings.zoom_out_max)
        left = rng.uniform(0, width * (ratio - 1))
        top = rng.uniform(0, height * (ratio - 1))
        window = np.array([-left, -top, width * ratio - left, height * ratio - top])
    return window


def crop_window(window: np.ndarray, boxes: np.ndarray, settings: AugmentSettings, rng) -> np.ndarray:  # fmt: skip
    """A random crop of ``window`` (Liu et al.'s sampler), or ``window`` itself."""
    if not len(boxes) or rng.random() >= settings.crop_probability:
        return window
    min_iou = CROP_MIN_IOUS[int(rng.integers(0, len(CROP_MIN_IOUS)))]
    width, height = window[2] - window[0], window[3] - window[1]
    for _ in range(CROP_TRIES):
        w = rng.uniform(0.3, 1.0) * width
        h = rng.uniform(0.3, 1.0) * height
        if not 0.5 <= w / h <= 2.0:
            continue
        x0 = window[0] + rng.uniform(0, width - w)
        y0 = window[1] + rng.uniform(0, height - h)
        candidate = np.array([x0, y0, x0 + w, y0 + h])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (centres >= candidate[:2]).all(axis=1) & (centres <= candidate[2:]).all(axis=1)
        if inside.any() and box_iou_with(candidate, boxes).max() >= min_iou:
            return candidate
    return window


def map_boxes(boxes: np.ndarray, window: np.ndarray, flip: bool) -> np.ndarray:
    """Source boxes -> boxes normalised to ``window`` (0-1), mirrored if ``flip``."""
    scale = np.array([window[2] - window[0], window[3] - window[1]] * 2)
    mapped = (boxes - np.tile(window[:2], 2)) / scale
    if flip:
        mapped[:, [0, 2]] = 1.0 - mapped[:, [2, 0]]
    return mapped


def render(image: np.ndarray, window: np.ndarray, flip: bool, size: int) -> np.ndarray:
    """The ``window`` of the source plane as a ``size`` square: one affine warp, bilinear,
    the outside filled with the image's mean colour. Pixel centres map as ``cv2.resize``
    maps them (``(x + 0.5) * scale - 0.5``)."""
    sx = size / (window[2] - window[0])
    sy = size / (window[3] - window[1])
    matrix = np.array(
        [[sx, 0.0, (0.5 - window[0]) * sx - 0.5], [0.0, sy, (0.5 - window[1]) * sy - 0.5]]
    )
    if flip:  # x' -> size - 1 - x'
        matrix[0] = [-matrix[0, 0], 0.0, size - 1 - matrix[0, 2]]
    fill = tuple(float(v) for v in image.reshape(-1, 3).mean(axis=0))
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
    )  # fmt: skip


def augment(
    image: np.ndarray, boxes: np.ndarray, ignore: np.ndarray, settings: AugmentSettings, rng
) -> Augmented:
    """``image`` (``HxWx3`` uint8 RGB) with ``boxes`` and ``ignore`` (pixels, ``x0, y0, x1,
    y1``) augmented as the module docstring says."""
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ignore = np.asarray(ignore, np.float64).reshape(-1, 4)
    image = jitter_colour(image, settings.colour_jitter, rng)
    window = zoom_out_window(width, height, settings, rng)
    window = crop_window(window, boxes, settings, rng)
    flip = bool(rng.random() < settings.flip_probability)
    pixels = render(image, window, flip, settings.input_size)
    mapped = map_boxes(boxes, window, flip)
    centres = (mapped[:, :2] + mapped[:, 2:]) / 2
    kept = np.flatnonzero(((centres > 0) & (centres < 1)).all(axis=1))
    mapped = mapped[kept].clip(0.0, 1.0)
    ignored = map_boxes(ignore, window, flip).clip(0.0, 1.0)
    visible = (ignored[:, 2] > ignored[:, 0]) & (ignored[:, 3] > ignored[:, 1])
    return Augmented(pixels, mapped.astype(np.float32), kept, ignored[visible].astype(np.float32))


def plain(image: np.ndarray, boxes: np.ndarray, ignore: np.ndarray, input_size: int) -> Augmented:
    """No augmentation: the image resized as ``ssd_coco`` resizes it, its boxes normalised."""
    height, width = image.shape[:2]
    size = np.array([width, height, width, height], np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ignore = np.asarray(ignore, np.float64).reshape(-1, 4)
    pixels = cv2.resize(image, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return Augmented(
        pixels, (boxes / size).clip(0, 1).astype(np.float32), np.arange(len(boxes)),
        (ignore / size).clip(0, 1).astype(np.float32),
    )  # fmt: skip
