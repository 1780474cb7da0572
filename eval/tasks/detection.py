"""Object detection: mAP50-95 (and mAP50) by pycocotools' COCOeval.

Default model: the COCO-pretrained legacy YOLOv5n checkpoint ``yolov5n.pt`` from the weights
directory, loaded and its head decoded by :mod:`vcm_plugin.taskmodels.yolov5_legacy` (as the
edge worker does), with the YOLOv5/ultralytics validation protocol: letterbox to 640×640 (grey
114 padding), conf 0.001, NMS IoU 0.6, multi-label, at most 300 detections. ``--model PATH``
takes any ultralytics ``YOLO`` weights instead (run through ``YOLO.predict`` with the same
imgsz/conf/iou); its class names are mapped to the data set's names, classes the data set does
not have are dropped.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.datasets import Item, read_detection
from vcm_eval.tasks.base import Task
from vcm_plugin import VCMError
from vcm_plugin.taskmodels.detect import default_weights

__all__ = ["DetectionTask", "coco_map", "box_iou"]

IMGSZ = 640  #: the default letterbox size (``options["imgsz"]`` changes it)
CONF = 0.001
IOU = 0.6
MAX_DET = 300


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N,4) × (M,4)."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def coco_map(gts: list[dict[str, Any]], preds: list[dict[str, Any]]) -> dict[str, float]:
    """mAP50-95 and mAP50 of a set by pycocotools.

    gts[i]: ``{"boxes": (N,4) xyxy, "cls": (N,), "width", "height"}``;
    preds[i]: ``{"boxes": (M,4) xyxy, "cls": (M,), "scores": (M,)}``, same order.
    Classes are ``cls + 1`` for COCO (ids must be positive); no crowd regions.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    cats = set()
    for i, (g, p) in enumerate(zip(gts, preds, strict=True)):
        images.append({"id": i, "width": int(g["width"]), "height": int(g["height"])})
        for b, c in zip(np.asarray(g["boxes"]).reshape(-1, 4), g["cls"], strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            cats.add(int(c) + 1)
        for b, c, s in zip(
            np.asarray(p["boxes"]).reshape(-1, 4), p["cls"], p["scores"], strict=True
        ):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                }
            )
            cats.add(int(c) + 1)
    if not anns:
        raise VCMError("detection ground truth has no boxes: mAP is undefined")
    if not dets:
        return {"mAP50-95": 0.0, "mAP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c} for c in sorted(cats)],
        }
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP50-95": max(float(ev.stats[0]), 0.0), "mAP50": max(float(ev.stats[1]), 0.0)}


class DetectionTask(Task):
    """COCO-style detection on a YOLO-layout set."""

    name = "detection"
    metric = "mAP50-95"
    higher_is_better = True

    def items(self, data: Path, limit: int | None) -> list[Item]:
        items, names = read_detection(data, limit)
        self.options["names"] = names
        return items

    @property
    def _imgsz(self) -> int:
        return int(self.options.get("imgsz") or IMGSZ)

    def _model_path(self) -> tuple[Path, bool]:
        user = self.options.get("model")
        if user:
            return Path(user), False
        return default_weights(), True

    def describe(self) -> str:
        path, legacy = self._model_path()
        kind = "legacy YOLOv5 checkpoint" if legacy else "ultralytics YOLO"
        return f"{kind} {path.name}, letterbox {self._imgsz}, conf {CONF}, NMS IoU {IOU}"

    def setup(self) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        path, legacy = self._model_path()
        if not path.is_file():
            raise VCMError(f"detection model not found: {path} (set VCM_WEIGHTS_DIR or --model)")
        names = self.options.get("names") or []
        if legacy:
            from vcm_plugin.taskmodels.yolov5_legacy import load_yolov5_checkpoint

            self._legacy, model_names = load_yolov5_checkpoint(path)
            self._yolo = None
        else:
            from ultralytics import YOLO

            try:
                self._yolo = YOLO(str(path))
            except Exception as e:
                raise VCMError(f"cannot load ultralytics model {path}: {e}") from e
            self._legacy = None
            model_names = {int(k): str(v) for k, v in self._yolo.names.items()}
        if names:  # map model class ids to data set class ids by name
            index = {n: i for i, n in enumerate(names)}
            self._cls_map = {k: index.get(v, -1) for k, v in model_names.items()}
            if not any(v >= 0 for v in self._cls_map.values()):
                if len(model_names) != len(names):
                    raise VCMError(
                        "the detection model shares no class name with data.yaml "
                        f"and has {len(model_names)} classes, not {len(names)}"
                    )
                # unnamed classes (e.g. '0', '1', ...) but the same count: match by index
                self._cls_map = {k: k for k in model_names}
        else:
            self._cls_map = {k: k for k in model_names}

    def _predict_legacy(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch
        import torchvision  # noqa: F401  (ultralytics' NMS uses torchvision's kernel if imported)
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        from vcm_plugin.taskmodels.yolov5_legacy import head_scores

        lb = LetterBox((self._imgsz, self._imgsz), auto=False, scaleup=True)(image=img)
        x = torch.from_numpy(np.ascontiguousarray(lb.transpose(2, 0, 1))).float()[None] / 255
        with torch.inference_mode():
            # (1, N, 4 + nc): xywh, obj x class probs, as ultralytics' NMS takes it transposed
            pred = torch.cat(head_scores(self._legacy(x)), -1).transpose(1, 2)
            # no time limit: a busy machine must not truncate the detections (and the mAP)
            det = non_max_suppression(
                pred, CONF, IOU, multi_label=True, max_det=MAX_DET, max_time_img=1e6
            )[0]
        boxes = scale_boxes(x.shape[2:], det[:, :4].clone(), img.shape[:2]).numpy()
        return boxes, det[:, 4].numpy(), det[:, 5].numpy().astype(int)

    def _predict_yolo(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = self._yolo.predict(
            np.ascontiguousarray(img[..., ::-1]),
            imgsz=self._imgsz,
            conf=CONF,
            iou=IOU,
            max_det=MAX_DET,
            device="cpu",
            verbose=False,
        )[0]
        b = r.boxes
        return b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)

    def score(self, item: Item, img: np.ndarray) -> dict[str, Any]:
        if self._legacy is not None:
            boxes, scores, cls = self._predict_legacy(img)
        else:
            boxes, scores, cls = self._predict_yolo(img)
        cls = np.asarray([self._cls_map.get(int(c), -1) for c in cls], dtype=int)
        keep = cls >= 0
        boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
        gt = item.gt
        # per-image diagnostic: recall at IoU 0.5 of confident (>= 0.25) same-class detections
        conf = scores >= 0.25
        hit = 0
        if len(gt["boxes"]) and conf.any():
            iou = box_iou(gt["boxes"], boxes[conf])
            same = gt["cls"][:, None] == cls[conf][None, :]
            hit = int(((iou >= 0.5) & same).any(axis=1).sum())
        return {
            "n_gt": int(len(gt["boxes"])),
            "n_det@0.25": int(conf.sum()),
            "recall50@0.25": hit / len(gt["boxes"]) if len(gt["boxes"]) else float("nan"),
            "_pred": {
                "boxes": boxes.astype(np.float32),
                "scores": scores.astype(np.float32),
                "cls": cls,
            },
        }

    def aggregate(self, items: list[Item], results: list[dict[str, Any]]) -> dict[str, float]:
        return coco_map([it.gt for it in items], [r["_pred"] for r in results])
