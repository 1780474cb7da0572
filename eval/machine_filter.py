"""An eval experiment (issue 30): a small network that prepares a decoded picture for a detector.

A decoded point is made for a person's eye or for nothing in particular; a detector wants
other things from it. This network is fitted (``python -m vcm_eval.fit_machine_filter``, on
BSDS500 photos only) so that YOLOv5n's three head-input feature maps on the filtered picture
match those on the original photo; it needs no labels. It would run after the decode, on the
pixels, so streams would not change. The harness dropped it (README, "Learned for machines"):
it gains at the lowest points and loses at the analytics point and above, so it is not in the
codec; the eval codecs ``vcm-machine`` and ``avif-machine`` measure it.

The network: pixel-unshuffle to half resolution (12 channels), five 3x3 convolutions of 32
channels with ReLU, pixel-shuffle back, added to the picture (a residual: the last
convolution starts at zero, so an unfitted filter is the identity). About 35k parameters.
Weights: ``$VCM_MACHINE_FILTER``, else ``runs/machine-filter/machine_filter.pt`` (what the
fitting command writes).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcm_eval.paths import REPO_ROOT
from vcm_plugin.codec.threads import codec_threads
from vcm_plugin.errors import VCMError

WIDTH = 32


class MachineFilter(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> the same shape (H, W even)."""

    def __init__(self, width: int = WIDTH, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]
        channels = 12
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        last = nn.Conv2d(channels, 12, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers += [last, nn.PixelShuffle(2)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def weights_path() -> Path:
    default = REPO_ROOT / "runs" / "machine-filter" / "machine_filter.pt"
    return Path(os.environ.get("VCM_MACHINE_FILTER", default))


@functools.cache
def fitted() -> MachineFilter:
    """The fitted filter (``weights_path()``), eval mode."""
    path = weights_path()
    if not path.is_file():
        raise VCMError(
            f"machine filter weights not found: {path} (fit them with python -m "
            "vcm_eval.fit_machine_filter --data ../shared/data/train-bsds500 --out "
            "runs/machine-filter, or set VCM_MACHINE_FILTER)"
        )
    net = MachineFilter()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def apply(net: MachineFilter, pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the filtered picture, uint8. Odd sides are padded by one edge
    row/column for the half-resolution step and cropped after. One torch thread (the codec's
    rule: the same picture on every machine)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise VCMError(f"machine filter needs (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    h, w = pixels.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None] / 255
    x = nn.functional.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    with torch.inference_mode(), codec_threads():
        y = net(x)[0, :, :h, :w]
    out = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return out.permute(1, 2, 0).contiguous().numpy()


def for_machines(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` through the fitted filter."""
    return apply(fitted(), pixels)
