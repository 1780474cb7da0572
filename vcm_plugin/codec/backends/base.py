"""The latent backend contract: an invertible-ish map between images and latents. (The other
plug-in contract, a layer's coder, is ``vcm_plugin.codec.layers.LayerBrick``.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class LatentBackend(Protocol):
    """Images are float32 HxWx3 RGB in [0, 1] with H, W multiples of ``factor``.

    Latents are float32 CxhxW/``factor`` arrays scaled so that a quantiser step of 1.0 is a
    sensible coarse step (roughly unit variance per channel).
    """

    name: str
    factor: int
    channels: int

    def encode(self, image: np.ndarray) -> np.ndarray: ...

    def decode(self, latent: np.ndarray) -> np.ndarray: ...

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``encode`` of each image; a GPU backend runs equal shapes as one batch."""
        ...

    def decode_batch(self, latents: Sequence[np.ndarray], exact: bool = True) -> list[np.ndarray]:
        """``decode`` of each latent; a GPU backend runs equal shapes as one batch.
        ``exact``: the arithmetic an encoder reproduces (pixels a later layer is coded
        against); False lets a CPU backend use the caller's threads (bounded differences)."""
        ...

    def identity(self) -> str:
        """A string that changes whenever decoded pixels would (weights, transforms)."""
        ...
