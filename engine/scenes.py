"""Ground-truth scenes for tests and benchmarks: real photos of objects pasted at known
boxes onto varied backgrounds, plus rendered text lines, with COCO ground truth beside.

    generate_scenes(out_dir, n, seed=0, size=(640, 480), group=None) -> out_dir / "annotations.json"

writes ``out_dir/images/scene_00000.jpg ...`` and ``out_dir/annotations.json`` (COCO
instances: ``images`` with ``file_name`` = the image file's name, ``width``, ``height``;
``categories`` with the COCO names and the 90-id numbering SSD uses, plus ``text``
(id 91); ``annotations`` with ``bbox`` ``[x, y, w, h]`` in pixels, ``area`` = w * h,
``iscrowd`` 0, ``category_id``, and for rendered text lines ``"text"``: the line).

Where the objects come from (``CROPS``): photos that installed packages ship --
``skimage/data`` (scikit-image: chelsea, coffee, astronaut, motorcycle_left; brick,
grass, gravel and rocket as backgrounds only) and ``ultralytics/assets`` (bus.jpg,
zidane.jpg; located with ``importlib.util.find_spec``, ultralytics is not imported). Each
crop is a hand-measured rectangle of one photo together with *every* COCO object visible
in it, boxes measured by eye on the photo (``PHOTO_OBJECTS``). A crop that cuts an object
keeps the object clipped to the crop; crops were chosen so that no object is cut to a
sliver (a test checks that every object keeps at least a quarter of its area in every
crop that touches it), so no unlabelled fragment of a COCO object is ever pasted.

Photo groups (``PHOTO_GROUPS``): ``group="A"`` makes scenes of the bus, the cat and the
coffee cup only, ``group="B"`` of Zidane, the astronaut and the motorcycle only; neither
uses a background region of the other group's photos. A student refined on one group's
scenes can so be measured on objects it never saw (the other group's). ``group=None``
(default) draws from every photo, and gives the same scenes as before groups existed.

How a scene is made (all draws from ``numpy.random.default_rng([seed, index])``, so
scene ``i`` is the same whatever ``n`` is, and the whole set is deterministic):

1. a background: a solid colour, a two-colour gradient, smoothed noise, a tinted
   texture (brick, grass, gravel) or a blurred region of a photo that holds no COCO
   object (``BACKGROUND_PHOTOS``: the rocket's sky, the coffee's table, the bus's
   pavement);
2. one to four crops pasted at random scales (a third of them small, 8-20 % of the
   image height), sometimes mirrored, sometimes hanging over the image border, sometimes
   overlapping an earlier paste. A placement is refused when it would leave any object,
   of this paste or of an earlier one, with between 0 and 55 % of its area visible: an
   object is either well visible (its ground-truth box is the bounding box of the part
   of its box left uncovered) or gone entirely (no annotation);
3. zero to two text lines (one to three words from ``WORDS``, DejaVu Sans or Sans Bold
   from matplotlib, 10-44 px, some tilted by up to 7 degrees, some on a plain panel, some
   in low contrast), never overlapping an object or another line; the ground-truth box
   is the tight box of the glyph pixels;
4. whole-image brightness and contrast changes, sometimes Gaussian blur and sensor
   noise, then JPEG at quality 35-95.

Objects whose visible box is under ``MIN_SIDE`` pixels on a side are left out of the
ground truth (too small for any detector to be judged on). Text that the photos show
themselves (the bus's destination sign and livery) is not annotated: OCR precision
measured on these scenes is a lower bound (recall, exact match and CER are not affected).

How hard they are: the offline default ensemble (``fld run`` defaults, ``fld eval``) on
40 scenes (seed 0; 233 GT objects, 35 text lines) scored mAP50 0.35, mAP50-95 0.25,
precision 0.78 and recall 0.37 at IoU 0.5 (SSD misses nearly every small object, most
ties and spoons; calls some buses trucks); RapidOCR read 83 % of the lines exactly, CER
0.09 (it missed low-contrast lines, small tilted ones and a lone digit).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from engine.labels import COCO_LABELS
from engine.synthetic import dejavu_path

# COCO's category ids as the TF Object Detection API (and so SSD) numbers them.
COCO_CATEGORIES = COCO_LABELS
TEXT_CATEGORY_ID = 91
TEXT_CATEGORY = "text"

# Where each photo lies: (package, path inside the package).
PHOTOS = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "bus": ("ultralytics", "assets/bus.jpg"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 and y1 exclusive

# Every COCO object visible in each photo, boxes measured by eye (photo pixels).
PHOTO_OBJECTS: dict[str, list[tuple[str, Box]]] = {
    "chelsea": [("cat", (0, 0, 430, 300))],  # the face fills the frame; ears cut by the top
    "coffee": [
        ("cup", (173, 18, 409, 306)),  # rim to the bottom of the handle
        ("spoon", (326, 66, 424, 327)),  # behind the cup, bowl at the bottom right
    ],
    "astronaut": [("person", (20, 12, 362, 512))],  # Eileen Collins, head to the frame's bottom
    "motorcycle": [
        ("motorcycle", (92, 77, 684, 451)),  # tail light to the front tyre, mirror to tyres
        ("bench", (41, 106, 284, 307)),  # wooden bench behind the seat
    ],
    "bus": [
        ("bus", (10, 230, 803, 740)),
        ("person", (52, 399, 244, 902)),  # beige coat
        ("person", (223, 406, 345, 860)),  # black coat
        ("person", (669, 395, 810, 878)),  # cut by the right border
        ("person", (0, 552, 78, 874)),  # camouflage trousers, cut by the left border
    ],
    "zidane": [
        ("person", (127, 203, 1150, 720)),  # Zidane, pointing arm included
        ("person", (750, 44, 1135, 720)),  # Ancelotti
        ("tie", (445, 432, 510, 720)),
        ("tie", (997, 310, 1040, 500)),  # partly behind Zidane's hand
    ],
}


@dataclass(frozen=True)
class Crop:
    """A rectangle of a photo that is pasted whole; its objects are the photo's objects
    clipped to it."""

    name: str
    photo: str
    box: Box


CROPS: tuple[Crop, ...] = (
    Crop("cat", "chelsea", (0, 0, 430, 300)),
    Crop("cat_face", "chelsea", (60, 40, 400, 300)),  # a tighter, partial view of the cat
    Crop("cup", "coffee", (173, 18, 425, 328)),
    Crop("astronaut", "astronaut", (20, 12, 362, 512)),
    Crop("astronaut_bust", "astronaut", (20, 12, 362, 330)),  # head and shoulders
    Crop("motorcycle", "motorcycle", (92, 77, 684, 451)),
    Crop("bus_street", "bus", (0, 228, 810, 905)),  # the bus and four pedestrians
    Crop("bus_front", "bus", (0, 228, 420, 745)),  # front half of the bus, two and a half people
    Crop("bus_side", "bus", (300, 228, 810, 745)),  # rear half of the bus, a cut-off walker
    Crop("zidane_pair", "zidane", (120, 40, 1160, 720)),
    Crop("zidane", "zidane", (120, 190, 742, 720)),  # Zidane alone, arm cut at the elbow
)

# Background photos: regions holding no COCO object, blurred when used.
BACKGROUND_PHOTOS: tuple[tuple[str, Box], ...] = (
    ("rocket", (0, 0, 300, 300)),  # night sky and launch towers
    ("rocket", (330, 0, 640, 330)),
    ("coffee", (440, 0, 600, 120)),  # the wooden table above the saucer
    ("bus", (0, 915, 810, 1080)),  # the pavement in front of the bus
)
TEXTURES = ("brick", "grass", "gravel")  # grey textures, tinted

WORDS = (
    "OPEN", "9:30", "No.", "&", "Exit-3", "CLOSED", "EXIT", "Station", "Market", "Fresh", "BREAD", "Coffee", "Platform",
    "North", "SOUTH", "Gate", "12", "Tickets", "Welcome", "Library", "Parking", "No",
    "Entry", "Bus", "Stop", "Museum", "Cafe", "2024", "Main", "Street", "Sale", "50%",
    "Hotel", "Garden", "Bakery", "Route", "7", "Pharmacy", "Post", "Office", "Tea",
)  # fmt: skip

# Scene sets that share no photo: a student trained on one is measured on the other.
PHOTO_GROUPS: dict[str, tuple[str, ...]] = {
    "A": ("bus", "chelsea", "coffee"),
    "B": ("zidane", "astronaut", "motorcycle"),
}

MIN_SIDE = 6  # objects smaller than this (pixels) are not in the ground truth
MIN_VISIBLE = 0.55  # an object is either at least this visible, or not at all
MAX_PASTES = 4


def package_file(package: str, relative: str) -> Path:
    """A data file that an installed package ships, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        install = {"skimage": "scikit-image"}.get(package, package)
        raise RuntimeError(
            f"engine.scenes needs the photos that {install} ships: pip install {install}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise RuntimeError(f"{package} does not ship {relative} (looked at {path})")
    return path


@cache
def load_photo(name: str) -> Image.Image:
    package, relative = PHOTOS[name]
    with Image.open(package_file(package, relative)) as image:
        return image.convert("RGB")


def crop_objects(crop: Crop, min_fraction: float = 0.0) -> list[tuple[str, Box]]:
    """The crop's objects in crop coordinates (clipped), those keeping at least
    ``min_fraction`` of their area."""
    cx0, cy0, cx1, cy1 = crop.box
    objects = []
    for label, (x0, y0, x1, y1) in PHOTO_OBJECTS[crop.photo]:
        ix0, iy0, ix1, iy1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        fraction = (ix1 - ix0) * (iy1 - iy0) / ((x1 - x0) * (y1 - y0))
        if fraction >= min_fraction:
            objects.append((label, (ix0 - cx0, iy0 - cy0, ix1 - cx0, iy1 - cy0)))
    return objects


@dataclass
class Paste:
    crop: Crop
    box: Box  # where the crop lands in the scene (may hang over the border)
    objects: list[tuple[str, Box]]  # scene coordinates, unclipped


def group_crops(group: str | None) -> tuple[Crop, ...]:
    """The crops a scene of ``group`` may paste (every crop when ``group`` is None)."""
    if group is None:
        return CROPS
    if group not in PHOTO_GROUPS:
        raise ValueError(f"unknown photo group {group!r}; known: {sorted(PHOTO_GROUPS)}")
    return tuple(crop for crop in CROPS if crop.photo in PHOTO_GROUPS[group])


def group_backgrounds(group: str | None) -> tuple[tuple[str, Box], ...]:
    """The background photo regions a scene of ``group`` may use: none cut from another
    group's photos (they hold no object, but a photo must not cross groups at all)."""
    if group is None:
        return BACKGROUND_PHOTOS
    others = {photo for name, photos in PHOTO_GROUPS.items() if name != group for photo in photos}
    return tuple(entry for entry in BACKGROUND_PHOTOS if entry[0] not in others)


def scene_photos(annotations_path: str | Path) -> set[str]:
    """Every photo the scenes of a ``generate_scenes`` output took pixels from: those of
    their pasted crops and of their photo backgrounds (recorded in ``annotations.json``)."""
    coco = json.loads(Path(annotations_path).read_text())
    return {photo for image in coco["images"] for photo in image.get("photos", [])}


def make_background(
    rng: np.random.Generator, size: tuple[int, int], group: str | None = None
) -> tuple[Image.Image, str | None]:
    """A background and the photo it was cut from (None: not from a photo)."""
    width, height = size
    kind = rng.choice(
        ["solid", "gradient", "noise", "texture", "photo"], p=[0.1, 0.2, 0.2, 0.2, 0.3]
    )
    if kind == "solid":
        colour = rng.integers(0, 256, 3)
        return Image.fromarray(np.broadcast_to(colour, (height, width, 3)).astype(np.uint8)), None
    if kind == "gradient":
        start, end = rng.integers(0, 256, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs / width * np.cos(angle) + ys / height * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        pixels = start + (end - start) * t[..., None]
        return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), None
    if kind == "noise":
        cells = rng.integers(4, 24)
        coarse = rng.normal(128, 45, (cells, max(2, cells * width // height), 3))
        small = Image.fromarray(coarse.clip(0, 255).astype(np.uint8))
        image = small.resize(size, Image.BICUBIC)
        fine = rng.normal(0, 10, (height, width, 3))
        return Image.fromarray((np.asarray(image) + fine).clip(0, 255).astype(np.uint8)), None
    if kind == "texture":
        name = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
        gray = np.asarray(load_photo(name).convert("L").resize(size, Image.BILINEAR), np.float32)
        tint = rng.uniform(0.5, 1.2, 3)
        return Image.fromarray((gray[..., None] * tint).clip(0, 255).astype(np.uint8)), name
    backgrounds = group_backgrounds(group)
    name, region = backgrounds[int(rng.integers(0, len(backgrounds)))]
    image = load_photo(name).crop(region).resize(size, Image.BILINEAR)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 6.0)))), name


def random_placement(
    rng: np.random.Generator, crop: Crop, size: tuple[int, int]
) -> tuple[Box, bool]:
    """Scale and position of one paste: a third small, the rest medium to large."""
    width, height = size
    cx0, cy0, cx1, cy1 = crop.box
    crop_w, crop_h = cx1 - cx0, cy1 - cy0
    fraction = (
        rng.uniform(0.08, 0.2)
        if rng.random() < 1 / 3
        else float(np.exp(rng.uniform(np.log(0.25), np.log(0.85))))
    )
    scale = fraction * height / crop_h
    scale = min(scale, 0.95 * width / crop_w)
    new_w, new_h = max(2, round(crop_w * scale)), max(2, round(crop_h * scale))
    overhang = 0.3 if rng.random() < 0.2 else 0.0  # sometimes cut by the image border
    x = int(rng.integers(-int(overhang * new_w), max(1, width - new_w + int(overhang * new_w)) + 1))
    y = int(
        rng.integers(-int(overhang * new_h), max(1, height - new_h + int(overhang * new_h)) + 1)
    )
    return (x, y, x + new_w, y + new_h), bool(rng.random() < 0.5)


def scene_objects(crop: Crop, box: Box, mirrored: bool) -> list[tuple[str, Box]]:
    cx0, cy0, cx1, cy1 = crop.box
    sx = (box[2] - box[0]) / (cx1 - cx0)
    sy = (box[3] - box[1]) / (cy1 - cy0)
    objects = []
    for label, (x0, y0, x1, y1) in crop_objects(crop):
        if mirrored:
            x0, x1 = (cx1 - cx0) - x1, (cx1 - cx0) - x0
        objects.append(
            (
                label,
                (
                    box[0] + round(x0 * sx),
                    box[1] + round(y0 * sy),
                    box[0] + round(x1 * sx),
                    box[1] + round(y1 * sy),
                ),
            )
        )
    return objects


def visible_boxes(
    owner: np.ndarray, pastes: list[Paste]
) -> list[list[tuple[str, Box | None, float]]]:
    """For each paste's objects: the bounding box of its visible pixels (None when none
    is visible) and the visible fraction of its full area."""
    height, width = owner.shape
    result = []
    for index, paste in enumerate(pastes):
        found = []
        for label, (x0, y0, x1, y1) in paste.objects:
            area = max(1, (x1 - x0) * (y1 - y0))
            ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if ix1 <= ix0 or iy1 <= iy0:
                found.append((label, None, 0.0))
                continue
            mine = owner[iy0:iy1, ix0:ix1] == index
            count = int(mine.sum())
            if count == 0:
                found.append((label, None, 0.0))
                continue
            rows = np.flatnonzero(mine.any(axis=1))
            cols = np.flatnonzero(mine.any(axis=0))
            visible = (
                ix0 + int(cols[0]),
                iy0 + int(rows[0]),
                ix0 + int(cols[-1]) + 1,
                iy0 + int(rows[-1]) + 1,
            )
            found.append((label, visible, count / area))
        result.append(found)
    return result


def place_pastes(
    rng: np.random.Generator, size: tuple[int, int], group: str | None = None
) -> tuple[list[Paste], np.ndarray, list[bool]]:
    """Choose crops (of ``group``'s photos) and where they go; ``owner`` says which paste
    each pixel shows."""
    crops = group_crops(group)
    width, height = size
    owner = np.full((height, width), -1, dtype=np.int16)
    pastes: list[Paste] = []
    mirrors: list[bool] = []
    n_pastes = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    for _ in range(n_pastes):
        crop = crops[int(rng.integers(0, len(crops)))]
        for _attempt in range(25):
            box, mirrored = random_placement(rng, crop, size)
            candidate = Paste(crop, box, scene_objects(crop, box, mirrored))
            trial = owner.copy()
            x0, y0, x1, y1 = box
            trial[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = len(pastes)
            visibility = visible_boxes(trial, [*pastes, candidate])
            if all(
                fraction == 0.0 or fraction >= MIN_VISIBLE
                for objects in visibility
                for _label, _box, fraction in objects
            ) and any(fraction > 0 for _label, _box, fraction in visibility[-1]):
                owner = trial
                pastes.append(candidate)
                mirrors.append(mirrored)
                break
    return pastes, owner, mirrors


def paste_crop(canvas: Image.Image, paste: Paste, mirrored: bool, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = paste.box
    image = load_photo(paste.crop.photo).crop(paste.crop.box)
    if mirrored:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = image.resize((x1 - x0, y1 - y0), Image.LANCZOS)
    image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2)))
    canvas.paste(image, (x0, y0))


def text_mask(text: str, font: ImageFont.FreeTypeFont, angle: float) -> Image.Image:
    """The line's glyphs as an ``L`` mask cropped to their tight box (after rotating
    by ``angle`` degrees)."""
    left, top, right, bottom = font.getbbox(text)
    margin = 4 + (right - left) // 4 if angle else 4
    mask = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
    ImageDraw.Draw(mask).text((margin - left, margin - top), text, fill=255, font=font)
    if angle:
        mask = mask.rotate(angle, resample=Image.BICUBIC)
    return mask.crop(mask.point(lambda v: 255 if v > 96 else 0).getbbox())


def render_text_lines(
    canvas: Image.Image, owner: np.ndarray, rng: np.random.Generator
) -> list[tuple[str, Box]]:
    """Zero to two text lines where no object is; returns each line and its tight box:
    the bounding box of its glyph pixels (those over 96 of 255 in the line's mask)."""
    width, height = canvas.size
    free = owner < 0
    lines = []
    for _ in range(int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3]))):
        text = " ".join(str(rng.choice(WORDS)) for _ in range(int(rng.integers(1, 4))))
        font_size = round(float(np.exp(rng.uniform(np.log(10), np.log(44)))))
        font = ImageFont.truetype(dejavu_path(bold=bool(rng.random() < 0.6)), font_size)
        angle = float(rng.uniform(-7, 7)) if rng.random() < 0.3 else 0.0
        mask = text_mask(text, font, angle)
        text_w, text_h = mask.size
        pad = max(4, font_size // 3)
        if text_w + 2 * pad >= width or text_h + 2 * pad >= height:
            continue
        for _attempt in range(30):
            x = int(rng.integers(pad, width - text_w - pad))
            y = int(rng.integers(pad, height - text_h - pad))
            area = (x - pad, y - pad, x + text_w + pad, y + text_h + pad)
            if free[area[1] : area[3], area[0] : area[2]].all():
                break
        else:
            continue
        style = rng.random()
        if style < 0.35:  # a plain panel behind the text
            light = rng.random() < 0.7
            panel = rng.integers(180, 256, 3) if light else rng.integers(0, 70, 3)
            ImageDraw.Draw(canvas).rectangle(area, fill=tuple(int(v) for v in panel))
            background = panel.astype(np.float32)
        else:
            pixels = np.asarray(canvas, dtype=np.float32)
            background = pixels[area[1] : area[3], area[0] : area[2]].reshape(-1, 3).mean(axis=0)
        luminance = float(background.mean())
        if style > 0.8:  # low contrast: ink 35-70 levels off the background
            offset = float(rng.uniform(35, 70)) * (-1 if luminance > 128 else 1)
            colour = (background + offset).clip(0, 255)
        else:
            colour = rng.integers(0, 60, 3) if luminance > 128 else rng.integers(200, 256, 3)
        ink = Image.new("RGB", mask.size, tuple(int(v) for v in colour))
        canvas.paste(ink, (x, y), mask)
        free[area[1] : area[3], area[0] : area[2]] = False
        lines.append((text, (x, y, x + text_w, y + text_h)))
    return lines


def finish(canvas: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Whole-image photometric changes; returns the image and its JPEG quality."""
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.65, 1.35)))
    canvas = ImageEnhance.Contrast(canvas).enhance(float(rng.uniform(0.75, 1.25)))
    if rng.random() < 0.35:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.8))))
    if rng.random() < 0.3:
        noise = rng.normal(0, rng.uniform(2, 8), (canvas.height, canvas.width, 3))
        canvas = Image.fromarray(
            (np.asarray(canvas, np.float32) + noise).clip(0, 255).astype(np.uint8)
        )
    return canvas, int(rng.integers(35, 96))


@dataclass
class Scene:
    """One generated scene: the image, its JPEG quality, its annotations (without ids) and
    the photos its pixels came from (pasted crops and photo background)."""

    image: Image.Image
    quality: int
    annotations: list[dict]
    photos: list[str]


def make_scene(seed: int, index: int, size: tuple[int, int], group: str | None = None) -> Scene:
    """Scene ``index`` of ``seed`` (from ``group``'s photos when given)."""
    rng = np.random.default_rng([seed, index])
    canvas, background_photo = make_background(rng, size, group)
    pastes, owner, mirrors = place_pastes(rng, size, group)
    for paste, mirrored in zip(pastes, mirrors, strict=True):
        paste_crop(canvas, paste, mirrored, rng)
    annotations = []
    for paste, objects in zip(pastes, visible_boxes(owner, pastes), strict=True):
        for label, box, _fraction in objects:
            if box is None or min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                continue
            annotations.append({"label": label, "box": box, "crop": paste.crop.name})
    for text, box in render_text_lines(canvas, owner, rng):
        annotations.append({"label": TEXT_CATEGORY, "box": box, "text": text})
    canvas, quality = finish(canvas, rng)
    photos = {paste.crop.photo for paste in pastes}
    if background_photo is not None:
        photos.add(background_photo)
    return Scene(canvas, quality, annotations, sorted(photos))


def coco_categories() -> list[dict]:
    categories = [
        {"id": i, "name": name, "supercategory": "object"} for i, name in COCO_CATEGORIES.items()
    ]
    categories.append({"id": TEXT_CATEGORY_ID, "name": TEXT_CATEGORY, "supercategory": "text"})
    return categories


def generate_scenes(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    group: str | None = None,
) -> Path:
    """Write ``n`` scenes to ``out_dir/images/`` and their COCO ground truth to
    ``out_dir/annotations.json``; returns the path of the latter. ``group``: a key of
    ``PHOTO_GROUPS`` (only that group's photos), or None (every photo). The file's
    ``info.group`` names the group, and each image entry lists its ``photos``."""
    group_crops(group)  # an unknown group fails before anything is written
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    name_to_id = {name: i for i, name in COCO_CATEGORIES.items()} | {
        TEXT_CATEGORY: TEXT_CATEGORY_ID
    }
    coco: dict = {
        "info": {
            "description": "fld-engine ground-truth scenes (engine.scenes)",
            "seed": seed,
            "size": list(size),
            "group": group,
            "group_photos": list(PHOTO_GROUPS[group]) if group else None,
        },
        "images": [],
        "annotations": [],
        "categories": coco_categories(),
    }
    for index in range(n):
        scene = make_scene(seed, index, size, group)
        file_name = f"scene_{index:05d}.jpg"
        scene.image.save(images_dir / file_name, format="JPEG", quality=scene.quality)
        image_id = index + 1
        coco["images"].append(
            {"id": image_id, "file_name": file_name, "width": size[0], "height": size[1],
             "photos": scene.photos}
        )  # fmt: skip
        for annotation in scene.annotations:
            x0, y0, x1, y1 = annotation["box"]
            entry = {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": name_to_id[annotation["label"]],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
            if "text" in annotation:
                entry["text"] = annotation["text"]
            else:
                entry["crop"] = annotation["crop"]
            coco["annotations"].append(entry)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco, indent=1) + "\n")
    return path
