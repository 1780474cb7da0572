"""Every image mode Pillow writes either keeps its picture on the way into the codec or is
refused with a VCMError naming the mode (issue 20: a 16-bit PNG used to encode ~99 % white).

One table of generated 32x48 files; each accepted file is checked twice against an
independent 8-bit conversion of the array it was made from: through ``read_rgb``, and through
``vcm encode`` + ``vcm decode`` against the Python ``Codec`` encoding that conversion.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from vcm_plugin import Codec, VCMError
from vcm_plugin.cli import main as vcm_main
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.measure import psnr

FAST = "fast"  # the DCT preset (named "default" before the preset rename): no weights, quick
EXACT = float("inf")
H, W = 32, 48

_y, _x = np.mgrid[0:H, 0:W]
RGB16 = np.stack([_x * 1390 + 7, _y * 2040 + 11, (_x * 700 + _y * 900) % 65536], axis=2).astype(
    np.uint16
)
GRAY16 = (RGB16[:, :, 0] // 2 + RGB16[:, :, 1] // 2).astype(np.uint16)
RGB = (RGB16 >> 8).astype(np.uint8)
GRAY = RGB[:, :, 1]
RGBA = np.dstack([RGB, GRAY])  # a real alpha: encoders drop an opaque one
CMYK = np.stack([RGB[:, :, 0], RGB[:, :, 1], 255 - RGB[:, :, 2], RGB[:, :, 0] // 3], axis=2)


def to8(v: np.ndarray) -> np.ndarray:
    """The correct 16 -> 8 bit conversion: scale, round."""
    return np.round(v.astype(np.float64) / 257).astype(np.uint8)


def as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    c, m, y, k = (cmyk[:, :, i].astype(np.float64) for i in range(4))
    return np.round(
        np.stack([(255 - c), (255 - m), (255 - y)], axis=2) * (255 - k[:, :, None]) / 255
    ).astype(np.uint8)


def pillow(mode_image, fmt: str, **options):
    def write(path):
        mode_image().save(path, format=fmt, **options)

    return write


def palette_image() -> Image.Image:
    return Image.fromarray(RGB).quantize(colors=64, dither=Image.Dither.NONE)


def palette_rgb() -> np.ndarray:
    im = palette_image()
    return np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)[np.asarray(im)]


BITS = (_x + _y) % 3 == 0
# orientation -> how the stored pixels relate to the picture (exif_transpose undoes it)
STORED_FOR_ORIENTATION = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, 1),
    8: lambda a: np.rot90(a, -1),
    2: lambda a: a[:, ::-1],
}


def rotated(fmt: str, orientation: int, **options):
    def write(path):
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](RGB))
        Image.fromarray(stored).save(path, format=fmt, exif=exif, **options)

    return write


def cv2_png(array):
    def write(path):
        assert cv2.imwrite(str(path), array[:, :, ::-1] if array.shape[2] == 3 else array)

    return write


def tiff(array, **options):
    def write(path):
        tifffile.imwrite(path, array, **options)

    return write


def with_info(make, fmt: str, **options):
    def write(path):
        make().save(path, format=fmt, **options)

    return write


# id, file suffix, writer, expected RGB (None: refused), PSNR bound or refusal fragment
ACCEPTED = [
    ("rgb-png", ".png", pillow(lambda: Image.fromarray(RGB), "PNG"), RGB, EXACT),
    ("rgb-tiff", ".tif", pillow(lambda: Image.fromarray(RGB), "TIFF"), RGB, EXACT),
    ("rgb-bmp", ".bmp", pillow(lambda: Image.fromarray(RGB), "BMP"), RGB, EXACT),
    ("rgb-ppm", ".ppm", pillow(lambda: Image.fromarray(RGB), "PPM"), RGB, EXACT),
    (
        "rgb-webp-lossless",
        ".webp",
        pillow(lambda: Image.fromarray(RGB), "WEBP", lossless=True),
        RGB,
        EXACT,
    ),
    ("rgb-jpeg", ".jpg", pillow(lambda: Image.fromarray(RGB), "JPEG", quality=95), RGB, 33.0),
    ("rgbx-tiff", ".tif", pillow(lambda: Image.fromarray(RGB).convert("RGBX"), "TIFF"), RGB, EXACT),
    ("L-png", ".png", pillow(lambda: Image.fromarray(GRAY), "PNG"), as_rgb(GRAY), EXACT),
    ("L-tiff", ".tif", pillow(lambda: Image.fromarray(GRAY), "TIFF"), as_rgb(GRAY), EXACT),
    ("L-pgm", ".pgm", pillow(lambda: Image.fromarray(GRAY), "PPM"), as_rgb(GRAY), EXACT),
    (
        "L-jpeg",
        ".jpg",
        pillow(lambda: Image.fromarray(GRAY), "JPEG", quality=95),
        as_rgb(GRAY),
        35.0,
    ),
    (
        "1-png",
        ".png",
        pillow(lambda: Image.fromarray(BITS), "PNG"),
        as_rgb(BITS.astype(np.uint8) * 255),
        EXACT,
    ),
    (
        "1-tiff",
        ".tif",
        pillow(lambda: Image.fromarray(BITS), "TIFF"),
        as_rgb(BITS.astype(np.uint8) * 255),
        EXACT,
    ),
    (
        "1-bmp",
        ".bmp",
        pillow(lambda: Image.fromarray(BITS), "BMP"),
        as_rgb(BITS.astype(np.uint8) * 255),
        EXACT,
    ),
    ("P-png", ".png", pillow(palette_image, "PNG"), palette_rgb(), EXACT),
    ("P-gif", ".gif", pillow(palette_image, "GIF"), palette_rgb(), EXACT),
    ("P-tiff", ".tif", pillow(palette_image, "TIFF"), palette_rgb(), EXACT),
    ("P-bmp", ".bmp", pillow(palette_image, "BMP"), palette_rgb(), EXACT),
    (
        "I;16-png",
        ".png",
        pillow(lambda: Image.fromarray(GRAY16), "PNG"),
        as_rgb(to8(GRAY16)),
        EXACT,
    ),
    (
        "I;16-tiff",
        ".tif",
        pillow(lambda: Image.fromarray(GRAY16), "TIFF"),
        as_rgb(to8(GRAY16)),
        EXACT,
    ),
    ("I;16B-tiff", ".tif", tiff(GRAY16.astype(">u2")), as_rgb(to8(GRAY16)), EXACT),
    (
        "I;16-pgm",
        ".pgm",
        pillow(lambda: Image.fromarray(GRAY16), "PPM"),
        as_rgb(to8(GRAY16)),
        EXACT,
    ),
    (
        "I;16-jpeg2000",
        ".jp2",
        pillow(lambda: Image.fromarray(GRAY16), "JPEG2000"),
        as_rgb(to8(GRAY16)),
        EXACT,
    ),
    # Pillow reads 16-bit RGB as 8-bit RGB by dropping the low byte: at most 1 level off
    ("rgb16-png", ".png", cv2_png(RGB16), to8(RGB16), 48.0),
    ("rgb16-tiff", ".tif", tiff(RGB16, photometric="rgb"), to8(RGB16), 48.0),
    (
        "cmyk-tiff",
        ".tif",
        pillow(lambda: Image.fromarray(CMYK, "CMYK"), "TIFF"),
        cmyk_to_rgb(CMYK),
        48.0,
    ),
    (
        "cmyk-jpeg",
        ".jpg",
        pillow(lambda: Image.fromarray(CMYK, "CMYK"), "JPEG", quality=95),
        cmyk_to_rgb(CMYK),
        33.0,
    ),
    (
        "ycbcr-tiff",
        ".tif",
        pillow(lambda: Image.fromarray(RGB).convert("YCbCr"), "TIFF"),
        RGB,
        38.0,
    ),
    ("exif-rotate180-png", ".png", rotated("PNG", 3), RGB, EXACT),
    ("exif-rotate90-png", ".png", rotated("PNG", 6), RGB, EXACT),
    ("exif-rotate270-png", ".png", rotated("PNG", 8), RGB, EXACT),
    ("exif-mirror-png", ".png", rotated("PNG", 2), RGB, EXACT),
    ("exif-rotate90-jpeg", ".jpg", rotated("JPEG", 6, quality=95), RGB, 33.0),
]

REFUSED = [
    ("RGBA-png", ".png", pillow(lambda: Image.fromarray(RGBA), "PNG"), "mode RGBA"),
    ("RGBA-webp", ".webp", pillow(lambda: Image.fromarray(RGBA), "WEBP"), "mode RGBA"),
    ("rgba16-png", ".png", cv2_png(np.dstack([RGB16, GRAY16])), "mode RGBA"),
    (
        "rgba16-tiff",
        ".tif",
        tiff(np.dstack([RGB16, GRAY16]), photometric="rgb", extrasamples=["unassalpha"]),
        "mode RGBA",
    ),
    ("LA-png", ".png", pillow(lambda: Image.fromarray(RGBA[:, :, 2:]), "PNG"), "mode LA"),
    ("PA-tiff", ".tif", pillow(lambda: palette_image().convert("PA"), "TIFF"), "mode PA"),
    ("P-transparent-png", ".png", with_info(palette_image, "PNG", transparency=0), "mode P"),
    ("P-transparent-gif", ".gif", with_info(palette_image, "GIF", transparency=0), "mode P"),
    (
        "L-transparent-png",
        ".png",
        with_info(lambda: Image.fromarray(GRAY), "PNG", transparency=7),
        "mode L",
    ),
    (
        "RGB-transparent-png",
        ".png",
        with_info(lambda: Image.fromarray(RGB), "PNG", transparency=(1, 2, 3)),
        "mode RGB",
    ),
    ("I-tiff", ".tif", pillow(lambda: Image.fromarray(GRAY16.astype(np.int32)), "TIFF"), "mode I "),
    (
        "F-tiff",
        ".tif",
        pillow(lambda: Image.fromarray(GRAY16.astype(np.float32)), "TIFF"),
        "mode F ",
    ),
    ("LAB-tiff", ".tif", pillow(lambda: Image.fromarray(RGB).convert("LAB"), "TIFF"), "mode LAB"),
]


def _case_ids(cases):
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.fixture(scope="module")
def codec():
    return Codec.from_preset(FAST)


@pytest.mark.parametrize(("suffix", "write", "expected", "bound"), _case_ids(ACCEPTED))
def test_reader_keeps_the_picture(tmp_path, suffix, write, expected, bound):
    path = tmp_path / f"in{suffix}"
    write(path)
    got = read_rgb(path)
    assert got.dtype == np.uint8 and got.shape == (H, W, 3)
    if bound == EXACT:
        np.testing.assert_array_equal(got, expected)
    else:
        assert psnr(got, expected) >= bound
    np.testing.assert_array_equal(read_rgb(path.read_bytes()), got)  # bytes: same rule


@pytest.mark.parametrize(("suffix", "write", "expected", "bound"), _case_ids(ACCEPTED))
def test_cli_encodes_the_picture(tmp_path, codec, suffix, write, expected, bound):
    path, stream, decoded = tmp_path / f"in{suffix}", tmp_path / "o.vcm", tmp_path / "o.png"
    write(path)
    assert vcm_main(["encode", str(path), str(stream), "--preset", FAST]) == 0
    assert vcm_main(["decode", str(stream), str(decoded)]) == 0
    reference = codec.encode(expected)
    picture = np.asarray(Image.open(decoded))
    if bound == EXACT:
        assert stream.read_bytes() == reference
        np.testing.assert_array_equal(picture, codec.decode(reference))
    else:  # a level or a JPEG's noise away from the reference input: close, not identical
        assert psnr(picture, codec.decode(reference)) >= 30.0


@pytest.mark.parametrize(("suffix", "write", "fragment"), _case_ids(REFUSED))
def test_unkeepable_modes_are_refused(tmp_path, capsys, suffix, write, fragment):
    path = tmp_path / f"in{suffix}"
    write(path)
    with pytest.raises(VCMError, match=fragment):
        read_rgb(path)
    assert vcm_main(["encode", str(path), str(tmp_path / "o.vcm"), "--preset", FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vcm: error:") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "o.vcm").exists()


def test_every_mode_pillow_writes_has_a_row(tmp_path):
    """Whatever mode a file Pillow can write opens as, the tables above check it."""
    covered = set()
    for name, suffix, write, *_ in ACCEPTED + REFUSED:
        write(tmp_path / f"{name}{suffix}")
        with Image.open(tmp_path / f"{name}{suffix}") as im:
            covered.add(im.mode)
    opened = set()
    for mode in Image.MODES:
        for fmt in ("PNG", "TIFF", "JPEG", "BMP", "GIF", "PPM", "WEBP", "JPEG2000", "TGA"):
            buf = io.BytesIO()
            try:
                Image.new(mode, (2, 2)).save(buf, format=fmt)
            except (OSError, ValueError, KeyError):
                continue  # Pillow cannot write this mode in this format
            with Image.open(buf) as im:
                opened.add(im.mode)
    assert opened <= covered, opened - covered
