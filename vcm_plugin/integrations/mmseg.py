"""OpenMMLab (mmengine / mmcv / mmsegmentation) integration: ``dict(type='VCMCompress', ...)``.

Importing this module (directly or through a config's ``custom_imports``):

1. registers ``VCMCompress`` (the ``@TRANSFORMS.register_module()`` on its class) in
   mmengine's root ``TRANSFORMS`` registry, which every downstream registry
   (``mmseg.registry.TRANSFORMS`` …) falls back to, so the type resolves inside any OpenMMLab
   scope;
2. calls :func:`~vcm_plugin.integrations.mmcv_shim.ensure_mmcv_ops`: where mmcv's compiled ops
   are missing (``mmcv-lite``), it installs the ``mmcv.ops`` import shim that ``mmseg.models`` /
   ``mmseg.apis`` need, so that a config naming this module in ``custom_imports`` builds and
   trains as shipped. With a full ``mmcv`` build nothing is touched. The shim lives in
   :mod:`vcm_plugin.integrations.mmcv_shim`; call its ``ensure_mmcv_ops()`` yourself to use
   mmseg's models without this transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmengine.registry import TRANSFORMS

from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.integrations._core import (
    ANALYTICS,
    CompressOptions,
    LayerSpec,
    check_p,
    layers_repr,
)
from vcm_plugin.integrations.mmcv_shim import ensure_mmcv_ops

__all__ = ["VCMCompress", "ensure_mmcv_ops"]

ensure_mmcv_ops()  # what custom_imports=[this module] promises mmseg's models (see above)


@TRANSFORMS.register_module()
class VCMCompress(CompressOptions, BaseTransform):
    """Replace ``results['img']`` by its VCM decode at a chosen or sampled operating point.

    Pixels only: ``gt_seg_map`` (and every other key) is left exactly as it was, so put it
    anywhere in a pipeline — after ``LoadImageFromFile`` to model a stored/sent picture.

    Required keys: ``img``. Modified keys: ``img``. Added keys: ``vcm_layers`` (layers decoded,
    ``None`` when skipped by ``p``) and ``vcm_bytes`` (bytes a receiver of that operating point
    is sent: for rate-accuracy bookkeeping).

    Args:
        layers: "analytics" (default) = the preset's analytics point; 1 = semantic layer only;
            k; None = all; ``(low, high)`` (a tuple or list from a
            config) = drawn per sample, clamped to the layers the stream holds.
        preset: codec preset.
        p: probability of applying the transform.
        cache: False, True (in-memory) or a directory: encoded streams keyed by image content,
            so later epochs decode without re-encoding.
        channel_order: ``'bgr'`` (what ``LoadImageFromFile`` produces) or ``'rgb'``.
    """

    def __init__(
        self,
        layers: LayerSpec = ANALYTICS,
        preset: str = DEFAULT_PRESET,
        p: float = 1.0,
        cache: bool | str = False,
        channel_order: str = "bgr",
    ) -> None:
        super().__init__()
        self._set_options(layers, preset, cache, channel_order)
        self.prob = check_p(p)

    @cache_randomness
    def _random_layers(self) -> tuple[bool, int | None]:
        apply = self.prob >= 1.0 or bool(np.random.rand() < self.prob)
        layers = self.layers
        if isinstance(layers, tuple):
            layers = int(np.random.randint(layers[0], layers[1] + 1))
        return apply, layers

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        apply, layers = self._random_layers()
        if not apply:
            results["vcm_layers"], results["vcm_bytes"] = None, None
            return results
        got = self._roundtrip(results["img"], layers)
        results["img"], results["vcm_layers"], results["vcm_bytes"] = (
            got.image,
            got.layers,
            got.bytes,
        )
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(layers={layers_repr(self.layers)}, "
            f"preset={self.preset!r}, p={self.prob}, cache={self.cache!r}, "
            f"channel_order={self.channel_order!r})"
        )
