"""Rendered images with known content: signs with text lines (for OCR demos and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def dejavu_path(bold: bool = True) -> str:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name)


def render_sign(lines: list[str], size: tuple[int, int] = (640, 400), seed: int = 0) -> np.ndarray:
    """A sign board on a textured wall: dark text lines centred on a light panel.
    Returns an ``HxWx3`` uint8 RGB array; the text lines are exactly ``lines``."""
    rng = np.random.default_rng(seed)
    width, height = size
    wall = rng.normal(120, 18, size=(height, width, 3)).clip(0, 255).astype(np.uint8)
    wall[..., 0] = (wall[..., 0] * 0.8 + 40).astype(np.uint8)  # a brick-ish tint
    image = Image.fromarray(wall)
    draw = ImageDraw.Draw(image)
    margin_x, margin_y = width // 10, height // 8
    draw.rounded_rectangle(
        (margin_x, margin_y, width - margin_x, height - margin_y), radius=18,
        fill=(245, 240, 225), outline=(60, 40, 20), width=6,
    )  # fmt: skip
    text_font = ImageFont.truetype(
        dejavu_path(), size=max(16, height // (3 * max(1, len(lines)) + 1))
    )
    line_height = text_font.size * 1.5
    top = (height - line_height * len(lines)) / 2
    for index, line in enumerate(lines):
        left, _, right, _ = draw.textbbox((0, 0), line, font=text_font)
        x = (width - (right - left)) / 2
        draw.text((x, top + index * line_height), line, fill=(25, 25, 35), font=text_font)
    return np.asarray(image)
