"""Worker detectors: the legacy YOLOv5n default, ultralytics weights by path, plug-ins."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import Codec, VCMError
from vcm_plugin.taskmodels.detect import UltralyticsDetector, YOLOv5Legacy, load_detector

pytestmark = pytest.mark.needs_framework("ultralytics")  # every test reads its bus.jpg

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="vcm-edge-yolo-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def null_detector():
    """A plug-in factory as users write them: returns image -> boxes."""
    return lambda img: [
        {"xyxy": [0, 0, img.shape[1], img.shape[0]], "conf": 1.0, "cls": 0, "name": "frame"}
    ]


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    from ultralytics.utils import ASSETS

    return np.asarray(Image.open(ASSETS / "bus.jpg").convert("RGB"))


@pytest.mark.slow
@pytest.mark.needs_shared("models/yolov5n.pt")
def test_default_is_the_legacy_yolov5n_and_finds_people(bus):
    det = load_detector()
    assert isinstance(det, YOLOv5Legacy) and det.name == "yolov5n.pt"
    boxes = det(bus)
    people = [b for b in boxes if b["name"] == "person"]
    assert len(people) >= 3 and any(b["name"] == "bus" for b in boxes)
    h, w = bus.shape[:2]
    for b in boxes:
        x1, y1, x2, y2 = b["xyxy"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and 0.25 < b["conf"] <= 1
    layer0 = Codec().decode(Codec().encode(bus), layers=1)  # what the worker sees
    assert isinstance(det(layer0), list)


def test_ultralytics_weights_by_path(tmp_path, bus):
    from ultralytics import YOLO

    path = tmp_path / "tiny.pt"
    YOLO("yolov8n.yaml").save(path)  # untrained: plumbing only, no download needed
    det = load_detector(str(path), conf=0.5, imgsz=160)
    assert isinstance(det, UltralyticsDetector)
    assert isinstance(det(bus), list)


def test_plugin_factory_and_errors(tmp_path, bus):
    det = load_detector("test_edge_detect:null_detector")
    assert det(bus)[0]["xyxy"] == [0, 0, bus.shape[1], bus.shape[0]]
    with pytest.raises(VCMError, match="not found"):
        load_detector(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VCMError, match="cannot load"):
        load_detector(str(junk))
    with pytest.raises(VCMError, match="cannot import"):
        load_detector("no_such_module_xyz:factory")
