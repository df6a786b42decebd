"""Drawing annotations on an image (``fld show``): boxes, OCR quads, polygons, labels,
scores, and a legend of labels in matching colours."""

from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable, saturated colour per label."""
    hue = int(hashlib.md5(label.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans (it has accented letters; Pillow's built-in font does not)."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


class Canvas:
    """An image to draw on: outlines on the image, translucent fills on an overlay,
    line width and font scaled to the image, and a legend (key -> (count, colour))."""

    def __init__(self, pixels: np.ndarray):
        self.image = Image.fromarray(pixels).convert("RGB")
        scale = max(self.image.width, self.image.height) / 800
        self.line_width = max(2, round(2 * scale))
        self.font = font(max(12, round(14 * scale)))
        self.overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        self.fill = ImageDraw.Draw(self.overlay)
        self.draw = ImageDraw.Draw(self.image)
        self.legend: dict[str, tuple[int, tuple[int, int, int]]] = {}

    def finish(self, title: str) -> Image.Image:
        composed = Image.alpha_composite(self.image.convert("RGBA"), self.overlay).convert("RGB")
        return with_legend(composed, self.legend, title, self.font)


def draw_regions(pixels: np.ndarray, regions: list[dict], title: str = "") -> Image.Image:
    """Draw region rows (dicts with kind, x0..y1, quad, polygon, label, score) on an RGB
    array; returns a new image with a legend strip on the right."""
    canvas = Canvas(pixels)
    fill, draw, line_width, text_font, legend = (
        canvas.fill,
        canvas.draw,
        canvas.line_width,
        canvas.font,
        canvas.legend,
    )
    for region in regions:
        key = "ocr text" if region["kind"] == "ocr" else f"{region['kind']}: {region['label']}"
        colour = label_colour(key)
        count, _ = legend.get(key, (0, colour))
        legend[key] = (count + 1, colour)
        polygon = region.get("polygon") or []
        if len(polygon) >= 6:
            points = list(zip(polygon[0::2], polygon[1::2], strict=True))
            fill.polygon(points, fill=(*colour, 70), outline=(*colour, 255))
        if region.get("quad"):
            quad = region["quad"]
            draw.polygon(
                list(zip(quad[0::2], quad[1::2], strict=True)), outline=colour, width=line_width
            )
        else:
            draw.rectangle(
                (region["x0"], region["y0"], region["x1"], region["y1"]),
                outline=colour,
                width=line_width,
            )
        caption = f"{region['label']} {region['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=text_font)
        x, y = region["x0"], max(0.0, region["y0"] - (bottom - top) - 4)
        draw.rectangle((x, y, x + right - left + 6, y + bottom - top + 4), fill=colour)
        draw.text((x + 3, y + 2 - top), caption, fill=(0, 0, 0), font=text_font)
    return canvas.finish(title or "kept regions")


def with_legend(image: Image.Image, legend: dict, title: str, text_font) -> Image.Image:
    row_height = int(text_font.size * 1.6) if hasattr(text_font, "size") else 18
    longest = max(
        [text_font.getlength(f"{key} (00)") for key in legend] + [text_font.getlength(title)],
        default=0,
    )
    strip_width = max(220, int(longest + row_height + 30))
    rows = max(len(legend) + 2, 1)
    canvas = Image.new(
        "RGB", (image.width + strip_width, max(image.height, rows * row_height + 10)), "white"
    )
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = image.width + 10
    draw.text((x, 6), title or "kept regions", fill=(0, 0, 0), font=text_font)
    for index, (key, (count, colour)) in enumerate(sorted(legend.items())):
        y = 6 + (index + 1) * row_height
        draw.rectangle((x, y + 2, x + row_height - 6, y + row_height - 4), fill=colour)
        draw.text((x + row_height, y), f"{key} ({count})", fill=(0, 0, 0), font=text_font)
    if not legend:
        draw.text((x, 6 + row_height), "(no kept regions)", fill=(0, 0, 0), font=text_font)
    return canvas


def draw_phrases(pixels: np.ndarray, phrases: list[dict], title: str = "") -> Image.Image:
    """Draw phrase rows (dicts with phrase, box {x0..y1}, polygon, score): each phrase
    wording in its own colour, its boxes outlined and its polygons filled in that colour,
    with a legend of the phrases."""
    canvas = Canvas(pixels)
    fill, draw, line_width, legend = canvas.fill, canvas.draw, canvas.line_width, canvas.legend
    for row in phrases:
        if row.get("box") is None:
            continue
        key = row["phrase"]
        colour = label_colour(key)  # the same wording has the same colour across texts
        count, _ = legend.get(key, (0, colour))
        legend[key] = (count + 1, colour)
        box = row["box"]
        polygon = row.get("polygon") or []
        if len(polygon) >= 6:
            fill.polygon(
                list(zip(polygon[0::2], polygon[1::2], strict=True)),
                fill=(*colour, 90),
                outline=(*colour, 255),
            )
        draw.rectangle(
            (box["x0"], box["y0"], box["x1"], box["y1"]), outline=colour, width=line_width
        )
    return canvas.finish(title or "kept phrases")
