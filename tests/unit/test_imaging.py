"""engine.imaging.decode_image on real, odd and broken images (made by
tests/fixtures/imagekit.py)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from engine.imaging import DecodedImage, DecodeLimits, ImageError, decode_image
from tests.fixtures import imagekit as kit

W = 320  # the photo downscaled to this width: 320 x 427
H = 427


def decode(data: bytes, **limits) -> DecodedImage:
    return decode_image(data, DecodeLimits(**limits)) if limits else decode_image(data)


def assert_rgb8(decoded: DecodedImage, shape: tuple[int, int]) -> np.ndarray:
    pixels = decoded.pixels
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (*shape, 3)
    assert pixels.flags["C_CONTIGUOUS"]
    return pixels


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    """The reference pixels: the photo at width W, never encoded."""
    return np.asarray(kit.photo_image(W))


# --- inputs that are refused, each with its reason ------------------------------------


@pytest.mark.parametrize(
    "make, error_type",
    [
        (kit.zero_bytes, "empty"),
        (kit.truncated_jpeg, "truncated"),
        (kit.random_bytes, "not_an_image"),
        (lambda: kit.random_bytes(100, seed=7), "not_an_image"),
        (kit.text_file, "not_an_image"),
        (kit.decompression_bomb_png, "decompression_bomb"),
        (kit.tiny_png, "too_small"),
    ],
    ids=["zero", "truncated", "random", "random-short", "text", "bomb", "tiny"],
)
def test_bad_input_gives_its_error_type(make, error_type):
    with pytest.raises(ImageError) as info:
        decode_image(make())
    assert info.value.error_type == error_type
    assert str(info.value)  # a human-readable message goes to the errors table


def test_jpeg_cut_at_several_points_is_truncated_not_a_crash():
    data = kit.photo_bytes(W)
    for cut in (0.1, 0.5, 0.9):
        with pytest.raises(ImageError) as info:
            decode_image(data[: int(len(data) * cut)])
        assert info.value.error_type == "truncated", cut


def test_jpeg_header_only_is_refused():
    data = kit.photo_bytes(W)
    with pytest.raises(ImageError) as info:
        decode_image(data[:20])
    assert info.value.error_type in {"truncated", "not_an_image"}


def test_bomb_is_refused_before_decoding_pixels():
    data = kit.decompression_bomb_png()
    assert len(data) < 1_000_000
    assert struct.unpack(">II", data[16:24]) == (20_000, 20_000)  # IHDR width, height
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.error_type == "decompression_bomb"


def test_max_pixels_is_configurable():
    data = kit.photo_bytes(W)
    with pytest.raises(ImageError) as info:
        decode(data, max_pixels=W * H - 1)
    assert info.value.error_type == "decompression_bomb"
    assert "decode.max_pixels" in str(info.value)
    assert_rgb8(decode(data, max_pixels=W * H), (H, W))


def test_bomb_under_pillow_warning_band_is_refused():
    # Between Pillow's limit and twice it Pillow only warns; decode_image still refuses.
    side = 10_000  # 100 M pixels: over 89.5 M, under 179 M
    data = kit.decompression_bomb_png(side)
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.error_type == "decompression_bomb"


def test_min_side_is_configurable():
    data = kit.tiny_png(8)
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.error_type == "too_small"
    assert "decode.min_side" in str(info.value)
    decoded = decode(data, min_side=4)
    assert_rgb8(decoded, (8, 8))
    assert decoded.format == "PNG"
    with pytest.raises(ImageError) as info:
        decode(kit.tiny_png(3), min_side=4)
    assert info.value.error_type == "too_small"


def test_too_small_is_judged_on_the_upright_image():
    # 40 wide, 10 tall: too small on its height, whichever way it is stored.
    image = kit.photo_image(40).crop((0, 0, 40, 10))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    with pytest.raises(ImageError) as info:
        decode_image(buffer.getvalue())
    assert info.value.error_type == "too_small"


# --- good images in odd encodings -------------------------------------------------------


def test_plain_jpeg(upright):
    decoded = decode_image(kit.photo_bytes(W))
    pixels = assert_rgb8(decoded, (H, W))
    assert decoded.format == "JPEG"
    assert mean_abs_diff(pixels, upright) < 4


def test_original_photo_full_size():
    decoded = decode_image(kit.photo_bytes())
    assert_rgb8(decoded, (1080, 810))
    assert decoded.format == "JPEG"


def test_exif_rotation_is_applied(upright):
    data = kit.exif_rotated_jpeg(W, orientation=6)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (H, W)  # stored sideways
        assert raw.getexif()[0x0112] == 6
    pixels = assert_rgb8(decode_image(data), (H, W))
    assert mean_abs_diff(pixels, upright) < 8


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation_gives_the_upright_photo(orientation, upright):
    pixels = assert_rgb8(decode_image(kit.exif_rotated_jpeg(W, orientation)), (H, W))
    assert mean_abs_diff(pixels, upright) < 8


def test_cmyk_jpeg_close_to_rgb(upright):
    data = kit.cmyk_jpeg(W)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "CMYK"
    pixels = assert_rgb8(decode_image(data), (H, W))
    assert mean_abs_diff(pixels, upright) < 8


def test_png16_is_scaled_not_clipped():
    data = kit.png16(W)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")
    pixels = assert_rgb8(decode_image(data), (H, W))
    expected = np.asarray(kit.photo_image(W).convert("L"))
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    # v * 257 scaled back by 255 / 65535 is v again
    assert np.abs(pixels[..., 0].astype(int) - expected.astype(int)).max() <= 1
    # clipping at 255 would saturate nearly every pixel
    assert (pixels == 255).mean() < 0.05


def test_png16_known_values():
    values = np.zeros((16, 64), dtype=np.uint16)
    values[:, 0:16] = 65535
    values[:, 16:32] = 32896
    values[:, 32:48] = 0
    values[:, 48:64] = 257
    pixels = assert_rgb8(decode_image(kit.png16_from_array(values)), (16, 64))
    assert (pixels[:, 0:16] == 255).all()
    assert (np.abs(pixels[:, 16:32].astype(int) - 128) <= 1).all()
    assert (pixels[:, 32:48] == 0).all()
    assert (pixels[:, 48:64] == 1).all()


def test_rgba_composited_on_white(upright):
    data = kit.rgba_png(W)
    pixels = assert_rgb8(decode_image(data), (H, W))
    clear = kit.rgba_transparent_columns(W)
    assert (pixels[:, :clear] == 255).all()  # fully transparent -> white
    assert np.array_equal(pixels[:, W // 2 :], upright[:, W // 2 :])  # opaque -> unchanged
    # half-transparent pixels lie between the photo and white
    mid = pixels[:, clear : W // 2].astype(int)
    assert (mid >= upright[:, clear : W // 2].astype(int) - 1).all()


def test_rgba_pixel_transparent_black_becomes_white():
    array = np.zeros((16, 16, 4), dtype=np.uint8)  # transparent black everywhere
    array[8:, :, 3] = 255  # bottom half opaque black
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGBA").save(buffer, "PNG")
    pixels = assert_rgb8(decode_image(buffer.getvalue()), (16, 16))
    assert (pixels[:8] == 255).all()
    assert (pixels[8:] == 0).all()


def test_palette_png_gives_its_colours(upright):
    data = kit.palette_png(W)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P"
        expected = np.asarray(raw.convert("RGB"))
    pixels = assert_rgb8(decode_image(data), (H, W))
    assert np.array_equal(pixels, expected)
    assert mean_abs_diff(pixels, upright) < 8


def test_palette_with_transparency_composited_on_white():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    image.paste(1, (0, 8, 16, 16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    pixels = assert_rgb8(decode_image(buffer.getvalue()), (16, 16))
    assert (pixels[:8] == 255).all()
    assert (pixels[8:] == (200, 10, 10)).all()


def test_grayscale_jpeg_three_equal_channels(upright):
    pixels = assert_rgb8(decode_image(kit.grayscale_jpeg(W)), (H, W))
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    luminance = np.asarray(kit.photo_image(W).convert("L"))
    assert mean_abs_diff(pixels[..., 0], luminance) < 4


@pytest.mark.parametrize("mode", ["1", "LA", "F"])
def test_other_modes_become_rgb8(mode):
    image = kit.photo_image(64).convert("L")
    if mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float32) / 255.0, mode="F")
        fmt = "TIFF"
    else:
        image = image.convert(mode)
        fmt = "PNG"
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    pixels = assert_rgb8(decode_image(buffer.getvalue()), (image.height, image.width))
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    if mode == "F":  # 0..1 floats scaled to 0..255, not all black
        luminance = np.asarray(kit.photo_image(64).convert("L"))
        assert np.abs(pixels[..., 0].astype(int) - luminance.astype(int)).max() <= 1
    else:  # "1": its black and white dots; "LA": opaque, so its gray values exactly
        assert np.array_equal(pixels[..., 0], np.asarray(image.convert("L")))


def test_animated_gif_gives_first_frame(upright):
    data = kit.animated_gif(W)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.n_frames >= 2
    decoded = decode_image(data)
    pixels = assert_rgb8(decoded, (H, W))
    assert decoded.format == "GIF"
    first = mean_abs_diff(pixels, upright)
    assert first < 12  # GIF quantization
    assert first < mean_abs_diff(pixels, 255 - upright)
    assert first < mean_abs_diff(pixels, upright[::-1])


def test_decode_is_deterministic():
    data = kit.cmyk_jpeg(W)
    assert np.array_equal(decode_image(data).pixels, decode_image(data).pixels)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_png_and_webp_give_first_frame(fmt):
    first = kit.photo_image(64)
    negative = Image.fromarray(255 - np.asarray(first), mode="RGB")
    buffer = io.BytesIO()
    first.save(buffer, fmt, save_all=True, append_images=[negative], duration=100, lossless=True)
    with Image.open(io.BytesIO(buffer.getvalue())) as raw:
        assert raw.n_frames == 2
    pixels = assert_rgb8(decode_image(buffer.getvalue()), (first.height, first.width))
    assert mean_abs_diff(pixels, np.asarray(first)) < 1


def test_exif_orientation_in_png():
    upright = kit.photo_image(64)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", exif=exif.tobytes())
    pixels = assert_rgb8(decode_image(buffer.getvalue()), (upright.height, upright.width))
    assert np.array_equal(pixels, np.asarray(upright))


def pgm16(values: np.ndarray) -> bytes:
    """A binary 16-bit PGM (maxval 65535); Pillow opens it in mode ``I``."""
    height, width = values.shape
    return f"P5\n{width} {height}\n65535\n".encode() + values.astype(">u2").tobytes()


def test_pgm16_is_scaled():
    values = np.zeros((16, 48), dtype=np.uint16)
    values[:, :16] = 65535
    values[:, 16:32] = 32896
    data = pgm16(values)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "I"
    pixels = assert_rgb8(decode_image(data), (16, 48))
    assert (pixels[:, :16] == 255).all()
    assert (np.abs(pixels[:, 16:32].astype(int) - 128) <= 1).all()
    assert (pixels[:, 32:] == 0).all()


def test_dark_pgm16_is_scaled_too():
    values = np.full((16, 16), 200, dtype=np.uint16)  # 200 / 65535: black in 8 bits
    pixels = assert_rgb8(decode_image(pgm16(values)), (16, 16))
    assert (pixels <= 1).all()
