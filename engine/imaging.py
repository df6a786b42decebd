"""Safe image decoding: bytes in, an upright 8-bit RGB array out, or an ``ImageError``.

What ``decode_image`` guarantees for the pixels it returns:

- EXIF orientation is applied (the array is the image as a person sees it);
- CMYK, palette, grayscale (``L``, ``LA``, ``1``), 16-bit (``I;16*``, ``I``) and float
  (``F``) images become 8-bit RGB; 16-bit values are *scaled* to 0..255 (``v * 255 / 65535``),
  not clipped; images with alpha are composited on white;
- animated images (GIF, APNG, WebP) give their first frame.

What it refuses, each as an ``ImageError`` whose ``error_type`` is one of:
``empty`` (zero bytes), ``not_an_image`` (Pillow cannot identify it), ``truncated``
(the data stops early or is corrupt), ``decompression_bomb`` (more than ``max_pixels``
pixels, Pillow's own limit by default, checked before the pixels are decoded),
``too_small`` (a side under ``min_side``).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Never let Pillow pad a truncated file with grey: a truncated file is an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS default


class ImageError(Exception):
    """An input that cannot be used; ``error_type`` is a short machine-readable reason."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class DecodeLimits:
    """``min_side``: smallest accepted width or height in pixels.
    ``max_pixels``: largest accepted width * height (decompression-bomb guard)."""

    min_side: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class DecodedImage:
    pixels: np.ndarray  # HxWx3 uint8, RGB, upright
    format: str | None  # Pillow's name of the container format


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    if not data:
        raise ImageError("empty", "the file has zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its limit and raises above; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageError(
                    "decompression_bomb",
                    f"{width}x{height} = {width * height} pixels is over the limit of "
                    f"{limits.max_pixels} (decode.max_pixels)",
                )
            image_format = image.format
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = to_rgb8(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("decompression_bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", "Pillow cannot identify the data as an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError("truncated", f"corrupt or truncated image data: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this input's error, not the run's
        raise ImageError("undecodable", f"{type(exc).__name__}: {exc}") from exc
    pixels = np.asarray(rgb, dtype=np.uint8)
    if min(pixels.shape[:2]) < limits.min_side:
        raise ImageError(
            "too_small",
            f"{pixels.shape[1]}x{pixels.shape[0]} has a side under {limits.min_side} px "
            "(decode.min_side)",
        )
    return DecodedImage(pixels=np.ascontiguousarray(pixels), format=image_format)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white, 16-bit scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if mode != "F" or values.max(initial=0) > 1.0 else 255.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
