"""Ultralytics integration with the real framework: a tiny untrained YOLOv8n trains one epoch
on CPU on 4 coco128 images (imgsz 64) through each hook, then predicts on the semantic layer.

Everything ultralytics writes goes to temp dirs; it runs offline (YOLO_OFFLINE, no AMP check,
no plots, an untrained ``yolov8n.yaml`` model, so nothing is downloaded).
"""

from __future__ import annotations

import atexit
import math
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
COCO128 = SHARED / "data" / "coco128"
N_IMAGES = 4
yaml = pytest.importorskip("yaml", reason="PyYAML comes with ultralytics, not installed")
pytestmark = [pytest.mark.needs_framework("ultralytics"), pytest.mark.needs_shared("data/coco128")]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    """4 coco128 images + labels copied to a temp YOLO dataset (ultralytics writes label
    caches next to the data, and ../shared must stay untouched)."""
    root = tmp_path_factory.mktemp("coco4")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    names = sorted(p.name for p in (COCO128 / "images").iterdir())[:N_IMAGES]
    assert len(names) == N_IMAGES, f"missing test data in {COCO128}"
    for name in names:
        shutil.copy(COCO128 / "images" / name, root / "images" / name)
        label = COCO128 / "labels" / (Path(name).stem + ".txt")
        shutil.copy(label, root / "labels" / label.name)
    meta = yaml.safe_load((COCO128 / "data.yaml").read_text())
    meta.update(path=str(root), train="images", val="images")
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(meta))
    return out


def _train_args(data_yaml: Path, tmp_path: Path, name: str) -> dict:
    return dict(
        data=str(data_yaml),
        epochs=1,
        imgsz=64,
        batch=2,
        workers=0,
        device="cpu",
        plots=False,
        amp=False,
        val=False,
        project=str(tmp_path / "runs"),
        name=name,
        exist_ok=True,
        verbose=False,
        seed=0,
    )


def _finite_loss(trainer) -> bool:
    """The epoch's mean loss items (box/cls/dfl) and the last batch loss are finite."""
    import torch

    items = trainer.tloss
    values = list(items.values()) if isinstance(items, dict) else [items]
    return bool(values) and all(
        bool(torch.isfinite(torch.as_tensor(v)).all()) for v in [*values, trainer.loss.detach()]
    )


def test_ultralytics_albumentations_hook_trains(data_yaml, tmp_path):
    from ultralytics import YOLO
    from ultralytics.data.augment import Albumentations

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import VCMCompression

    reset_stats()
    model = YOLO("yolov8n.yaml")
    model.train(
        **_train_args(data_yaml, tmp_path, "aug"),
        augmentations=[VCMCompression(layers=(1, 4), p=1.0, channel_order="bgr")],
    )
    trainer = model.trainer
    assert _finite_loss(trainer)
    # the transform really sits in the training pipeline and ran once per training sample
    albu = [
        t
        for t in trainer.train_loader.dataset.transforms.transforms
        if isinstance(t, Albumentations)
    ]
    assert albu and any(type(t).__name__ == "VCMCompression" for t in albu[0].transform)
    s = stats()
    assert s["images"] == N_IMAGES and s["encodes"] == N_IMAGES
    assert set(s["layers_used"]) <= {1, 2, 3, 4}


def test_ultralytics_vcm_trainer_load_stage_cache_and_val(data_yaml, tmp_path):
    from ultralytics import YOLO

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations._core import resolve_cache
    from vcm_plugin.integrations.ultralytics import VCMTrainer

    reset_stats()
    resolve_cache(True).clear()  # the in-memory cache is process-wide: start cold
    model = YOLO("yolov8n.yaml")
    # options from the small config file, one of them overridden in the train call
    args = _train_args(data_yaml, tmp_path, "trainer")
    args.update(epochs=2, close_mosaic=0)
    model.train(
        **args,
        trainer=VCMTrainer,
        vcm=str(REPO / "configs/ultralytics/vcm.yaml"),
        vcm_val=True,
        vcm_cache_points=True,
    )
    trainer = model.trainer
    assert _finite_loss(trainer)
    assert trainer.vcm.layers == (1, 4) and trainer.vcm.cache is True and trainer.vcm.val
    assert trainer.vcm.cache_points
    saved = yaml.safe_load((Path(trainer.save_dir) / "vcm.yaml").read_text())
    assert saved["layers"] == [1, 4] and saved["val"] is True and saved["cache_points"] is True
    s = stats()
    # 2 epochs of mosaics (4 loads per sample) + validation: many round trips, but each of the
    # 4 distinct pictures is encoded once and decoded from the cache afterwards
    assert s["images"] >= 2 * N_IMAGES * 4
    assert s["encodes"] == N_IMAGES
    assert s["cache_hits"] == s["images"] - s["encodes"]
    # cache_points: the generator ran three times per picture (its latent points 1-3, at the
    # encode), whatever was drawn after; only the texture point 4 decodes on every draw
    assert s["decodes"] == 3 * N_IMAGES + s["layers_used"].get(4, 0)
    latent_misses = s["images"] - s["layers_used"].get(4, 0) - s["point_hits"]
    assert 0 <= latent_misses <= N_IMAGES  # at most each picture's first draw


def test_ultralytics_vcm_trainer_final_stage_survives_close_mosaic(data_yaml, tmp_path):
    from ultralytics import YOLO

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import VCMTrainer

    reset_stats()
    model = YOLO("yolov8n.yaml")
    trainer_cls = VCMTrainer.with_options(layers=1, stage="final")
    # close_mosaic=1 with 1 epoch: ultralytics rebuilds the pipeline before the first batch
    model.train(**_train_args(data_yaml, tmp_path, "final"), close_mosaic=1, trainer=trainer_cls)
    trainer = model.trainer
    assert _finite_loss(trainer)
    dataset = trainer.train_loader.dataset
    steps = [type(t).__name__ for t in dataset.transforms.transforms]
    mosaic = [
        t for t in dataset.transforms.transforms[0].transforms if type(t).__name__ == "Mosaic"
    ]
    assert all(t.p == 0.0 for t in mosaic)  # the pipeline was rebuilt by close_mosaic() ...
    assert steps[-2:] == ["_VCMLabels", "Format"], steps  # ... and the step is back in
    s = stats()
    assert s["images"] == N_IMAGES and s["layers_used"] == {1: N_IMAGES}


@pytest.mark.slow
def test_ultralytics_predict_on_semantic_layer(tmp_path):
    import cv2
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    from vcm_plugin import Codec
    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations.ultralytics import (
        VCMDetectionPredictor,
        add_vcm_callback,
        predict_streams,
    )

    bus = ASSETS / "bus.jpg"
    original = cv2.imread(str(bus))
    kw = dict(imgsz=64, device="cpu", verbose=False, conf=0.01)
    model = YOLO("yolov8n.yaml")  # untrained: this checks the plumbing, not the detections

    reset_stats()
    res = model.predict(bus, predictor=VCMDetectionPredictor, **kw)
    assert len(res) == 1 and res[0].boxes is not None
    seen = res[0].orig_img  # what the detector saw: the analytics point's decode, same size
    assert seen.shape == original.shape and not np.array_equal(seen, original)
    stream = Codec().encode(original[..., ::-1].copy())
    analytics = Codec().decode(stream, layers="analytics")
    np.testing.assert_array_equal(seen, analytics[..., ::-1])
    assert stats()["layers_used"] == {Codec().inspect(stream).analytics_point: 1}
    semantic = Codec().decode(stream, layers=1)

    # streams straight from disk / bytes: only layer 0 is read and decoded
    blob = Codec().encode(original[..., ::-1].copy())
    path = tmp_path / "bus.vcm"
    path.write_bytes(blob)
    reset_stats()
    res2 = predict_streams(model, [path, blob], layers=1, **kw)
    assert [r.orig_img.shape for r in res2] == [original.shape] * 2
    assert res2[0].path == str(path)
    np.testing.assert_array_equal(res2[0].orig_img, semantic[..., ::-1])
    s = stats()
    assert s["layers_used"] == {1: 2} and s["encodes"] == 0  # no re-encode, no double decode

    # the callback flavour works with the stock predictor of any task
    plain = YOLO("yolov8n.yaml")
    add_vcm_callback(plain, layers=1)
    reset_stats()
    res3 = plain.predict(bus, **kw)
    np.testing.assert_array_equal(res3[0].orig_img, semantic[..., ::-1])
    assert stats()["images"] == 1


def test_ultralytics_bad_options_raise_vcmerror(data_yaml, tmp_path):
    from ultralytics import YOLO

    from vcm_plugin import VCMError
    from vcm_plugin.integrations.ultralytics import (
        VCMCompression,
        VCMDetectionPredictor,
        VCMOptions,
        VCMTrainer,
    )

    with pytest.raises(VCMError, match="layers"):
        VCMCompression(layers=0)
    with pytest.raises(VCMError, match="preset"):
        VCMCompression(preset="no-such-preset")
    with pytest.raises(VCMError, match="stage"):
        VCMOptions(stage="later")
    with pytest.raises(VCMError, match="set cache too"):
        VCMOptions(cache_points=True)
    with pytest.raises(VCMError, match="cache_points must be True or False"):
        VCMOptions(cache=True, cache_points="yes")
    with pytest.raises(VCMError, match="vcm_layer"):  # a typo fails before any training
        YOLO("yolov8n.yaml").train(
            **_train_args(data_yaml, tmp_path, "bad"), trainer=VCMTrainer, vcm_layer=1
        )
    with pytest.raises(VCMError, match="range"):
        VCMDetectionPredictor.with_options(layers=(1, 2))
    t = VCMCompression(layers=(1, 3), p=0.5)
    assert repr(t) == (
        "VCMCompression(p=0.5, layers=(1, 3), preset='tae', channel_order='rgb', cache=False)"
    )
    assert math.isclose(t.p, 0.5)
