"""Facial landmarks: NME (%) normalised by the outer-eye-corner distance (300-W convention).

Default model: dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``
from the ``face-recognition-models`` package), given the face box derived from the
ground-truth points (their tight bounding box), so the number measures the landmark model on
the decoded pixels and not a face detector's misses. ``--landmark-model face_alignment`` runs
``face_alignment.FaceAlignment`` (2D, CPU) with the same box instead; its FAN weights must be
in ``$TORCH_HOME/hub/checkpoints`` (it cannot download them here).

NME of one face = mean over the 68 points of ‖pred − gt‖ / ‖gt[36] − gt[45]‖ × 100; the set's
number is the mean over faces (lower is better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.datasets import Item, read_landmarks
from vcm_eval.tasks.base import Task
from vcm_plugin import VCMError

__all__ = ["LandmarkTask", "nme", "box_from_points"]

OUTER_EYE = (36, 45)  # 0-based iBUG indices of the outer eye corners


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """NME in per cent, normalised by the outer-eye-corner (inter-ocular) distance."""
    pred = np.asarray(pred, float)
    gt = np.asarray(gt, float)
    if pred.shape != gt.shape:
        raise VCMError(f"landmark shapes differ: {pred.shape} vs {gt.shape}")
    d = float(np.linalg.norm(gt[OUTER_EYE[0]] - gt[OUTER_EYE[1]]))
    if d <= 0:
        raise VCMError("outer eye corners coincide: NME undefined")
    return float(np.linalg.norm(pred - gt, axis=1).mean() / d * 100.0)


def box_from_points(pts: np.ndarray) -> tuple[float, float, float, float]:
    """Tight xyxy box of the ground-truth points (the 300-W face-box convention)."""
    x0, y0 = np.min(pts, axis=0)
    x1, y1 = np.max(pts, axis=0)
    return float(x0), float(y0), float(x1), float(y1)


class LandmarkTask(Task):
    """68-point landmarks on images/ + pts/ (or landmarks.json)."""

    name = "landmarks"
    metric = "NME"
    higher_is_better = False

    def items(self, data: Path, limit: int | None) -> list[Item]:
        return read_landmarks(data, limit)

    def describe(self) -> str:
        if self.options.get("landmark_model") == "face_alignment":
            return "face_alignment FAN 2D (CPU) with the ground-truth face box"
        return "dlib 68-point shape predictor (face-recognition-models) with the GT face box"

    def setup(self) -> None:
        which = self.options.get("landmark_model") or "dlib"
        if which == "dlib":
            import dlib

            path = self.options.get("dlib_predictor")
            if not path:
                try:
                    import face_recognition_models
                except ImportError as e:
                    raise VCMError(
                        "landmarks: install face-recognition-models for the default "
                        "dlib 68-point predictor"
                    ) from e
                path = face_recognition_models.pose_predictor_model_location()
            if not Path(path).is_file():
                raise VCMError(f"dlib shape predictor not found: {path}")
            self._dlib = dlib
            self._predictor = dlib.shape_predictor(str(path))
            self._fa = None
        elif which == "face_alignment":
            import face_alignment

            try:
                self._fa = face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D,
                    device="cpu",
                    flip_input=False,
                    face_detector="folder",
                    compile=False,
                )
            except Exception as e:  # URLError offline when the FAN weights are absent
                raise VCMError(
                    "face_alignment could not build its model (its FAN weights "
                    "must be in $TORCH_HOME/hub/checkpoints; they cannot be "
                    f"downloaded here): {e}"
                ) from e
        else:
            raise VCMError(f"unknown landmark model {which!r}; use dlib or face_alignment")

    def predict(self, img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68×2 landmarks (0-based pixels) for the face in ``box``."""
        if self._fa is not None:
            out = self._fa.get_landmarks_from_image(img, detected_faces=[np.asarray(box)])
            if not out:
                raise VCMError("face_alignment returned no landmarks")
            return np.asarray(out[0][:, :2], float)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(np.ascontiguousarray(img), self._dlib.rectangle(x0, y0, x1, y1))
        return np.asarray([[p.x, p.y] for p in shape.parts()], float)

    def score(self, item: Item, img: np.ndarray) -> dict[str, Any]:
        gt = item.gt["landmarks"]
        return {"NME": nme(self.predict(img, box_from_points(gt)), gt)}

    def aggregate(self, items: list[Item], results: list[dict[str, Any]]) -> dict[str, float]:
        v = np.asarray([r["NME"] for r in results])
        # mean NME is the metric (300-W); median and failure rate (NME > 10 %) show how much
        # of it is a few failed faces
        return {
            "NME": float(v.mean()),
            "NME median": float(np.median(v)),
            "FR@10": float((v > 10).mean()),
        }
