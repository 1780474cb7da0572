"""Readers for the four data layouts the tasks read (the task table of ``eval/README.md``):
YOLO detection (``data.yaml``), VOC segmentation with ``classes.json``, landmarks
(``images/`` + ``pts/*.pts`` or ``landmarks.json``) and a folder of images for quality.

Why plain functions returning lists of :class:`Item`: items must be picklable (they travel to
worker processes) and cheap; pixels are read lazily by :func:`load_rgb`. Every reader sorts by
file name and applies ``limit`` to that order, so ``--limit N`` always means the same images.
Layout problems raise :class:`vcm_plugin.VCMError` naming what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vcm_plugin import VCMError
from vcm_plugin.codec.imagefile import read_rgb

__all__ = [
    "IMAGE_EXTS",
    "Item",
    "load_rgb",
    "read_detection",
    "read_landmarks",
    "read_pts",
    "read_quality",
    "read_segmentation",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclass
class Item:
    """One evaluation image: a stable id, its path and the task's ground truth."""

    id: str
    path: Path
    gt: dict[str, Any] = field(default_factory=dict)


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB under the package's one rule
    (``vcm_plugin.codec.imagefile``), except that EXIF orientation is not applied: the ground
    truth of these sets refers to the stored pixel grid."""
    return read_rgb(path, orient=False)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise VCMError(f"{what}: directory {path} does not exist")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def _limit(items: list[Item], limit: int | None, data: Path) -> list[Item]:
    if not items:
        raise VCMError(f"no images found in {data}")
    return items[:limit] if limit else items


def read_quality(data: Path, limit: int | None = None) -> list[Item]:
    """A folder of images (no ground truth)."""
    _require_dir(data, "quality data")
    return _limit([Item(p.stem, p) for p in _images_in(data)], limit, data)


def _parse_names(text: str) -> list[str]:
    """Class names from a YOLO data.yaml (list or {id: name} mapping)."""
    import yaml

    doc = yaml.safe_load(text) or {}
    names = doc.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise VCMError("data.yaml has no 'names' list")


def read_detection(data: Path, limit: int | None = None) -> tuple[list[Item], list[str]]:
    """YOLO layout: ``images/``, ``labels/<stem>.txt`` (cls cx cy w h, normalised) and
    ``data.yaml`` with ``names``. Returns items (gt: ``boxes`` xyxy pixels, ``cls``) and names."""
    _require_dir(data, "detection data")
    yaml_path = data / "data.yaml"
    if not yaml_path.is_file():
        raise VCMError(f"detection data {data}: data.yaml missing (YOLO layout expected)")
    names = _parse_names(yaml_path.read_text())
    img_dir = _require_dir(data / "images", "detection data (YOLO layout)")
    lbl_dir = _require_dir(data / "labels", "detection data (YOLO layout)")
    items = []
    for p in _images_in(img_dir):
        with Image.open(p) as im:
            w, h = im.size
        boxes, cls = [], []
        lbl = lbl_dir / f"{p.stem}.txt"
        if lbl.is_file():
            for line in lbl.read_text().splitlines():
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 5:
                    raise VCMError(f"bad label line in {lbl}: {line!r}")
                c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:5])
                boxes.append(
                    [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                )
                cls.append(c)
        gt = {
            "boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
            "cls": np.asarray(cls, dtype=int),
            "width": w,
            "height": h,
        }
        items.append(Item(p.stem, p, gt))
    return _limit(items, limit, data), names


def read_segmentation(data: Path, limit: int | None = None) -> tuple[list[Item], dict]:
    """VOC layout: ``JPEGImages/``, ``SegmentationClass/<stem>.png`` (class ids; palette PNGs
    are read as indices), optional ``ImageSets/Segmentation/val.txt`` listing the ids, and
    ``classes.json`` (``{"ignore_index": 255, "classes": {name: id}}``; VOC defaults when
    absent). Returns items (gt: ``mask`` path) and the classes dict."""
    _require_dir(data, "segmentation data")
    img_dir = _require_dir(data / "JPEGImages", "segmentation data (VOC layout)")
    mask_dir = _require_dir(data / "SegmentationClass", "segmentation data (VOC layout)")
    cj = data / "classes.json"
    if cj.is_file():
        classes = json.loads(cj.read_text())
        if "classes" not in classes:
            raise VCMError(f"{cj}: expected keys 'classes' and 'ignore_index'")
    else:
        names = [
            "background",
            "aeroplane",
            "bicycle",
            "bird",
            "boat",
            "bottle",
            "bus",
            "car",
            "cat",
            "chair",
            "cow",
            "diningtable",
            "dog",
            "horse",
            "motorbike",
            "person",
            "pottedplant",
            "sheep",
            "sofa",
            "train",
            "tvmonitor",
        ]
        classes = {"ignore_index": 255, "classes": {n: i for i, n in enumerate(names)}}
    classes.setdefault("ignore_index", 255)
    split = data / "ImageSets" / "Segmentation" / "val.txt"
    if split.is_file():
        ids = sorted({s.strip() for s in split.read_text().split() if s.strip()})
    else:
        ids = sorted(p.stem for p in mask_dir.glob("*.png"))
    items = []
    for i in ids:
        imgs = [img_dir / f"{i}{e}" for e in (".jpg", ".jpeg", ".png")]
        img = next((p for p in imgs if p.is_file()), None)
        mask = mask_dir / f"{i}.png"
        if img is None or not mask.is_file():
            raise VCMError(f"segmentation data {data}: image or mask missing for id {i!r}")
        items.append(Item(i, img, {"mask": mask}))
    return _limit(items, limit, data), classes


def read_pts(path: Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file (68 points, 1-based) as 0-based (68, 2) float array."""
    lines = path.read_text().split("{", 1)
    if len(lines) != 2:
        raise VCMError(f"{path}: not an iBUG .pts file (no '{{')")
    body = lines[1].split("}", 1)[0]
    pts = np.asarray([[float(v) for v in ln.split()] for ln in body.splitlines() if ln.strip()])
    if pts.shape != (68, 2):
        raise VCMError(f"{path}: expected 68 points, got shape {pts.shape}")
    return pts - 1.0


def read_landmarks(data: Path, limit: int | None = None) -> list[Item]:
    """``images/`` + ``pts/<stem>.pts`` (iBUG 68-point, 1-based) or ``landmarks.json``
    (``{"images": {file: {"landmarks68": [[x, y], ...]}}}``, same convention). Ground truth is
    returned 0-based, the convention of dlib / face-alignment outputs."""
    _require_dir(data, "landmark data")
    img_dir = data / "images" if (data / "images").is_dir() else data
    pts_dir = data / "pts" if (data / "pts").is_dir() else img_dir
    lj = data / "landmarks.json"
    table = json.loads(lj.read_text()).get("images", {}) if lj.is_file() else {}
    items = []
    for p in _images_in(img_dir):
        pts_file = pts_dir / f"{p.stem}.pts"
        if pts_file.is_file():
            pts = read_pts(pts_file)
        elif p.name in table:
            pts = np.asarray(table[p.name]["landmarks68"], dtype=float) - 1.0
        else:
            continue
        items.append(Item(p.stem, p, {"landmarks": pts}))
    if not items:
        raise VCMError(
            f"landmark data {data}: no image with 68-point ground truth "
            "(expected images/ + pts/*.pts or landmarks.json)"
        )
    return _limit(items, limit, data)
