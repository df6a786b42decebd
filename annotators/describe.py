"""Words for regions, measured from pixels and boxes (shared by the offline captioners).

Nothing here guesses: colours come from the region's pixels, positions and sizes from its
box, counts from the kept regions.
"""

from __future__ import annotations

import hashlib

import numpy as np

NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
IRREGULAR_PLURALS = {
    "person": "people", "mouse": "mice", "knife": "knives", "bus": "buses", "wine glass": "wine glasses",
    "sandwich": "sandwiches", "couch": "couches", "bench": "benches", "skis": "pairs of skis",
    "scissors": "pairs of scissors", "giraffe": "giraffes", "sheep": "sheep", "hair drier": "hair driers",
    "toothbrush": "toothbrushes", "glass": "glasses", "dish": "dishes", "box": "boxes", "tv": "TVs",
}  # fmt: skip
VOWELS = "aeiou"


def plural(label: str, count: int) -> str:
    if count == 1:
        return label
    if label in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[label]
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in VOWELS:
        return label[:-1] + "ies"
    return label + "s"


def article(word: str) -> str:
    return "an" if word[:1].lower() in VOWELS else "a"


def counted(label: str, count: int) -> str:
    """``"a bus"``, ``"three people"``, ``"12 cups"``."""
    if count == 1:
        return f"{article(label)} {label}"
    number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{number} {plural(label, count)}"


def join_words(items: list[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def pick(options: list[str], *key: object) -> str:
    """A deterministic choice among phrasings, varied by image and slot."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return options[digest[0] % len(options)]


def colour_of_pixel_block(pixels: np.ndarray) -> list[tuple[str, float]]:
    """Named colours of an RGB block with their pixel shares, most common first.

    Each pixel is named by HSV rules: dark -> black; unsaturated -> white or gray;
    otherwise by hue (red, orange, yellow, green, blue, purple, pink), with dark
    orange/red named brown and pale orange/yellow named beige."""
    block = pixels.reshape(-1, 3).astype(np.float32) / 255.0
    if len(block) > 4096:  # a fixed, even sample keeps this cheap on large regions
        block = block[:: len(block) // 4096]
    red, green, blue = block[:, 0], block[:, 1], block[:, 2]
    value = block.max(axis=1)
    chroma = value - block.min(axis=1)
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-6), 0)
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.select(
            [value == red, value == green],
            [((green - blue) / safe) % 6, (blue - red) / safe + 2],
            (red - green) / safe + 4,
        )
        * 60.0
    )
    names = np.empty(len(block), dtype=object)
    hue_names = np.select(
        [hue < 15, hue < 40, hue < 70, hue < 165, hue < 255, hue < 290, hue < 345],
        ["red", "orange", "yellow", "green", "blue", "purple", "pink"],
        "red",
    )
    names[:] = hue_names
    brownish = (hue < 40) & (value < 0.6) & (saturation > 0.25)
    names[brownish] = "brown"
    names[(hue < 50) & (saturation < 0.45) & (value >= 0.6)] = "beige"
    grayish = saturation < 0.18
    names[grayish & (value > 0.8)] = "white"
    names[grayish & (value <= 0.8)] = "gray"
    names[value < 0.18] = "black"
    labels, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(str(labels[i]), float(counts[i]) / len(block)) for i in order]


# Labels of people: the colour of their box's pixels is their clothing's or the background's,
# not theirs, so no colour word is put in front of them ("a green person").
PEOPLE_LABELS = frozenset(
    {"person", "people", "man", "men", "woman", "women", "child", "children", "boy", "girl"}
)


def region_colour(
    pixels: np.ndarray, box: tuple[float, float, float, float], label: str = ""
) -> str | None:
    """The dominant colour of the central part of a box (the middle 60% in each
    direction, to leave out most of the background), or None for a tiny box or a box of
    a person (``PEOPLE_LABELS``)."""
    if label.strip().lower() in PEOPLE_LABELS:
        return None
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    cx0, cx1 = int(x0 + 0.2 * width), int(np.ceil(x1 - 0.2 * width))
    cy0, cy1 = int(y0 + 0.2 * height), int(np.ceil(y1 - 0.2 * height))
    crop = pixels[max(cy0, 0) : max(cy1, 0), max(cx0, 0) : max(cx1, 0)]
    if crop.size < 12:
        return None
    return colour_of_pixel_block(crop)[0][0]


def position(box: tuple[float, float, float, float], width: int, height: int) -> str:
    """Where the box's centre lies on a 3x3 grid: "on the left", "at the top right", ..."""
    cx = (box[0] + box[2]) / 2 / width
    cy = (box[1] + box[3]) / 2 / height
    column = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    if row == "middle":
        return "in the center" if column == "center" else f"on the {column}"
    if column == "center":
        return f"at the {row}"
    return f"at the {row} {column}"


def size_word(box: tuple[float, float, float, float], width: int, height: int) -> str:
    share = (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    if share > 0.35:
        return "large"
    if share < 0.03:
        return "small"
    return "medium-sized"


def frame_share(box: tuple[float, float, float, float], width: int, height: int) -> str:
    share = (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    if share > 0.6:
        return "most of the frame"
    if share > 0.3:
        return "about a third of the frame" if share < 0.45 else "about half of the frame"
    if share > 0.1:
        return "a good part of the frame"
    return "a small part of the frame"


def relation(a: tuple[float, ...], b: tuple[float, ...]) -> str:
    """How box ``a`` lies relative to box ``b``, from geometry alone."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    if area_a > 0 and ix * iy / area_a > 0.8:
        return "lies within the area of"
    if ix * iy > 0:
        return "overlaps"
    acx, acy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bcx, bcy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if abs(acx - bcx) >= abs(acy - bcy):
        return "stands to the left of" if acx < bcx else "stands to the right of"
    return "appears above" if acy < bcy else "appears below"
