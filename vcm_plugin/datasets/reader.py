"""Read decoded images at a chosen layer count straight from the shards (no re-encoding).

``ShardDataset(root, layers=1)`` is a map-style data set (``len``, ``ds[i]``), so a
``torch.utils.data.DataLoader`` takes it as is; it is picklable (no open files are kept), so
DataLoader workers get their own copy. Random access uses the index: an item reads only the
stream header and the bytes of the layers it decodes (one byte range of the tar), then
``Codec.decode(prefix, layers=k)``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.codec.api import resolve_point
from vcm_plugin.codec.container import HEADER_PROBE, NO_PIXEL_LIMIT, parse_header
from vcm_plugin.codec.layerspec import draw_layers, parse_layers
from vcm_plugin.codec.presets import ANALYTICS
from vcm_plugin.errors import VCMError

__all__ = ["ShardDataset"]

LayersArg = int | str | tuple[int, int] | list[int] | set[int] | None


class ShardDataset:
    """Images decoded from ``vcm encode-dataset`` shards.

    Args:
        root: the shard directory (holds ``index.json``).
        layers: ``None`` = every layer; ``"analytics"`` = the preset's analytics point;
            ``k`` = the first k layers (1 = the semantic layer);
            ``(low, high)`` (or ``[low, high]``) = a count drawn per item from low..high;
            ``{k1, k2, ...}`` = drawn from the set. Counts above what a stream holds are
            clamped to it.
        seed: draws depend only on (seed, epoch, item index), so they are reproducible and the
            same in any DataLoader worker; ``set_epoch(e)`` gives a new draw per epoch.
        channel_order: ``"rgb"`` (PIL / torchvision) or ``"bgr"`` (OpenCV / ultralytics /
            OpenMMLab).
        verify: check each shard's size against the index at construction.

    ``ds[i]`` is a dict: ``key``, ``image`` (HxWx3 uint8), ``layers`` (decoded), ``nbytes``
    (the stream bytes read: what a receiver of that operating point is sent), ``labels``
    (``{suffix: bytes}``, e.g. ``txt`` for YOLO, ``seg.png`` for VOC masks).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layers: LayersArg = None,
        seed: int = 0,
        channel_order: str = "rgb",
        verify: bool = True,
    ) -> None:
        self.root = Path(root)
        path = self.root / "index.json"
        if not path.is_file():
            raise VCMError(
                f"{self.root} has no index.json: not a shard directory, or its "
                "encode-dataset run has not finished (rerun it to resume)"
            )
        try:
            index = json.loads(path.read_text())
            self.meta: dict[str, str] = dict(index.get("meta", {}))
            self.layout: str = index.get("layout", "folder")
            self.items: list[tuple[str, dict[str, Any]]] = [
                (shard["shard"], m) for shard in index["shards"] for m in shard["members"]
            ]
            sizes = {shard["shard"]: shard["size"] for shard in index["shards"]}
        except (ValueError, KeyError, TypeError) as e:
            raise VCMError(f"{path} is not a valid shard index: {e}") from None
        if verify:
            for name, size in sizes.items():
                p = self.root / name
                if not p.is_file() or p.stat().st_size != size:
                    raise VCMError(
                        f"shard {p} is missing or has changed since the index was "
                        "written; rerun encode-dataset"
                    )
        self._spec = parse_layers(layers, choices=True)
        self.layers = layers
        if channel_order not in ("rgb", "bgr"):
            raise VCMError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.channel_order = channel_order
        self.seed = int(seed)
        self.epoch = 0
        self._codec = None

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"ShardDataset({str(self.root)!r}, {len(self)} items, layers={self.layers!r}, "
            f"seed={self.seed})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_codec"] = None
        return state

    @property
    def keys(self) -> list[str]:
        return [m["key"] for _, m in self.items]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def num_layers(self, i: int) -> int:
        return len(self.items[i][1]["layer_bytes"])

    def layers_for(self, i: int) -> int:
        """The layer count item ``i`` decodes at (this seed and epoch)."""
        n = self.num_layers(i)
        if self._spec is None:
            return n
        if self._spec == ANALYTICS:
            return self._analytics_point(i)
        k = draw_layers(self._spec, random.Random(f"{self.seed}:{self.epoch}:{i}"))
        return min(int(k), n)

    def _analytics_point(self, i: int) -> int:
        """Item ``i``'s analytics point, from its stream header (the preset names it)."""
        shard, m = self.items[i]
        head = self._read(shard, m["offset"], min(m["length"], HEADER_PROBE))
        return resolve_point(ANALYTICS, parse_header(head, NO_PIXEL_LIMIT))

    def _read(self, shard: str, offset: int, length: int) -> bytes:
        try:
            with open(self.root / shard, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as e:
            raise VCMError(f"cannot read {self.root / shard}: {e.strerror or e}") from None
        if len(data) != length:
            raise VCMError(
                f"{self.root / shard} is shorter than its index says; rerun encode-dataset"
            )
        return data

    def stream(self, i: int, layers: int | str | None = None) -> bytes:
        """The bytes of item ``i``'s stream up to ``layers`` layers (all if None): the header
        and those layers only, read as one byte range."""
        if layers == ANALYTICS:
            layers = self._analytics_point(i)
        shard, m = self.items[i]
        n = len(m["layer_bytes"])
        k = n if layers is None else min(int(layers), n)
        if k < 1:
            raise VCMError(f"layers must be >= 1, got {layers!r}")
        end = m["layer_offsets"][k - 1] + m["layer_bytes"][k - 1]
        return self._read(shard, m["offset"], min(end, m["length"]))

    def label(self, i: int, suffix: str) -> bytes | None:
        """The raw bytes of a label member (``"txt"``, ``"seg.png"`` ...), or None."""
        shard, m = self.items[i]
        lab = m["labels"].get(suffix)
        return None if lab is None else self._read(shard, lab["offset"], lab["length"])

    def load(self, i: int, layers: int | str | None = None) -> tuple[np.ndarray, int, int]:
        """(image, layers decoded, stream bytes read) for item ``i``; ``layers`` None = all,
        ``"analytics"`` = its preset's analytics point."""
        if layers == ANALYTICS:
            layers = self._analytics_point(i)
        if self._codec is None:
            from vcm_plugin import Codec

            self._codec = Codec()
        n = self.num_layers(i)
        k = n if layers is None else min(int(layers), n)
        blob = self.stream(i, k)
        img = self._codec.decode(blob, layers=k)
        if self.channel_order == "bgr":
            img = np.ascontiguousarray(img[..., ::-1])
        return img, k, len(blob)

    def decode(self, i: int, layers: int | None = None) -> np.ndarray:
        """Item ``i`` decoded at ``layers`` layers (all if None), in ``channel_order``."""
        return self.load(i, layers)[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        m = self.items[i][1]
        img, k, nbytes = self.load(i, self.layers_for(i))
        return {
            "key": m["key"],
            "image": img,
            "layers": k,
            "nbytes": nbytes,
            "labels": {s: self.label(i, s) for s in m["labels"]},
        }

    # -------------------------------------------------------------------------- exports
    def export_yolo(
        self,
        out: str | os.PathLike[str],
        names: Sequence[str] | None = None,
    ) -> Path:
        """Write a YOLO-layout folder (``images/KEY.png`` decoded at this data set's layer
        choice, ``labels/KEY.txt``, ``data.yaml``) and return the ``data.yaml`` path, for
        ``YOLO(...).train(data=...)``. PNG keeps the decoded pixels exact. Class names come
        from the source's ``data.yaml`` (kept in the index) unless ``names`` is given.
        ``out`` must be new or empty: nothing of yours is overwritten."""
        from PIL import Image

        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise VCMError(f"{out} exists and is not an empty directory")
        meta: dict[str, Any] = {}
        if names is None:
            text = self.meta.get("data.yaml") or self.meta.get("dataset.yaml")
            if text is None:
                raise VCMError("the shards hold no data.yaml (not a YOLO source): pass names=")
            try:
                import yaml
            except ImportError:
                raise VCMError("export_yolo needs PyYAML (pip install pyyaml)") from None
            meta = yaml.safe_load(text) or {}
            if "names" not in meta:
                raise VCMError("the source data.yaml has no 'names': pass names=")
        else:
            meta["names"] = list(names)
            meta["nc"] = len(meta["names"])
        meta.update(path=str(out.resolve()), train="images", val="images")
        meta.pop("test", None)
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(exist_ok=True)
        rgb = self.channel_order == "rgb"
        for i in range(len(self)):
            key = self.items[i][1]["key"]
            img = self.decode(i, self.layers_for(i))
            p = out / "images" / f"{key}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img if rgb else img[..., ::-1]).save(p)
            label = self.label(i, "txt")
            if label is not None:
                q = out / "labels" / f"{key}.txt"
                q.parent.mkdir(parents=True, exist_ok=True)
                q.write_bytes(label)
        data_yaml = out / "data.yaml"
        data_yaml.write_text(json.dumps(meta, indent=1) + "\n")  # JSON is valid YAML
        return data_yaml
