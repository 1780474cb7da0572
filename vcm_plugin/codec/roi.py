"""Region of interest: callers who know where their objects are (a tracker's boxes, a motion
mask) spend each layer's bits there.

How: before any layer is coded, the encoder low-passes the picture outside the region (a
Gaussian of ``OUTSIDE_BLUR`` pixels, blended through a feathered mask). Every layer then has
less to say outside, so at the same operating point the stream is smaller, and at the same
bytes a higher point fits, sharper inside. Decoders need nothing: the stream format is the
same, and a stream says nothing about the region it was encoded with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from vcm_plugin.errors import VCMError

#: Gaussian blur (pixels) of the picture outside the region.
OUTSIDE_BLUR = 3.0
#: Width (pixels) of the soft edge between inside and outside.
FEATHER = 4.0

Roi = np.ndarray | Sequence[Sequence[float]]
"""An HxW mask (bool, or numbers in [0, 1]) or boxes ``(x0, y0, x1, y1)`` in pixels."""


def roi_mask(roi: Roi, height: int, width: int) -> np.ndarray:
    """The region as a float (H, W) weight in [0, 1]; VCMError for anything else."""
    if isinstance(roi, np.ndarray) and roi.ndim == 2:
        if roi.shape != (height, width):
            raise VCMError(f"roi mask is {roi.shape[1]}x{roi.shape[0]}, image is {width}x{height}")
        mask = roi.astype(np.float32)
        if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise VCMError("roi mask values must be in [0, 1]")
        return mask
    try:
        boxes = np.asarray(roi, dtype=np.float64).reshape(-1, 4) if len(roi) else np.zeros((0, 4))
    except (TypeError, ValueError):
        raise VCMError("roi must be an HxW mask or a list of (x0, y0, x1, y1) boxes") from None
    if not np.isfinite(boxes).all():
        raise VCMError("roi boxes must be finite numbers")
    mask = np.zeros((height, width), np.float32)
    for x0, y0, x1, y1 in boxes:
        if x1 <= x0 or y1 <= y0:
            raise VCMError(f"roi box ({x0}, {y0}, {x1}, {y1}) is empty: need x0 < x1, y0 < y1")
        c0, c1 = (int(np.clip(round(v), 0, width)) for v in (x0, x1))
        r0, r1 = (int(np.clip(round(v), 0, height)) for v in (y0, y1))
        mask[r0:r1, c0:c1] = 1.0
    return mask


def focus(image: np.ndarray, roi: Roi) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with everything outside ``roi`` low-passed."""
    h, w = image.shape[:2]
    mask = roi_mask(roi, h, w)
    if mask.min() >= 1.0:
        return image
    soft = Image.fromarray(np.round(mask * 255).astype(np.uint8))
    weight = np.asarray(soft.filter(ImageFilter.GaussianBlur(FEATHER)), np.float32) / 255.0
    weight = np.maximum(weight, mask)[..., None]  # feather outwards only: inside stays sharp
    blurred = np.asarray(
        Image.fromarray(image).filter(ImageFilter.GaussianBlur(OUTSIDE_BLUR)), np.float32
    )
    out = weight * image.astype(np.float32) + (1.0 - weight) * blurred
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
