"""``VCMCompression``: an Albumentations image-only transform, the VCM twin of
``A.ImageCompression``.

Why Albumentations: it is the augmentation idiom of ultralytics (``model.train(...,
augmentations=[...])``) and of many PyTorch pipelines; an image-only transform never moves a
box, mask or keypoint, so every target stays valid by construction.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.integrations._core import (
    ANALYTICS,
    CompressOptions,
    LayerSpec,
    check_p,
)

__all__ = ["VCMCompression"]


class VCMCompression(CompressOptions, A.ImageOnlyTransform):
    """Compress → decompress with the VCM codec at a chosen or sampled operating point.

    Args:
        layers: operating point decoded: ``"analytics"`` (default) = the preset's analytics
            point, ``1`` = semantic layer only, ``k`` = point k, ``None`` = all,
            ``(low, high)`` = a count drawn uniformly per image (inclusive), clamped to the
            layers the stream holds.
        preset: codec preset (the generator preset by default; ``"fast"`` is the DCT one:
            quicker, far less accurate for analytics).
        channel_order: ``"rgb"`` (the Albumentations convention) or ``"bgr"`` — ultralytics
            hands its Albumentations hook OpenCV BGR images.
        cache: ``False``; ``True`` to keep encoded streams in memory keyed by image content;
            or a directory shared by DataLoader workers. Helps when the same pixels come back
            (validation, un-augmented training); random crops/mosaics never repeat.
        p: probability of applying the transform.

    Targets: image. Image types: uint8, float32 (in [0, 1]).
    """

    def __init__(
        self,
        layers: LayerSpec = ANALYTICS,
        preset: str = DEFAULT_PRESET,
        channel_order: str = "rgb",
        cache: bool | str = False,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=check_p(p))
        self._set_options(layers, preset, cache, channel_order)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("layers", "preset", "channel_order", "cache")

    def get_params(self) -> dict[str, Any]:
        """Draw the layer count for this image from the transform's own RNG (seedable)."""
        layers = self.layers
        if isinstance(layers, tuple):
            layers = self.py_random.randint(layers[0], layers[1])
        return {"layers": layers}

    def apply(
        self, img: np.ndarray, layers: int | str | None = ANALYTICS, **params: Any
    ) -> np.ndarray:
        return self._roundtrip(img, layers).image
