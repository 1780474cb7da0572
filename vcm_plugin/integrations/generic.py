"""Framework-free integrations: a numpy function and a torchvision-style transform.

Why both: scripts that already hold arrays want one call (``vcm_roundtrip``); torchvision
pipelines (``transforms.Compose([...])``) want a callable object that keeps the input type
(``PIL.Image`` in, ``PIL.Image`` out; tensor in, tensor out) and prints its parameters.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from vcm_plugin.codec.layerspec import draw_layers, parse_layers
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.errors import VCMError
from vcm_plugin.integrations._core import (
    ANALYTICS,
    CacheSpec,
    CompressOptions,
    LayerSpec,
    check_cache,
    check_channel_order,
    check_p,
    get_codec,
    layers_repr,
    resolve_cache,
    roundtrip,
)

__all__ = ["VCMTransform", "vcm_roundtrip"]


def vcm_roundtrip(
    img: np.ndarray,
    layers: LayerSpec = ANALYTICS,
    preset: str = DEFAULT_PRESET,
    *,
    channel_order: str = "rgb",
    cache: CacheSpec = False,
    rng: random.Random | None = None,
) -> np.ndarray:
    """Encode ``img`` and decode ``layers`` layers: what a receiver of that operating point sees.

    ``img`` is HxWx3 (or HxW / HxWx1) uint8, or float in [0, 1]; the result has the same shape,
    dtype and ``channel_order`` ('rgb' or 'bgr' for OpenCV arrays). ``layers="analytics"``
    (default) is the preset's analytics point, ``layers=1`` the semantic layer only, ``None``
    every layer, ``(lo, hi)`` a count drawn per call.
    """
    spec = parse_layers(layers)
    channel_order = check_channel_order(channel_order)
    get_codec(preset)  # a bad preset fails here, with the codec's message
    return roundtrip(
        img,
        draw_layers(spec, rng),
        preset,
        channel_order=channel_order,
        cache=resolve_cache(check_cache(cache)),
    )


class VCMTransform(CompressOptions):
    """torchvision-style transform: compress → decompress at a chosen or sampled operating point.

    Accepts a ``PIL.Image`` (returns one, same mode where it is L/RGB/RGBA — alpha is kept
    untouched), a ``torch.Tensor`` CxHxW or NxCxHxW (uint8 0..255 or float 0..1, RGB; returns
    the same dtype and device) or a numpy HxWxC array. Use it inside
    ``torchvision.transforms.Compose`` like any other transform.
    """

    def __init__(
        self,
        layers: LayerSpec = ANALYTICS,
        preset: str = DEFAULT_PRESET,
        p: float = 1.0,
        cache: CacheSpec = False,
        seed: int | None = None,
    ) -> None:
        self._set_options(layers, preset, cache)
        self.p = check_p(p)
        self.seed = seed
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layers={layers_repr(self.layers)}, "
            f"preset={self.preset!r}, p={self.p}, cache={self.cache!r})"
        )

    def _one(self, arr: np.ndarray) -> np.ndarray:
        k = draw_layers(self.layers, self._rng)
        return self._roundtrip(arr, k).image

    def __call__(self, img: Any) -> Any:
        if self.p < 1.0 and self._rng.random() >= self.p:
            return img
        if isinstance(img, np.ndarray):
            return self._one(img)
        import torch  # Pillow and torch are core dependencies
        from PIL import Image

        if isinstance(img, Image.Image):
            return self._pil(img)
        if isinstance(img, torch.Tensor):
            return self._tensor(img)
        raise VCMError(
            f"{type(self).__name__} takes a PIL.Image, a torch.Tensor or a numpy array, "
            f"got {type(img).__name__}"
        )

    def _pil(self, img: Any) -> Any:
        from PIL import Image

        if img.mode in ("RGB", "L"):
            return Image.fromarray(self._one(np.asarray(img)))
        if img.mode == "RGBA":
            arr = np.asarray(img)
            out = self._one(np.ascontiguousarray(arr[..., :3]))
            return Image.fromarray(np.dstack([out, arr[..., 3]]))
        return Image.fromarray(self._one(np.asarray(img.convert("RGB")))).convert(img.mode)

    def _tensor(self, t: Any) -> Any:
        import torch

        if t.ndim == 4:
            return torch.stack([self._tensor(x) for x in t])
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise VCMError(f"expected a CxHxW tensor with C in (1, 3), got shape {tuple(t.shape)}")
        arr = t.detach().cpu().permute(1, 2, 0).numpy()
        if t.dtype == torch.uint8:
            out = self._one(arr)
        elif t.is_floating_point():
            out = self._one(arr.astype(np.float32))
        else:
            raise VCMError(f"expected a uint8 or floating tensor, got {t.dtype}")
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(t.device, t.dtype)
