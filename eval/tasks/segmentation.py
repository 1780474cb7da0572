"""Semantic segmentation: person-mask fidelity (default) or mIoU over the data set's classes
(mmseg).

Default models: every person segmenter mediapipe 0.10.21 ships with its weights (no download):
the selfie segmenter's general (256×256) and landscape (144×256) models, and the pose model
(BlazePose full, ``enable_segmentation``; it masks the one person whose pose it finds, and
nothing on images without one), each thresholded at probability 0.5.

Primary metric, ``mask fidelity``: per segmenter, the IoU of its mask on the decoded image with
its mask on the uncompressed image, per image, averaged over the images where either mask is
non-empty; then the mean over the selfie general and landscape models (each is reported beside
it). The pose model is reported but left out of the mean: it masks *one* person, and on
multi-person photos which one flips under imperceptible changes (on coco-panoptic at JPEG q95,
3.6 bpp, 3 of the 22 images it masks score 0, one of them a different person of the same size),
so it measures the model's choice rather than the codec. Why not the
ground truth: on the selfie segmenter, heavy compression *raises* person IoU against the ground
truth (blur removes false positives), so that curve has no rate slope; fidelity asks what a
user of the model asks — does compression change the model's answer? It is 1 for the original.

Beside it, ``person IoU`` against the ground truth (selfie general model): the IoU of the
*person* class (id named ``person`` in ``classes.json``: 15 in VOC, 1 in COCO panoptic)
accumulated over the set, VOC style: Σ intersection / Σ union, void pixels (``ignore_index``)
excluded; images without a person add only their false-positive pixels to the union.

``--mmseg-config CFG --mmseg-checkpoint CKPT`` runs any mmsegmentation model through
``mmseg.apis.init_model/inference_model`` instead and reports mIoU over the classes of
``classes.json`` (the model's output ids must be the data set's ids, e.g. a VOC model on a VOC
set); classes absent from both ground truth and predictions of the whole set are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vcm_eval.datasets import Item, read_segmentation
from vcm_eval.tasks.base import Task
from vcm_plugin import VCMError

__all__ = [
    "SEGMENTERS",
    "SegmentationTask",
    "confusion",
    "iou_from_confusion",
    "mask_fidelity",
    "mean_fidelity",
]

SEGMENTERS = ("selfie", "selfie-landscape", "pose")
IN_FIDELITY = ("selfie", "selfie-landscape")  # masks stable enough to average (not pose)
FIDELITY = "mask fidelity"


def mask_fidelity(pred: np.ndarray, ref: np.ndarray) -> float:
    """IoU of a mask on a decoded image with the same model's mask on the original image;
    NaN when both are empty (nothing to agree on: the image does not count)."""
    if pred.shape != ref.shape:
        raise VCMError(f"masks differ in size: {pred.shape} vs {ref.shape}")
    union = int((pred | ref).sum())
    return int((pred & ref).sum()) / union if union else float("nan")


def mean_fidelity(values: list[float]) -> float:
    """Mean of per-image fidelities over the images with a mask (1.0 when no image has one:
    empty everywhere on both sides is full agreement)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else 1.0


def confusion(pred: np.ndarray, gt: np.ndarray, num: int, ignore: int) -> np.ndarray:
    """num×num confusion matrix (rows gt, cols pred) over pixels whose gt != ignore."""
    if pred.shape != gt.shape:
        raise VCMError(f"prediction {pred.shape} and mask {gt.shape} differ in size")
    valid = gt != ignore
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    ok = (g < num) & (p < num) & (g >= 0) & (p >= 0)
    return np.bincount(g[ok] * num + p[ok], minlength=num * num).reshape(num, num)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN where the class has no gt and no predicted pixel."""
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as m:  # palette PNGs hold the class index per pixel
        if m.mode not in ("L", "P", "I", "I;16"):
            raise VCMError(f"{path}: mask must be a single-channel class-id PNG, got {m.mode}")
        return np.asarray(m)


class SegmentationTask(Task):
    """Person IoU (mediapipe) or mIoU (mmseg) on a VOC-layout set with classes.json."""

    name = "segmentation"
    higher_is_better = True

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.mmseg = bool(self.options.get("mmseg_config"))
        if self.mmseg and not self.options.get("mmseg_checkpoint"):
            raise VCMError("--mmseg-config needs --mmseg-checkpoint")
        self.metric = "mIoU" if self.mmseg else FIDELITY

    def items(self, data: Path, limit: int | None) -> list[Item]:
        items, classes = read_segmentation(data, limit)
        self.options["classes"] = classes
        if not self.mmseg and "person" not in classes["classes"]:
            raise VCMError(f"{data}/classes.json names no 'person' class")
        return items

    def describe(self) -> str:
        if self.mmseg:
            return f"mmseg {Path(self.options['mmseg_config']).name} (mIoU)"
        return (
            "mediapipe 0.10.21 person masks, prob > 0.5: selfie segmenter general + "
            "landscape models, pose (BlazePose full) segmentation; mask fidelity = mean of "
            "the selfie models (pose reported, not averaged: it picks one person); "
            "person IoU vs ground truth from the selfie general model"
        )

    def secondary_metrics(self) -> dict[str, bool]:
        if self.mmseg:
            return {}
        return {"person IoU": True, **{f"{FIDELITY} ({n})": True for n in SEGMENTERS}}

    @property
    def _classes(self) -> dict[str, Any]:
        return self.options["classes"]

    def setup(self) -> None:
        if self.mmseg:
            self._setup_mmseg()
            return
        try:
            import mediapipe as mp
        except Exception as e:
            raise VCMError(
                f"segmentation: mediapipe==0.10.21 is needed for the default person segmenter ({e})"
            ) from e
        sel = mp.solutions.selfie_segmentation.SelfieSegmentation
        pose = mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=1,
            enable_segmentation=True,
            smooth_segmentation=False,
        )
        self._models = {
            "selfie": sel(model_selection=0),
            "selfie-landscape": sel(model_selection=1),
            "pose": pose,
        }
        self._ref: tuple[str, dict[str, np.ndarray]] | None = None

    def _setup_mmseg(self) -> None:
        cfg_path = Path(self.options["mmseg_config"])
        ckpt = Path(self.options["mmseg_checkpoint"])
        for f in (cfg_path, ckpt):
            if not f.is_file():
                raise VCMError(f"mmseg file not found: {f}")
        from vcm_plugin.integrations.mmcv_shim import ensure_mmcv_ops

        try:
            ensure_mmcv_ops()  # mmcv-lite lacks mmcv.ops, which mmseg imports: the shim
            from mmengine import Config
            from mmseg.apis import inference_model, init_model
        except Exception as e:
            raise VCMError(f"mmsegmentation is not importable: {e}") from e
        cfg = Config.fromfile(str(cfg_path))
        if "test_pipeline" in cfg:  # the harness compresses; never compress twice
            cfg.test_pipeline = [t for t in cfg.test_pipeline if t.get("type") != "VCMCompress"]
        self._infer = inference_model
        self._model = init_model(cfg, str(ckpt), device="cpu")

    def predict(self, img: np.ndarray) -> np.ndarray:
        """Class-id map (mmseg) or the selfie general model's boolean person mask, HxW."""
        if self.mmseg:
            out = self._infer(self._model, np.ascontiguousarray(img[..., ::-1]))  # BGR
            return out.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
        return self.person_masks(img)["selfie"]

    def person_masks(self, img: np.ndarray) -> dict[str, np.ndarray]:
        """Every mediapipe segmenter's boolean person mask (HxW); empty where it finds none."""
        out = {}
        for name, model in self._models.items():
            res = model.process(np.ascontiguousarray(img))
            m = res.segmentation_mask
            out[name] = np.zeros(img.shape[:2], bool) if m is None else m > 0.5
        return out

    def _reference(self, item: Item) -> dict[str, np.ndarray]:
        """The masks on the uncompressed image (cached: an image's points come in a row)."""
        from vcm_eval.datasets import load_rgb

        if self._ref is None or self._ref[0] != item.id:
            self._ref = (item.id, self.person_masks(load_rgb(item.path)))
        return self._ref[1]

    def score(self, item: Item, img: np.ndarray) -> dict[str, Any]:
        gt = _read_mask(item.gt["mask"])
        ignore = int(self._classes["ignore_index"])
        if self.mmseg:
            pred = self.predict(img)
            num = max(int(v) for v in self._classes["classes"].values()) + 1
            cm = confusion(pred, gt, num, ignore)
            return {"pixel_acc": float(np.diag(cm).sum() / max(cm.sum(), 1)), "_cm": cm}
        masks, refs = self.person_masks(img), self._reference(item)
        person = int(self._classes["classes"]["person"])
        valid = gt != ignore
        g = (gt == person) & valid
        p = masks["selfie"] & valid
        inter, union = int((g & p).sum()), int((g | p).sum())
        return {
            **{f"fidelity_{n}": mask_fidelity(masks[n], refs[n]) for n in SEGMENTERS},
            "person_iou": inter / union if union else float("nan"),
            "gt_person_px": int(g.sum()),
            "fp_px": int((p & ~g).sum()),
            "inter_px": inter,
            "union_px": union,
        }

    def aggregate(self, items: list[Item], results: list[dict[str, Any]]) -> dict[str, float]:
        if self.mmseg:
            cm = sum(r["_cm"] for r in results)
            ids = sorted(int(v) for v in self._classes["classes"].values())
            iou = iou_from_confusion(cm)[ids]
            return {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0}
        inter = sum(r["inter_px"] for r in results)
        union = sum(r["union_px"] for r in results)
        with_p = [r for r in results if r["gt_person_px"] > 0]
        pi, pu = sum(r["inter_px"] for r in with_p), sum(r["union_px"] for r in with_p)
        fid = {
            f"{FIDELITY} ({n})": mean_fidelity([r[f"fidelity_{n}"] for r in results])
            for n in SEGMENTERS
        }
        return {
            FIDELITY: float(np.mean([fid[f"{FIDELITY} ({n})"] for n in IN_FIDELITY])),
            **fid,
            "person IoU": inter / union if union else 1.0,
            # diagnostics: the same IoU over images that show a person, and the share of
            # the union that is false positives on images without one
            "person IoU (person images)": pi / pu if pu else float("nan"),
            "no-person FP share": (union - pu) / union if union else 0.0,
        }
