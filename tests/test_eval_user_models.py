"""The harness's user-model options run through the real frameworks: an mmseg model from a
config + checkpoint (mIoU), face_alignment's FAN, and an ultralytics YOLO weights file.

Pretrained weights for these cannot be downloaded here, so the models are randomly
initialised and saved to temporary files in each framework's own format: these tests check the
plumbing (loading by path, inference on decoded images, outputs), not accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vcm_eval.paths import REPO_ROOT
from vcm_eval.rate_accuracy import main

DATA = REPO_ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.needs_shared(
    "data/voc2012-seg-val", "data/300w-helen-test", "data/coco-val2017"
)
FAST = ["--limit", "1", "--codecs", "jpeg", "--qualities", "jpeg=5,30,60,90", "--quiet"]


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    assert len(s["curves"]["jpeg"]) == 4 and (out / "rate_accuracy.png").is_file()
    return s


@pytest.mark.needs_framework("mmseg")
def test_mmseg_config_and_checkpoint(tmp_path: Path) -> None:
    import torch
    from mmengine import Config

    from vcm_plugin.integrations.mmcv_shim import ensure_mmcv_ops

    ensure_mmcv_ops()
    from mmseg.apis import init_model

    cfg_path = REPO_ROOT / "configs" / "eval" / "fastscnn_voc12.py"
    torch.manual_seed(0)
    model = init_model(Config.fromfile(str(cfg_path)), None, device="cpu")
    ckpt = tmp_path / "fastscnn_random.pth"
    classes = json.loads((DATA / "voc2012-seg-val" / "classes.json").read_text())["classes"]
    torch.save(
        {
            "state_dict": model.state_dict(),
            "meta": {
                "dataset_meta": {
                    "classes": list(classes),
                    "palette": [[i, i, i] for i in range(21)],
                }
            },
        },
        ckpt,
    )
    out = tmp_path / "seg"
    assert (
        main(
            [
                "--task",
                "segmentation",
                "--data",
                str(DATA / "voc2012-seg-val"),
                "--mmseg-config",
                str(cfg_path),
                "--mmseg-checkpoint",
                str(ckpt),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    s = _summary(out)
    assert s["metric"] == "mIoU" and 0.0 <= s["original"]["metric"] <= 1.0


@pytest.mark.needs_framework("face_alignment")
def test_face_alignment_fan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from face_alignment.models import FAN

    ckpt_dir = tmp_path / "torch_home" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), ckpt_dir / "2DFAN4-11f355bf06.pth.tar")  # random weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "lm"
    assert (
        main(
            [
                "--task",
                "landmarks",
                "--data",
                str(DATA / "300w-helen-test"),
                "--landmark-model",
                "face_alignment",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    s = _summary(out)
    assert s["metric"] == "NME" and s["original"]["metric"] > 0
    assert "face_alignment" in s["model"]


@pytest.mark.needs_framework("ultralytics")
def test_ultralytics_yolo_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ycfg"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")  # random init, built from the yaml that ships in the wheel
    weights = tmp_path / "yolov8n_random.pt"
    model.save(str(weights))
    out = tmp_path / "det"
    assert (
        main(
            [
                "--task",
                "detection",
                "--data",
                str(DATA / "coco-val2017"),
                "--model",
                str(weights),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    s = _summary(out)
    assert s["metric"] == "mAP50-95" and "ultralytics" in s["model"]
    assert os.environ["YOLO_OFFLINE"] == "1"
