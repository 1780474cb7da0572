"""Data sets as layered streams: encode once into shards, train at any layer count.

* ``encode_dataset(src, dst, EncodeOptions(...))`` (``vcm encode-dataset``; the options' fields
  may be given by keyword instead): a YOLO, VOC or plain image folder into resumable tar shards
  with an index (per member: byte offset, length, per-layer sizes), labels kept in the shards;
  ``engine="local"`` (process pool) or ``"ray"``.
* ``ShardDataset(root, layers=...)``: decoded images at a fixed or sampled layer count, straight
  from the shards; ``export_yolo`` writes a YOLO folder for ultralytics.

Imports the codec only; the framework adapters live in ``vcm_plugin.integrations`` (the mmseg
ones in ``vcm_plugin.integrations.mmseg_shards``). Ray is imported only by the ray engine.
"""

from vcm_plugin.datasets.layouts import LAYOUTS, Sample, scan
from vcm_plugin.datasets.reader import ShardDataset
from vcm_plugin.datasets.shards import (
    ENGINES,
    FORMAT,
    EncodeOptions,
    ShardTask,
    encode_dataset,
    encode_shard,
)

__all__ = [
    "ENGINES",
    "FORMAT",
    "LAYOUTS",
    "EncodeOptions",
    "Sample",
    "ShardDataset",
    "ShardTask",
    "encode_dataset",
    "encode_shard",
    "scan",
]
