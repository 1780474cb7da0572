"""Detectors for the edge analytics worker: a callable ``RGB uint8 image -> list of boxes``.

* ``yolov5n`` (default): the legacy YOLOv5 checkpoint ``yolov5n.pt`` from the weights dir
  (``$VCM_WEIGHTS_DIR``, else ``../shared/models`` beside the repository). Legacy YOLOv5
  files pickle classes of the YOLOv5 repository, which ultralytics no longer ships, so
  :mod:`vcm_plugin.taskmodels.yolov5_legacy` maps them to a few small modules (same attribute
  names, so the pickled tensors are used as they are); the eval harness uses the same loader
  and the same head decode.
* any path that ``ultralytics.YOLO`` loads (``yolov8n.pt``, ``best.pt``, ...);
* ``package.module:factory`` — a factory returning your own callable (pluggable).

A box is ``{"xyxy": [x1, y1, x2, y2], "conf": float, "cls": int, "name": str}`` in pixels
of the image given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vcm_plugin.codec.weights import models_dir
from vcm_plugin.errors import VCMError
from vcm_plugin.taskmodels.yolov5_legacy import (
    NotLegacyCheckpoint,
    head_scores,
    load_yolov5_checkpoint,
    xywh_to_xyxy,
)

Box = dict[str, Any]


class Detector(Protocol):
    name: str

    def __call__(self, img: np.ndarray) -> list[Box]: ...


DEFAULT_WEIGHTS = "yolov5n.pt"


def default_weights() -> Path:
    """The default detector's checkpoint: ``yolov5n.pt`` in the task-model weights dir."""
    return models_dir() / DEFAULT_WEIGHTS


def letterbox(
    img: np.ndarray, size: int, stride: int = 32
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize the long side to ``size`` and pad to a multiple of ``stride`` (as YOLOv5's
    rectangular inference); returns (image, gain, (pad_x, pad_y))."""
    import cv2

    h, w = img.shape[:2]
    gain = min(size / h, size / w)
    nh, nw = round(h * gain), round(w * gain)
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = (-nh) % stride, (-nw) % stride
    top, left = ph // 2, pw // 2
    img = cv2.copyMakeBorder(
        img, top, ph - top, left, pw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    return img, gain, (left, top)


class YOLOv5Legacy:
    """The default detector: legacy YOLOv5 forward + torchvision NMS on the semantic layer."""

    def __init__(
        self,
        path: str | Path,
        conf: float = 0.25,
        iou: float = 0.45,
        imgsz: int = 640,
        max_det: int = 300,
    ) -> None:
        self.model, self.names = load_yolov5_checkpoint(path)
        self.name = Path(path).name
        self.conf, self.iou, self.imgsz, self.max_det = conf, iou, imgsz, max_det

    def __repr__(self) -> str:
        return f"YOLOv5Legacy({self.name!r}, conf={self.conf}, imgsz={self.imgsz})"

    @torch.inference_mode()
    def __call__(self, img: np.ndarray) -> list[Box]:
        from torchvision.ops import batched_nms

        x, gain, (px, py) = letterbox(img, self.imgsz)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float()[None] / 255
        xywh, class_conf = head_scores(self.model(t)[0])
        scores, cls = class_conf.max(1)
        keep = scores > self.conf
        boxes, scores, cls = xywh_to_xyxy(xywh[keep]), scores[keep], cls[keep]
        keep = batched_nms(boxes, scores, cls, self.iou)[: self.max_det]
        boxes = (boxes[keep] - torch.tensor([px, py, px, py])) / gain
        h, w = img.shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return [
            {
                "xyxy": [round(float(v), 1) for v in b],
                "conf": round(float(s), 4),
                "cls": int(c),
                "name": self.names.get(int(c), str(int(c))),
            }
            for b, s, c in zip(boxes, scores[keep], cls[keep], strict=True)
        ]


class UltralyticsDetector:
    """Any weights ``ultralytics.YOLO`` loads; boxes from its ``predict``."""

    def __init__(
        self, path: str | Path, conf: float = 0.25, iou: float = 0.45, imgsz: int = 640
    ) -> None:
        from ultralytics import YOLO

        self.model = YOLO(str(path))
        self.name = Path(path).name
        self.conf, self.iou, self.imgsz = conf, iou, imgsz

    def __repr__(self) -> str:
        return f"UltralyticsDetector({self.name!r}, conf={self.conf}, imgsz={self.imgsz})"

    def __call__(self, img: np.ndarray) -> list[Box]:
        r = self.model.predict(
            np.ascontiguousarray(img[..., ::-1]),
            conf=self.conf,
            iou=self.iou,
            imgsz=self.imgsz,
            device="cpu",
            verbose=False,
        )[0]
        names = r.names
        return [
            {
                "xyxy": [round(float(v), 1) for v in b],
                "conf": round(float(s), 4),
                "cls": int(c),
                "name": names.get(int(c), str(int(c))),
            }
            for b, s, c in zip(r.boxes.xyxy, r.boxes.conf, r.boxes.cls, strict=True)
        ]


def load_detector(
    spec: str | None = None, conf: float = 0.25, imgsz: int = 640
) -> Detector | Callable[[np.ndarray], list[Box]]:
    """``None``/``"yolov5n"`` -> the legacy default from the weights dir; a ``.pt`` path ->
    legacy YOLOv5 if it is one, else ultralytics; ``module:factory`` -> ``factory()``."""
    if spec and ":" in spec and not Path(spec).exists() and not spec[1:3] == ":\\":
        module, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise VCMError(f"cannot import detector factory {spec!r}: {exc}") from None
        return factory()
    path = default_weights() if spec in (None, "", "yolov5n") else Path(spec)
    if not path.is_file():
        raise VCMError(
            f"detector weights not found: {path} (set VCM_WEIGHTS_DIR or give a weights path)"
        )
    try:
        return YOLOv5Legacy(path, conf=conf, imgsz=imgsz)
    except NotLegacyCheckpoint:
        return UltralyticsDetector(path, conf=conf, imgsz=imgsz)


#: A box from this confidence is an object the analytics point keeps sharp (probed on
#: coco-val2017 with YOLOv5n: 0.25 lost objects that mAP, counting detections down to 0.001,
#: still scores; README "Learned for machines").
OBJECTS_CONF = 0.1


def object_finder(spec: str | None = None) -> Callable[[np.ndarray], list[list[float]]]:
    """A detector (``load_detector``'s ``spec``) as what ``Codec.encode(img, objects=...)``
    takes: the photo -> its boxes ``[x0, y0, x1, y1]`` at confidence >= ``OBJECTS_CONF``."""
    detector = load_detector(spec, conf=OBJECTS_CONF)

    def find(img: np.ndarray) -> list[list[float]]:
        return [list(b["xyxy"]) for b in detector(img) if b["conf"] >= OBJECTS_CONF]

    return find
