"""Test images as bytes, good, odd and bad, made from one real photo.

The photo is ultralytics' ``assets/bus.jpg`` (810x1080, a street scene). The package is
located with ``importlib.util.find_spec`` and never imported: importing ultralytics
monkeypatches ``PIL.Image.open``, which would change what the tests exercise.

Every function returns ``bytes``. ``width`` downscales the photo (aspect ratio kept) so
tests stay fast; ``photo_image(width)`` gives the same pixels as a Pillow image, which is
what the odd encodings are made from.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow's transpose that undoes each EXIF orientation (what ImageOps.exif_transpose applies).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ... and its inverse: the transpose that makes the stored pixels from the upright ones.
_STORED = {**_UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def photo_path() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ultralytics is not installed: its assets/bus.jpg is the test photo"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "bus.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"test photo {path} is missing")
    return path


@functools.cache
def _original_bytes() -> bytes:
    return photo_path().read_bytes()


@functools.lru_cache(maxsize=16)
def _photo_array(width: int | None) -> np.ndarray:
    with Image.open(io.BytesIO(_original_bytes())) as image:
        image = image.convert("RGB")
        if width is not None and width != image.width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8).copy()
    array.setflags(write=False)
    return array


def photo_image(width: int | None = None) -> Image.Image:
    """The photo as an RGB Pillow image (a fresh copy), downscaled to ``width`` if given."""
    return Image.fromarray(np.array(_photo_array(width)), mode="RGB")


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def photo_bytes(width: int | None = None) -> bytes:
    """The original JPEG bytes, or the photo resized to ``width`` and re-encoded (quality 95)."""
    if width is None:
        return _original_bytes()
    return _encode(photo_image(width), "JPEG", quality=95)


def cmyk_jpeg(width: int = 320) -> bytes:
    """The photo as a CMYK JPEG (Pillow writes the Adobe marker, inverted CMYK)."""
    return _encode(photo_image(width).convert("CMYK"), "JPEG", quality=95)


def png16(width: int = 320) -> bytes:
    """A 16-bit grayscale PNG: the photo's luminance (Pillow ``L``) times 257, mode ``I;16``.

    Scaling 16-bit values back to 8 bits (``v * 255 / 65535``) gives the ``L`` values exactly.
    """
    luminance = np.asarray(photo_image(width).convert("L"), dtype=np.uint16)
    return png16_from_array(luminance * 257)


def png16_from_array(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG holding exactly ``values`` (a 2-D array of 0..65535)."""
    array = np.ascontiguousarray(values, dtype=np.uint16)
    image = Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes())
    return _encode(image, "PNG")


def exif_rotated_jpeg(width: int = 320, orientation: int = 6) -> bytes:
    """A JPEG whose stored pixels are transposed so that applying its EXIF ``orientation``
    (tag 0x0112) gives back the upright photo."""
    if orientation not in _STORED:
        raise ValueError(f"orientation must be 2..8, not {orientation}")
    stored = photo_image(width).transpose(_STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def rgba_png(width: int = 320) -> bytes:
    """The photo with an alpha channel: the left quarter fully transparent, the right half
    opaque, a horizontal ramp of alpha between."""
    image = photo_image(width)
    w, h = image.size
    alpha = np.full((h, w), 255, dtype=np.uint8)
    quarter, half = w // 4, w // 2
    alpha[:, :quarter] = 0
    alpha[:, quarter:half] = np.linspace(0, 255, half - quarter, dtype=np.uint8)[None, :]
    image.putalpha(Image.fromarray(alpha, mode="L"))
    return _encode(image, "PNG")


def rgba_transparent_columns(width: int = 320) -> int:
    """How many leftmost columns of ``rgba_png(width)`` are fully transparent."""
    return width // 4


def palette_png(width: int = 320) -> bytes:
    """The photo quantized to a 256-colour adaptive palette (mode ``P``)."""
    image = photo_image(width).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return _encode(image, "PNG")


def grayscale_jpeg(width: int = 320) -> bytes:
    """The photo as a single-channel (``L``) JPEG."""
    return _encode(photo_image(width).convert("L"), "JPEG", quality=95)


def animated_gif(width: int = 320) -> bytes:
    """A 3-frame GIF: the photo, then its negative, then the photo flipped upside down."""
    first = photo_image(width)
    negative = Image.fromarray(255 - np.asarray(first), mode="RGB")
    flipped = first.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return _encode(
        first, "GIF", save_all=True, append_images=[negative, flipped], duration=100, loop=0
    )


def truncated_jpeg() -> bytes:
    """The first half of the original JPEG's bytes."""
    data = _original_bytes()
    return data[: len(data) // 2]


def zero_bytes() -> bytes:
    return b""


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def text_file() -> bytes:
    return b"not an image\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


@functools.lru_cache(maxsize=4)
def decompression_bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit grayscale PNG of ``side`` x ``side`` zeros (400 M pixels by default, over
    Pillow's MAX_IMAGE_PIXELS and its 2x error limit), a few tens of KB on disk."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    chunks = []
    rows_per_block = max(1, (1 << 20) // len(row))
    block = row * rows_per_block
    full, rest = divmod(side, rows_per_block)
    for _ in range(full):
        chunks.append(compressor.compress(block))
    chunks.append(compressor.compress(row * rest))
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def tiny_png(side: int = 8) -> bytes:
    """A ``side`` x ``side`` RGB PNG cut from the middle of the photo."""
    image = photo_image(None)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return _encode(image.crop((left, top, left + side, top + side)), "PNG")
