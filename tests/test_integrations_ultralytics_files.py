"""``.vcm`` files where ultralytics reads images (issue 18), through ultralytics' own entry
points: ``predict`` on a file, a folder and a glob; ``train`` and ``val`` on a YOLO data set
whose images are ``.vcm`` (labels unchanged). A tiny untrained YOLOv8n, CPU, offline.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# must be set before ultralytics is first imported (it reads them at import time)
_YOLO_CFG = tempfile.mkdtemp(prefix="vcm-yolo-cfg-")
atexit.register(shutil.rmtree, _YOLO_CFG, ignore_errors=True)
os.environ.setdefault("YOLO_CONFIG_DIR", _YOLO_CFG)
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
COCO128 = SHARED / "data" / "coco128"
N_IMAGES = 4
yaml = pytest.importorskip("yaml", reason="PyYAML comes with ultralytics, not installed")
pytestmark = [pytest.mark.needs_framework("ultralytics"), pytest.mark.needs_shared("data/coco128")]


@pytest.fixture(autouse=True)
def _restore_imread():
    """Each test enables file reading itself; none leaves it on for other test modules."""
    yield
    from vcm_plugin.integrations.ultralytics import disable_vcm_files

    disable_vcm_files()


@pytest.fixture(scope="module")
def vcm_data(tmp_path_factory) -> Path:
    """4 coco128 images, shrunk to 160 px wide and stored as ``.vcm`` (fast preset), with
    their YOLO labels (normalised, so still valid) and a data.yaml."""
    from vcm_plugin import Codec

    root = tmp_path_factory.mktemp("coco4vcm")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    names = sorted(p.name for p in (COCO128 / "images").iterdir())[:N_IMAGES]
    assert len(names) == N_IMAGES, f"missing test data in {COCO128}"
    codec = Codec("fast")
    for name in names:
        im = Image.open(COCO128 / "images" / name).convert("RGB")
        im = im.resize((160, round(160 * im.height / im.width)))
        (root / "images" / f"{Path(name).stem}.vcm").write_bytes(codec.encode(np.asarray(im)))
        label = COCO128 / "labels" / f"{Path(name).stem}.txt"
        shutil.copy(label, root / "labels" / label.name)
    meta = yaml.safe_load((COCO128 / "data.yaml").read_text())
    meta.update(path=str(root), train="images", val="images")
    (root / "data.yaml").write_text(yaml.safe_dump(meta))
    return root


def _args(tmp_path: Path, name: str) -> dict:
    return dict(
        imgsz=64,
        batch=2,
        workers=0,
        device="cpu",
        plots=False,
        project=str(tmp_path / "runs"),
        name=name,
        exist_ok=True,
        verbose=False,
    )


def test_predict_without_enabling_finds_nothing(vcm_data):
    """The failure the issue reports, kept as the baseline the fix is measured against."""
    from ultralytics import YOLO

    from vcm_plugin.integrations.ultralytics import disable_vcm_files

    disable_vcm_files()  # earlier tests (VCMTrainer, predictors) enable it for the process

    with pytest.raises(FileNotFoundError, match="No images or videos found"):
        YOLO("yolov8n.yaml").predict(
            str(vcm_data / "images"), imgsz=64, device="cpu", verbose=False
        )


def test_predict_on_vcm_file_folder_and_glob(vcm_data):
    from ultralytics import YOLO

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import enable_vcm_files

    enable_vcm_files()
    files = sorted((vcm_data / "images").glob("*.vcm"))
    model = YOLO("yolov8n.yaml")
    kw = dict(imgsz=64, device="cpu", verbose=False)
    reset_stats()
    one = model.predict(str(files[0]), **kw)
    folder = model.predict(str(vcm_data / "images"), **kw)
    globbed = model.predict(str(vcm_data / "images" / "*.vcm"), **kw)
    assert len(one) == 1 and one[0].path == str(files[0])
    assert [r.path for r in folder] == [str(f) for f in files]
    assert [r.path for r in globbed] == [str(f) for f in files]
    # decoded from the stream: 160 px wide, at the preset's analytics point (the fast preset's
    # is its 5th and last: only its top point keeps 90 % of a detector's mAP)
    assert folder[0].orig_img.shape[1] == 160
    from vcm_plugin.codec.presets import get_preset

    point = get_preset("fast").analytics_point
    assert stats()["layers_used"] == {point: 1 + 2 * N_IMAGES}


def test_layer_count_on_request_and_bad_input(vcm_data, tmp_path):
    from ultralytics import YOLO
    from ultralytics.utils import patches

    from vcm_plugin import VCMError
    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import (
        VCMDetectionPredictor,
        disable_vcm_files,
        enable_vcm_files,
    )

    files = sorted((vcm_data / "images").glob("*.vcm"))
    enable_vcm_files(layers=2)
    reset_stats()
    assert patches.imread(files[0]).shape[2] == 3
    assert stats()["layers_used"] == {2: 1}
    assert patches.imread(next((COCO128 / "images").glob("*.jpg"))).ndim == 3  # cv2 as before
    with pytest.raises(VCMError, match="fixed layer count"):
        enable_vcm_files(layers=(1, 3))
    bad = tmp_path / "bad.vcm"
    bad.write_bytes(b"\x89VCM" + b"\0" * 40)
    with pytest.raises(VCMError, match="bad.vcm"):
        patches.imread(bad)

    # the predictor decodes .vcm sources at its own layer count, without re-encoding them
    reset_stats()
    YOLO("yolov8n.yaml").predict(
        str(files[0]), predictor=VCMDetectionPredictor, imgsz=64, device="cpu", verbose=False
    )
    from vcm_plugin.codec.presets import get_preset

    point = get_preset("fast").analytics_point  # the predictor's default; the files are fast
    assert stats()["layers_used"].get(point) == 1 and stats()["encodes"] == 0
    disable_vcm_files()
    assert "vcm" not in __import__("ultralytics.data.utils").data.utils.IMG_FORMATS


def test_train_and_val_on_vcm_dataset(vcm_data, tmp_path):
    """A tiny YOLOv8n trains one epoch on .vcm images, then ``val`` runs on them."""
    import torch
    from ultralytics import YOLO

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import enable_vcm_files

    enable_vcm_files()
    reset_stats()
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(vcm_data / "data.yaml"),
        epochs=1,
        amp=False,
        val=False,
        seed=0,
        **_args(tmp_path, "train"),
    )
    trainer = model.trainer
    assert len(trainer.train_loader.dataset.im_files) == N_IMAGES
    assert all(f.endswith(".vcm") for f in trainer.train_loader.dataset.im_files)
    assert bool(torch.isfinite(trainer.loss.detach()).all())
    assert stats()["decodes"] >= N_IMAGES and stats()["encodes"] == 0

    metrics = model.val(data=str(vcm_data / "data.yaml"), **_args(tmp_path, "val"))
    assert metrics.box.map >= 0.0
    assert stats()["decodes"] >= 2 * N_IMAGES


def test_vcm_trainer_decodes_vcm_images_at_sampled_layers(vcm_data, tmp_path):
    """``VCMTrainer`` enables file reading itself and decodes each ``.vcm`` at the sampled
    count (no re-encode)."""
    from ultralytics import YOLO

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import VCMTrainer

    reset_stats()
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(vcm_data / "data.yaml"),
        epochs=1,
        amp=False,
        val=False,
        seed=0,
        trainer=VCMTrainer,
        vcm_layers=(1, 2),
        **_args(tmp_path, "vcmtrainer"),
    )
    s = stats()
    assert s["encodes"] == 0
    assert set(s["layers_used"]) <= {1, 2, 5}  # 5: the final val pass reads at the default
    assert s["layers_used"].get(1, 0) + s["layers_used"].get(2, 0) >= N_IMAGES
