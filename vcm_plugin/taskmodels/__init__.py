"""Task models: the networks that analytics runs on decoded layers, shared by the edge worker
and the eval harness.

* :mod:`~vcm_plugin.taskmodels.yolov5_legacy` — loads a legacy YOLOv5 checkpoint
  (``yolov5n.pt``) without the YOLOv5 code, and decodes its detection head
  (:func:`~vcm_plugin.taskmodels.yolov5_legacy.head_scores`, the one decode both users call);
* :mod:`~vcm_plugin.taskmodels.detect` — detectors as callables ``RGB uint8 image -> boxes``
  (the legacy default, any ultralytics weights, a ``module:factory`` plug-in).

It imports only the codec package (its errors and the weights directory), and is imported by
``vcm_plugin.edge`` and ``vcm_eval``, never the other way: the worker and the eval load the
same detector with the same head decode.
"""
