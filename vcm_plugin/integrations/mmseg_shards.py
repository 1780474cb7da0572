"""mmsegmentation training straight from ``vcm encode-dataset`` shards (VOC layout).

``custom_imports=dict(imports=["vcm_plugin.integrations.mmseg_shards"])`` registers, in
mmengine's root registries (so the types resolve inside the mmseg scope):

* ``VCMShardSegDataset`` (DATASETS) — a ``BaseSegDataset`` whose samples are the shard
  members; classes come from the source's ``classes.json`` (kept in the index) unless
  ``metainfo`` is given.
* ``LoadVCMShardImage`` (TRANSFORMS) — decodes the sample's stream at ``layers`` (fixed, or a
  ``(low, high)`` range drawn per sample), reading only those layers' bytes; replaces
  ``LoadImageFromFile``.
* ``LoadVCMShardAnnotations`` (TRANSFORMS) — the ``SegmentationClass`` mask from the shard,
  with mmseg's ``reduce_zero_label`` / ``label_map`` rules; replaces ``LoadAnnotations``.

::

    train_dataloader = dict(dataset=dict(
        type="VCMShardSegDataset", data_root="voc-shards",
        pipeline=[dict(type="LoadVCMShardImage", layers=(1, 4)),
                  dict(type="LoadVCMShardAnnotations"), ..., dict(type="PackSegInputs")]))
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmengine.registry import DATASETS, TRANSFORMS

from vcm_plugin.codec.layerspec import parse_layers
from vcm_plugin.datasets import ShardDataset
from vcm_plugin.errors import VCMError
from vcm_plugin.integrations._core import (
    ANALYTICS,
    check_channel_order,
    layers_repr,
)
from vcm_plugin.integrations.mmcv_shim import import_with_ops

__all__ = ["LoadVCMShardAnnotations", "LoadVCMShardImage", "VCMShardSegDataset"]

# mmseg.datasets imports mmcv.ops: on mmcv-lite the shim goes in first
BaseSegDataset = import_with_ops("mmseg.datasets").BaseSegDataset

_SHARDS: dict[str, ShardDataset] = {}
_SHARDS_LOCK = threading.Lock()


def _shards(root: str) -> ShardDataset:
    """One reader (index parsed once) per shard directory and process."""
    with _SHARDS_LOCK:
        ds = _SHARDS.get(root)
        if ds is None:
            ds = _SHARDS[root] = ShardDataset(root, verify=False)
        return ds


def _classes(root: Path) -> tuple[str, ...] | None:
    import json

    meta = _shards(str(root)).meta.get("classes.json")
    if meta is None:
        return None
    try:
        classes = json.loads(meta)["classes"]
        return tuple(name for name, _ in sorted(classes.items(), key=lambda kv: kv[1]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VCMError(
            f'{root}: classes.json in the index is not {{"classes": {{name: id}}}}'
        ) from None


@DATASETS.register_module()
class VCMShardSegDataset(BaseSegDataset):
    """Segmentation samples from a shard directory (``data_root``); each data info carries
    ``vcm_root`` / ``vcm_index`` for the loading transforms. Other arguments as
    ``BaseSegDataset`` (``reduce_zero_label``, ``ignore_index``, ``indices`` ...)."""

    def __init__(
        self, data_root: str, metainfo: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not data_root:
            raise VCMError("VCMShardSegDataset needs data_root (the shard directory)")
        root = Path(data_root).resolve()
        self._vcm_root = str(root)
        _shards(self._vcm_root)  # a bad directory fails here, with a clear message
        if metainfo is None:
            classes = _classes(root)
            metainfo = None if classes is None else {"classes": classes}
        super().__init__(data_root=str(root), metainfo=metainfo, **kwargs)

    def load_data_list(self) -> list[dict[str, Any]]:
        ds = _shards(self._vcm_root)
        root, out = self._vcm_root, []
        for i, (shard, m) in enumerate(ds.items):
            out.append(
                dict(
                    img_path=f"{root}/{shard}#{m['key']}",
                    vcm_root=root,
                    vcm_index=i,
                    vcm_key=m["key"],
                    label_map=self.label_map,
                    reduce_zero_label=self.reduce_zero_label,
                    seg_fields=[],
                )
            )
        return out


@TRANSFORMS.register_module()
class LoadVCMShardImage(BaseTransform):
    """Decode ``results['vcm_index']`` of the shards in ``results['vcm_root']``.

    Required keys: ``vcm_root``, ``vcm_index``. Added keys: ``img`` (BGR by default, as
    ``LoadImageFromFile``), ``img_shape``, ``ori_shape``, ``vcm_layers`` (decoded),
    ``vcm_bytes`` (stream bytes read).

    Args:
        layers: "analytics" (default) = the preset's analytics point; 1 = semantic layer
            only; k; None = all; ``(low, high)`` drawn per sample
            (``np.random``, which mmengine seeds per worker). Clamped to the stream's layers.
        channel_order: ``'bgr'`` (default, what mmseg pipelines expect) or ``'rgb'``.
        to_float32: as ``LoadImageFromFile``.
    """

    def __init__(
        self, layers: Any = ANALYTICS, channel_order: str = "bgr", to_float32: bool = False
    ) -> None:
        super().__init__()
        self.layers = parse_layers(layers)
        self.channel_order = check_channel_order(channel_order)
        self.to_float32 = bool(to_float32)

    @cache_randomness
    def _layers(self) -> int | str | None:
        if isinstance(self.layers, tuple):
            return int(np.random.randint(self.layers[0], self.layers[1] + 1))
        return self.layers

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        try:
            ds, i = _shards(results["vcm_root"]), int(results["vcm_index"])
        except KeyError as e:
            raise VCMError(
                f"LoadVCMShardImage needs {e} in the results: use it with VCMShardSegDataset"
            ) from None
        img, k, nbytes = ds.load(i, self._layers())  # RGB (the shared reader's order)
        if self.channel_order == "bgr":
            img = np.ascontiguousarray(img[..., ::-1])
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(
            img=img,
            img_shape=img.shape[:2],
            ori_shape=img.shape[:2],
            vcm_layers=k,
            vcm_bytes=nbytes,
        )
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(layers={layers_repr(self.layers)}, "
            f"channel_order={self.channel_order!r}, to_float32={self.to_float32})"
        )


@TRANSFORMS.register_module()
class LoadVCMShardAnnotations(BaseTransform):
    """``gt_seg_map`` from the sample's ``KEY.seg.png`` member (class ids), with the same
    ``reduce_zero_label`` and ``label_map`` handling as mmseg's ``LoadAnnotations``."""

    def __init__(self, reduce_zero_label: bool | None = None, suffix: str = "seg.png") -> None:
        super().__init__()
        self.reduce_zero_label = reduce_zero_label
        self.suffix = suffix

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        ds, i = _shards(results["vcm_root"]), int(results["vcm_index"])
        data = ds.label(i, self.suffix)
        if data is None:
            raise VCMError(f"{ds.keys[i]} has no {self.suffix} member in {ds.root}")
        with Image.open(io.BytesIO(data)) as im:
            seg = np.array(im).squeeze().astype(np.uint8)  # 'P' masks: the class ids
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results.get("reduce_zero_label", False)
        if self.reduce_zero_label:
            seg[seg == 0] = 255
            seg = seg - 1
            seg[seg == 254] = 255
        if results.get("label_map") is not None:
            orig = seg.copy()
            for old, new in results["label_map"].items():
                seg[orig == old] = new
        results["gt_seg_map"] = seg
        results.setdefault("seg_fields", []).append("gt_seg_map")
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(reduce_zero_label={self.reduce_zero_label}, "
            f"suffix={self.suffix!r})"
        )
