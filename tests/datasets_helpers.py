"""Small data sets for the tests of ``vcm_plugin.datasets``, copied from ../shared into temp
directories (the encoder reads a whole source directory; ../shared stays untouched)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COCO128 = SHARED / "data" / "coco128"
VOC = SHARED / "data" / "voc2012-seg-val"


def make_yolo(root: Path, n: int = 6) -> Path:
    """The first ``n`` coco128 images (as they are, 640 wide) with labels and data.yaml."""
    assert COCO128.is_dir(), f"missing test data {COCO128}"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    names = sorted(p.name for p in (COCO128 / "images").iterdir())[:n]
    assert len(names) == n
    for name in names:
        shutil.copy(COCO128 / "images" / name, root / "images" / name)
        label = COCO128 / "labels" / (Path(name).stem + ".txt")
        if label.is_file():
            shutil.copy(label, root / "labels" / label.name)
    shutil.copy(COCO128 / "data.yaml", root / "data.yaml")
    return root


def make_voc(root: Path, n: int = 3) -> Path:
    assert VOC.is_dir(), f"missing test data {VOC}"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    stems = sorted(p.stem for p in (VOC / "SegmentationClass").glob("*.png"))[:n]
    for s in stems:
        shutil.copy(VOC / "JPEGImages" / f"{s}.jpg", root / "JPEGImages")
        shutil.copy(VOC / "SegmentationClass" / f"{s}.png", root / "SegmentationClass")
    shutil.copy(VOC / "classes.json", root / "classes.json")
    return root


def snapshot(dst: Path) -> dict[str, tuple[int, bytes]]:
    """name -> (mtime_ns, bytes) of every shard file."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(dst.glob("shard-*"))}
