"""mmsegmentation / mmengine integration, with the real frameworks (nothing of theirs mocked).

Builds the example pipeline from ``configs/mmseg/fastscnn_voc12_vcm.py`` (through
``Config.fromfile``, so its ``custom_imports`` registers ``VCMCompress``), runs it on VOC 2012
images from ../shared, and runs a randomly initialised FastSCNN on the transformed sample.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
VOC = SHARED / "data" / "voc2012-seg-val"
CONFIG = REPO / "configs" / "mmseg" / "fastscnn_voc12_vcm.py"
pytestmark = [
    pytest.mark.needs_framework("mmseg", "mmengine", "mmcv"),
    pytest.mark.needs_shared("data/voc2012-seg-val"),
]


@pytest.fixture(scope="module")
def cfg():
    assert VOC.is_dir(), f"missing test data {VOC}"
    from mmengine import Config
    from mmengine.registry import init_default_scope

    old = os.environ.get("VCM_VOC_ROOT")
    os.environ["VCM_VOC_ROOT"] = str(VOC)  # the config's data root ({{$VCM_VOC_ROOT:...}})
    try:
        config = Config.fromfile(str(CONFIG))
    finally:
        if old is None:
            os.environ.pop("VCM_VOC_ROOT")
        else:
            os.environ["VCM_VOC_ROOT"] = old
    init_default_scope("mmseg")
    return config


def _without_vcm(pipeline):
    return [copy.deepcopy(t) for t in pipeline if t["type"] != "VCMCompress"]


def test_mmseg_config_registers_and_shims(cfg):
    import mmcv
    from mmengine.registry import TRANSFORMS as ROOT
    from mmseg.registry import TRANSFORMS

    from vcm_plugin.integrations.mmseg import VCMCompress, ensure_mmcv_ops

    assert ROOT.get("VCMCompress") is VCMCompress
    assert TRANSFORMS.get("VCMCompress") is VCMCompress  # resolves inside the mmseg scope
    types = [t["type"] for t in cfg.train_pipeline] + [t["type"] for t in cfg.test_pipeline]
    assert types.count("VCMCompress") == 2
    # the shim is there exactly when mmcv's compiled ops are not
    import importlib.util

    compiled = importlib.util.find_spec("mmcv._ext") is not None
    assert ensure_mmcv_ops() is (not compiled)
    import mmseg.apis  # noqa: F401  (fails on mmcv-lite without the shim)

    if not compiled:
        from mmcv.ops import point_sample, sigmoid_focal_loss

        assert callable(point_sample) and point_sample.__module__ == "mmcv.ops.point_sample"
        with pytest.raises(RuntimeError, match="compiled ops"):
            sigmoid_focal_loss(None, None)
        assert getattr(mmcv.ops, "__vcm_plugin_shim__", False)


def test_mmseg_pipeline_changes_image_not_mask(cfg):
    from mmseg.registry import DATASETS

    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset = DATASETS.build(ds_cfg)
    plain_cfg = copy.deepcopy(ds_cfg)
    plain_cfg["pipeline"] = _without_vcm(ds_cfg["pipeline"])
    plain = DATASETS.build(plain_cfg)
    assert len(dataset) == 13
    for i in (0, 1):
        a, b = dataset[i], plain[i]
        img_a, img_b = a["inputs"], b["inputs"]
        assert img_a.shape == img_b.shape and img_a.dtype == img_b.dtype
        assert (img_a.float() - img_b.float()).abs().mean() > 0.5, "the image did not change"
        seg_a = a["data_samples"].gt_sem_seg.data
        seg_b = b["data_samples"].gt_sem_seg.data
        assert seg_a.equal(seg_b), "the mask changed"
        assert a["data_samples"].metainfo["img_path"] == b["data_samples"].metainfo["img_path"]


def test_mmseg_train_pipeline_keeps_gt_seg_map(cfg):
    from mmengine.dataset import Compose

    # the train pipeline up to and including VCMCompress (the random crop/flip that follow
    # would move the mask legitimately)
    steps = []
    for t in cfg.train_pipeline:
        steps.append(copy.deepcopy(t))
        if t["type"] == "VCMCompress":
            break
    pipeline = Compose(steps)
    img = VOC / "JPEGImages" / "2007_000129.jpg"
    seg = VOC / "SegmentationClass" / "2007_000129.png"
    before = Compose(steps[:-1])(
        dict(img_path=str(img), seg_map_path=str(seg), reduce_zero_label=False, seg_fields=[])
    )
    after = pipeline(
        dict(img_path=str(img), seg_map_path=str(seg), reduce_zero_label=False, seg_fields=[])
    )
    assert np.array_equal(before["gt_seg_map"], after["gt_seg_map"])
    assert set(np.unique(after["gt_seg_map"])) <= {0, 15, 255} | set(range(21))
    assert after["img"].shape == before["img"].shape and after["img"].dtype == np.uint8
    assert not np.array_equal(after["img"], before["img"])
    assert 1 <= after["vcm_layers"] <= 4 and after["vcm_bytes"] > 0


def test_mmseg_fastscnn_inference_on_transformed_sample(cfg):
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import DATASETS

    torch.manual_seed(0)
    model = init_model(cfg, checkpoint=None, device="cpu")  # random init, SyncBN -> BN
    # 1) the dataset sample (pipeline with VCMCompress) through the model's test_step
    sample = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))[2]
    with torch.no_grad():
        out = model.test_step(pseudo_collate([sample]))
    pred = out[0].pred_sem_seg.data
    h, w = sample["data_samples"].ori_shape
    assert tuple(pred.shape) == (1, h, w)
    assert int(pred.max()) < 21
    # 2) mmseg's own inference API, which builds cfg.test_pipeline (VCMCompress included)
    img = str(VOC / "JPEGImages" / "2007_000042.jpg")
    result = inference_model(model, img)
    assert result.seg_logits.data.shape[0] == 21
    assert result.pred_sem_seg.data.shape[-2:] == result.ori_shape


def test_mmseg_bad_options_raise_vcmerror(cfg):
    from mmseg.registry import TRANSFORMS

    from vcm_plugin import VCMError

    for bad in (
        dict(layers=0),
        dict(layers=(3, 1)),
        dict(p=1.5),
        dict(preset="no-such"),
        dict(channel_order="yuv"),
    ):
        with pytest.raises(VCMError):
            TRANSFORMS.build(dict(type="VCMCompress", **bad))
    t = TRANSFORMS.build(dict(type="VCMCompress", layers=[1, 2], p=0.5))
    assert repr(t) == (
        "VCMCompress(layers=(1, 2), preset='tae', p=0.5, cache=False, channel_order='bgr')"
    )


@pytest.mark.slow
def test_mmseg_example_config_trains_as_shipped(cfg, tmp_path):
    """``Runner.train()`` on the shipped config with only the work dir and the schedule
    shortened: the train split that exists in the shared set, a batch FastSCNN's BatchNorm
    accepts, VCMCompress in the loop; then a validation pass (on 2 images, for time)."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    config = copy.deepcopy(cfg)
    config.work_dir = str(tmp_path / "work")
    config.train_cfg.update(max_iters=2, val_interval=2)
    config.val_dataloader.dataset.indices = 2
    losses: list[float] = []
    val_metrics: dict = {}

    class _Record(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append(outputs["loss"].item())

        def after_val_epoch(self, runner, metrics=None):
            val_metrics.update(metrics or {})

    runner = Runner.from_cfg(config)
    runner.register_hook(_Record())
    runner.train()
    assert config.train_dataloader.batch_size >= 2
    assert len(losses) == 2 and all(np.isfinite(v) for v in losses)
    assert "mIoU" in val_metrics


def test_shard_transforms_and_shim_register_nothing_else():
    """Importing the shard integration (or the shim) installs the shim where needed but does
    not register ``VCMCompress``: registration belongs to the module that defines it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import vcm_plugin.integrations.mmcv_shim as shim\n"
        "assert 'mmcv.ops' not in sys.modules  # importing the shim installs nothing\n"
        "import vcm_plugin.integrations.mmseg_shards\n"
        "from mmengine.registry import TRANSFORMS\n"
        "assert TRANSFORMS.get('LoadVCMShardImage') is not None\n"
        "assert TRANSFORMS.get('VCMCompress') is None\n"
        "assert 'vcm_plugin.integrations.mmseg' not in sys.modules\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert r.returncode == 0, r.stderr
