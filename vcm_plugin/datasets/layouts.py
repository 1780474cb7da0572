"""Find the samples of a source data set: YOLO, VOC or a plain folder of images.

A *sample* is one image plus the label files that belong to it. Each gets a *key* (its path
relative to the image root, without the extension, ``/``-separated) that names its members in a
shard, WebDataset style: ``KEY.vcm`` for the stream, ``KEY.txt`` for a YOLO label file,
``KEY.seg.png`` / ``KEY.obj.png`` for VOC ``SegmentationClass`` / ``SegmentationObject`` masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vcm_plugin.errors import VCMError

__all__ = ["LAYOUTS", "IMAGE_EXTS", "Sample", "detect_layout", "scan"]

LAYOUTS = ("auto", "yolo", "voc", "folder")
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# small data-set level files kept in the index (class names, splits), so that a YOLO folder
# or an mmseg data set can be rebuilt from the shards alone
_META_FILES = ("data.yaml", "dataset.yaml", "classes.json", "classes.txt")
_META_MAX_BYTES = 1 << 20
_VOC_MASKS = (("SegmentationClass", "seg.png"), ("SegmentationObject", "obj.png"))


@dataclass(frozen=True)
class Sample:
    """One image and its labels: ``labels`` is a tuple of (member suffix, source file)."""

    key: str
    image: str
    labels: tuple[tuple[str, str], ...] = ()


def _images_under(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTS:
                out.append(Path(dirpath) / name)
    return sorted(out)


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def detect_layout(src: Path) -> str:
    """``yolo`` (``images/`` + ``labels/``), ``voc`` (``JPEGImages/`` + ``SegmentationClass/``)
    or ``folder``."""
    if (src / "images").is_dir() and (src / "labels").is_dir():
        return "yolo"
    if (src / "JPEGImages").is_dir() and (src / "SegmentationClass").is_dir():
        return "voc"
    return "folder"


def _check_unique(samples: list[Sample], src: Path) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.key in seen:
            raise VCMError(
                f"two images in {src} map to the same key {s.key!r}: {seen[s.key]} "
                f"and {s.image} (names must be unique without the extension)"
            )
        seen[s.key] = s.image


def _scan_yolo(src: Path) -> list[Sample]:
    images, labels = src / "images", src / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise VCMError(f"{src} is not in YOLO layout: it needs images/ and labels/ directories")
    samples = []
    for img in _images_under(images):
        rel = img.relative_to(images).with_suffix(".txt")
        label = labels / rel
        samples.append(
            Sample(_key(img, images), str(img), (("txt", str(label)),) if label.is_file() else ())
        )
    return samples


def _scan_voc(src: Path) -> list[Sample]:
    jpeg, seg = src / "JPEGImages", src / "SegmentationClass"
    if not jpeg.is_dir() or not seg.is_dir():
        raise VCMError(
            f"{src} is not in VOC layout: it needs JPEGImages/ and SegmentationClass/ directories"
        )
    by_stem: dict[str, Path] = {}
    for img in _images_under(jpeg):
        by_stem.setdefault(_key(img, jpeg), img)
    samples = []
    # a segmentation set is the images that have a class mask (VOC ships 17k JPEGs, 2.9k masks)
    for mask in sorted(seg.rglob("*.png")):
        key = _key(mask, seg)
        img = by_stem.get(key)
        if img is None:
            raise VCMError(f"mask {mask} has no image {key}.jpg in {jpeg}")
        labels = []
        for folder, suffix in _VOC_MASKS:
            m = src / folder / f"{key}.png"
            if m.is_file():
                labels.append((suffix, str(m)))
        samples.append(Sample(key, str(img), tuple(labels)))
    return samples


def _scan_folder(src: Path) -> list[Sample]:
    return [Sample(_key(img, src), str(img)) for img in _images_under(src)]


def scan(src: str | os.PathLike[str], layout: str = "auto") -> tuple[str, list[Sample]]:
    """Return the layout used and the samples, sorted by key."""
    src = Path(src)
    if not src.exists():
        raise VCMError(f"source {src} does not exist")
    if not src.is_dir():
        raise VCMError(f"source {src} is not a directory")
    if layout not in LAYOUTS:
        raise VCMError(f"unknown layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(src)
    samples = {"yolo": _scan_yolo, "voc": _scan_voc, "folder": _scan_folder}[layout](src)
    if not samples:
        raise VCMError(
            f"no images found in {src} ({layout} layout; image types: "
            f"{', '.join(sorted(IMAGE_EXTS))})"
        )
    samples.sort(key=lambda s: s.key)
    _check_unique(samples, src)
    return layout, samples


def meta_files(src: str | os.PathLike[str]) -> dict[str, str]:
    """Small text files describing the data set (``data.yaml``, ``classes.json`` ...)."""
    out = {}
    for name in _META_FILES:
        p = Path(src) / name
        if p.is_file() and p.stat().st_size <= _META_MAX_BYTES:
            try:
                out[name] = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
    return out
