"""Regions: callers who know where their objects are (a detector's or tracker's boxes, a
motion mask) spend bits there.

Two uses, one low-pass (``focus``: a Gaussian of ``OUTSIDE_BLUR`` pixels outside the region,
blended through a feathered mask). A region of interest (``Codec.encode(img, roi=...)``)
applies before any layer is coded: every layer has less to say outside it. Objects
(``Codec.encode(img, objects=...)``) apply to the analytics point alone, the texture chain's
first layer: that layer spends its bits on the objects (grown by ``object_region``, since a
detector reads a little context around a box), and the layers above it code the photo itself,
so a person's views keep the background. Decoders need nothing either way: the stream format
is the same, and a stream says nothing about the region it was encoded with.
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
#: An object's box grows by this share of its width and height each way, and by
#: ``OBJECT_MARGIN`` pixels (probed on coco-val2017 with YOLOv5n's boxes at confidence 0.1).
OBJECT_GROW = 0.1
OBJECT_MARGIN = 8.0

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


def object_region(objects: Roi, height: int, width: int) -> np.ndarray:
    """``objects`` (boxes, or a mask used as it is) as the region the analytics point keeps
    sharp: each box grown by ``OBJECT_GROW`` of its size plus ``OBJECT_MARGIN`` pixels."""
    if isinstance(objects, np.ndarray) and objects.ndim == 2:
        return roi_mask(objects, height, width)
    mask = roi_mask(objects, height, width)  # validates the boxes
    if not len(objects):
        return mask
    grown = []
    for x0, y0, x1, y1 in np.asarray(objects, dtype=np.float64).reshape(-1, 4):
        dx, dy = OBJECT_GROW * (x1 - x0) + OBJECT_MARGIN, OBJECT_GROW * (y1 - y0) + OBJECT_MARGIN
        grown.append((x0 - dx, y0 - dy, x1 + dx, y1 + dy))
    return roi_mask(grown, height, width)


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
