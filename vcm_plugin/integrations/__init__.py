"""Framework integrations of the VCM codec: one module per framework, imported on demand.

* ``vcm_plugin.integrations.generic`` — ``vcm_roundtrip`` (numpy) and ``VCMTransform``
  (torchvision-style, PIL/tensor in → same type out). No extra dependency.
* ``vcm_plugin.integrations.albumentations`` — ``VCMCompression`` (like ``A.ImageCompression``).
* ``vcm_plugin.integrations.ultralytics`` — ``VCMCompression``, ``VCMTrainer``,
  ``VCMDetectionPredictor``, ``add_vcm_callback``, ``predict_streams``, ``enable_vcm_files``
  (``.vcm`` files wherever ultralytics reads images).
* ``vcm_plugin.integrations.torchvision`` — ``VCMImageFolder`` (``ImageFolder`` of ``.vcm``).
* ``vcm_plugin.integrations.mmseg`` — ``VCMCompress`` in the OpenMMLab ``TRANSFORMS`` registry
  (plus the ``mmcv.ops`` shim ``mmcv-lite`` needs).
* ``vcm_plugin.integrations.mmseg_shards`` — ``VCMShardSegDataset``, ``LoadVCMShardImage``,
  ``LoadVCMShardAnnotations``: mmseg training straight from ``vcm encode-dataset`` shards.
* ``vcm_plugin.integrations.face_alignment`` — ``VCMFaceAlignment``.
* ``vcm_plugin.integrations.pillow`` — the ``.vcm`` Pillow plugin (registers on import).

Nothing here is imported by ``import vcm_plugin``: each module needs its framework, and the
codec must work without any of them. ``stats()`` / ``reset_stats()`` expose process-wide
counters (images round-tripped, encodes, cache hits, codec seconds) for logs and tests.
"""

from vcm_plugin.integrations._core import StreamCache, reset_stats, stats

__all__ = ["StreamCache", "reset_stats", "stats"]
