"""Reading an image for encoding: one rule for the CLI, the data-set encoder, the edge camera,
the Pillow plugin's ``save``, the integrations that take files or PIL images, and the eval's
data sets. Out comes 8-bit RGB with the picture's content intact, or a VCMError naming what could
not be kept: EXIF orientation is applied, 16-bit samples are scaled (not clipped) to 8 bits,
grayscale, 1-bit, palette, CMYK and YCbCr are converted, and alpha is refused rather than
silently flattened."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vcm_plugin.errors import VCMError

# modes Pillow converts to RGB without losing what the samples mean
_TO_RGB = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"}
# 16-bit unsigned samples (PPM/PGM with maxval > 255 open as "I", scaled to 0..65535)
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def pil_to_rgb(im, label: str = "image", file_format: str | None = None) -> np.ndarray:
    """HxWx3 uint8 from an open ``PIL.Image`` under the module's rule (no EXIF step: callers
    that want it apply ``ImageOps.exif_transpose`` first). ``file_format``: the format the
    image came from (PPM's 32-bit "I" mode holds 16-bit samples); default ``im.format``."""
    file_format = file_format or getattr(im, "format", None)
    if im.has_transparency_data:
        raise VCMError(
            f"{label} has an alpha channel (mode {im.mode}), which VCM does not "
            "code; flatten it first"
        )
    if im.mode in _SIXTEEN_BIT or (im.mode == "I" and file_format == "PPM"):
        gray16 = np.asarray(im).astype(np.uint32)
        gray8 = ((gray16 + 128) // 257).astype(np.uint8)  # round(v / 257): 65535 -> 255
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if im.mode not in _TO_RGB:
        raise VCMError(
            f"{label}: mode {im.mode} has no defined 8-bit RGB meaning "
            "(e.g. 32-bit integer, float or CIELAB samples); save it as 8- or "
            "16-bit RGB or grayscale first"
        )
    return np.asarray(im.convert("RGB"))


def read_rgb(
    source: str | Path | bytes, name: str | None = None, *, orient: bool = True
) -> np.ndarray:
    """HxWx3 uint8 from a path or the file's bytes (``name`` labels bytes in messages).
    ``orient=False`` skips the EXIF orientation (ground truth that refers to the stored pixel
    grid, as the eval's data sets have)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
            return pil_to_rgb(ImageOps.exif_transpose(im) if orient else im, label, im.format)
    except (UnidentifiedImageError, OSError) as exc:
        raise VCMError(f"cannot read image {label}: {exc}") from None
