"""Reading an image file for encoding: one rule for the CLI, the data-set encoder and the edge
camera (RGB out, grayscale promoted, alpha refused rather than silently flattened)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vcm_plugin.errors import VCMError


def read_rgb(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """HxWx3 uint8 from a path or the file's bytes (``name`` labels bytes in messages)."""
    from PIL import Image, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
            if "A" in im.mode or "transparency" in im.info:
                raise VCMError(f"{label} has an alpha channel, which VCM does not code; "
                               "flatten it first")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise VCMError(f"cannot read image {label}: {exc}") from None
