"""The codec's two plug-in contracts: a latent backend (an invertible-ish map between images and
latents) and a layer brick (the coder of one layer of a stream)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from vcm_plugin.codec.layers import Source, State


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


class LayerBrick(Protocol):
    """What every layer coder (``vcm_plugin.codec.layers``) provides: one layer of a stream.

    The encoder advances the very state the decoder rebuilds, so every layer is coded against
    exactly what a receiver holds after the layers before it. A preset is a list of bricks,
    one per layer, in stream order (``codec.api._bricks``).

    Two optional class attributes (read with ``getattr``, default False) tell the codec how to
    schedule a brick: ``reads_pixels`` (it is coded against the decoded pixels of the layers
    before it, so a batch renders them first) and ``standalone`` (it needs no earlier layer;
    the container records that, and a view fetches it alone).
    """

    def encode(self, src: Source, state: State) -> bytes:
        """Code this layer from the encoder's originals; leave ``state`` as a decoder will
        have it after reading the returned payload."""
        ...

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        """Read this layer's payload (layer index ``layer``, for messages) into ``state``."""
        ...
