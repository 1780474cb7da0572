"""ROI encoding: at equal bytes, the region gets more of the stream than without a region."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec.measure import psnr

SHARED = Path(os.environ.get("VCM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
pytestmark = pytest.mark.needs_shared("data/kodak")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    path = sorted((SHARED / "data" / "kodak").glob("*.png"))[3]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((256, 176)))


def test_roi_spends_the_bytes_inside_the_region(photo):
    codec = Codec(device="cpu")
    h, w = photo.shape[:2]
    box = (w // 4, h // 4, w // 2, h // 2)
    inside = np.zeros((h, w), bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    plain, focused = codec.encode(photo), codec.encode(photo, roi=[box])
    mask_stream = codec.encode(photo, roi=inside)
    assert mask_stream == focused  # a mask and the same box are the same region
    sizes_plain = codec.inspect(plain).point_bytes
    sizes_roi = codec.inspect(focused).point_bytes
    top = len(sizes_roi)
    roi_top = codec.decode(focused, layers=top)
    # at equal (or fewer) bytes: the best plain point that fits the ROI stream's top point
    fits = [k for k in codec.inspect(plain).viewer_points if sizes_plain[k - 1] <= sizes_roi[-1]]
    assert fits, "the ROI stream's top point should be smaller than plain points"
    plain_same_bytes = codec.decode(plain, layers=fits[-1])
    assert (
        psnr(roi_top[inside], photo[inside]) > psnr(plain_same_bytes[inside], photo[inside]) + 1.0
    )
    # ... paid for outside: the region is where the stream is sharp
    assert psnr(roi_top[~inside], photo[~inside]) < psnr(roi_top[inside], photo[inside])
    # at the same operating point the ROI stream is smaller and the region no less sharp
    plain_top = codec.decode(plain, layers=top)
    assert sizes_roi[-1] < 0.7 * sizes_plain[-1]
    assert psnr(roi_top[inside], photo[inside]) > psnr(plain_top[inside], photo[inside]) - 0.5
    # a region covering everything is no region
    assert codec.encode(photo, roi=[(0, 0, w, h)]) == plain


@pytest.mark.parametrize(
    "roi, message",
    [
        ([(10, 10, 5, 20)], "empty"),
        ([(0, 0, float("nan"), 5)], "finite"),
        ("boxes", "mask or a list"),
        (np.full((3, 3), 0.5), "mask is 3x3"),
        (np.full((176, 256), 2.0), r"\[0, 1\]"),
    ],
)
def test_bad_roi_is_a_clear_error(photo, roi, message):
    with pytest.raises(VCMError, match=message):
        Codec("fast").encode(photo, roi=roi)
