"""``ShardDataset``: decoded images at k layers equal ``Codec.decode(stream, layers=k)``,
sampled layer counts are in range and reproducible, labels come back; and the framework
adapters: a YOLO folder exported from shards trains a real (untrained, tiny) YOLOv8n, and
``VCMShardSegDataset`` + ``LoadVCMShardImage`` / ``LoadVCMShardAnnotations`` feed a real mmseg
pipeline."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import make_voc, make_yolo

from vcm_plugin import Codec, VCMError
from vcm_plugin.datasets import ShardDataset, encode_dataset

pytestmark = pytest.mark.needs_shared("data/coco128", "data/voc2012-seg-val")


@pytest.fixture(scope="module")
def yolo_shards(tmp_path_factory) -> tuple[Path, Path]:
    src = make_yolo(tmp_path_factory.mktemp("src"), n=4)
    dst = tmp_path_factory.mktemp("shards") / "out"
    encode_dataset(src, dst, shard_size=2, workers=1, progress=False)
    return src, dst


@pytest.fixture(scope="module")
def voc_shards(tmp_path_factory) -> tuple[Path, Path]:
    src = make_voc(tmp_path_factory.mktemp("voc"), n=3)
    dst = tmp_path_factory.mktemp("vocshards") / "out"
    encode_dataset(src, dst, shard_size=2, workers=1, progress=False)
    return src, dst


def _full_stream(dst: Path, key: str) -> bytes:
    for tar_path in sorted(dst.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            if f"{key}.vcm" in tar.getnames():
                return tar.extractfile(f"{key}.vcm").read()
    raise AssertionError(key)


@pytest.mark.slow
def test_decode_at_k_equals_codec_decode(yolo_shards):
    src, dst = yolo_shards
    codec = Codec()
    ds = ShardDataset(dst)
    assert len(ds) == 4 and ds.keys == sorted(p.stem for p in (src / "images").iterdir())
    blob = _full_stream(dst, ds.keys[1])
    n = codec.inspect(blob).num_layers
    for k in range(1, n + 1):
        want = codec.decode(blob, layers=k)
        assert np.array_equal(ds.decode(1, k), want), k
        assert len(ds.stream(1, k)) < len(blob) or k == n  # only the layers it needs
        item = ShardDataset(dst, layers=k)[1]
        assert item["layers"] == k and np.array_equal(item["image"], want)
        assert item["nbytes"] == len(ds.stream(1, k))
    assert np.array_equal(ds[1]["image"], codec.decode(blob))  # layers=None: all of them
    bgr = ShardDataset(dst, layers=1, channel_order="bgr")[1]["image"]
    assert np.array_equal(bgr, codec.decode(blob, layers=1)[..., ::-1])
    assert ShardDataset(dst, layers=99)[1]["layers"] == n  # clamped to the stream


def test_labels_come_back(yolo_shards):
    src, dst = yolo_shards
    ds = ShardDataset(dst, layers=1)
    for i, key in enumerate(ds.keys):
        label = src / "labels" / f"{key}.txt"
        assert ds[i]["labels"].get("txt") == (label.read_bytes() if label.is_file() else None)


def test_sampled_layers_in_range_and_reproducible(yolo_shards):
    _, dst = yolo_shards
    a = ShardDataset(dst, layers=(1, 4), seed=7)
    draws = [a.layers_for(i) for i in range(len(a))]
    assert all(1 <= k <= 4 for k in draws)
    assert draws == [ShardDataset(dst, layers=(1, 4), seed=7).layers_for(i) for i in range(len(a))]
    assert [a[i]["layers"] for i in range(len(a))] == draws
    epochs = set()
    for e in range(6):
        a.set_epoch(e)
        epochs.add(tuple(a.layers_for(i) for i in range(len(a))))
    assert len(epochs) > 1  # a new draw per epoch
    seeds = {
        tuple(ShardDataset(dst, layers=[1, 5], seed=s).layers_for(i) for i in range(4))
        for s in range(6)
    }
    assert len(seeds) > 1 and all(1 <= k <= 5 for t in seeds for k in t)
    c = ShardDataset(dst, layers={1, 3})
    assert {c.layers_for(i) for i in range(len(c))} <= {1, 3}
    b = pickle.loads(pickle.dumps(a))  # DataLoader workers get a copy
    assert [b.layers_for(i) for i in range(len(b))] == [a.layers_for(i) for i in range(len(a))]
    assert np.array_equal(b[0]["image"], a[0]["image"])


def test_torch_dataloader_reads_shards(yolo_shards):
    import torch

    _, dst = yolo_shards
    ds = ShardDataset(dst, layers=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    keys = [item["key"] for item in loader]
    assert keys == ds.keys


def test_reader_errors(yolo_shards, tmp_path):
    _, dst = yolo_shards
    with pytest.raises(VCMError, match="no index.json"):
        ShardDataset(tmp_path)
    for bad in (0, (3, 1), "two", [0, 2], 1.5):
        with pytest.raises(VCMError, match="layers"):
            ShardDataset(dst, layers=bad)
    with pytest.raises(VCMError, match="channel_order"):
        ShardDataset(dst, channel_order="hsv")
    with pytest.raises(IndexError):
        ShardDataset(dst)[4]
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    with pytest.raises(VCMError, match="not an empty directory"):
        ShardDataset(dst).export_yolo(tmp_path / "x")


@pytest.mark.slow
@pytest.mark.needs_framework("ultralytics")
def test_export_yolo_trains_ultralytics(yolo_shards, tmp_path):
    from ultralytics import YOLO

    src, dst = yolo_shards
    ds = ShardDataset(dst, layers=1)
    data_yaml = ds.export_yolo(tmp_path / "yolo-l1")
    out = data_yaml.parent
    assert sorted(p.stem for p in (out / "images").iterdir()) == ds.keys
    for i, key in enumerate(ds.keys):
        from PIL import Image

        with Image.open(out / "images" / f"{key}.png") as im:
            assert np.array_equal(np.asarray(im), ds.decode(i, 1))  # lossless PNG
        label = src / "labels" / f"{key}.txt"
        if label.is_file():
            assert (out / "labels" / f"{key}.txt").read_bytes() == label.read_bytes()
    model = YOLO("yolov8n.yaml")
    model.train(
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
        name="l1",
        exist_ok=True,
        verbose=False,
        seed=0,
    )
    trainer = model.trainer
    assert trainer is not None and trainer.epoch == 0
    assert len(trainer.train_loader.dataset) == 4
    assert str(out / "images") in str(trainer.train_loader.dataset.im_files[0])


@pytest.mark.needs_framework("mmseg")
def test_mmseg_shard_dataset_pipeline(voc_shards):
    import importlib

    # first: it installs the mmcv.ops shim mmseg needs on mmcv-lite, and registers the types
    importlib.import_module("vcm_plugin.integrations.mmseg_shards")
    from mmengine.registry import init_default_scope
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import DATASETS, TRANSFORMS

    init_default_scope("mmseg")
    src, dst = voc_shards
    assert TRANSFORMS.get("LoadVCMShardImage") is not None
    dataset = DATASETS.build(
        dict(
            type="VCMShardSegDataset",
            data_root=str(dst),
            pipeline=[
                dict(type="LoadVCMShardImage", layers=(1, 3)),
                dict(type="LoadVCMShardAnnotations"),
                dict(type="PackSegInputs"),
            ],
        )
    )
    assert len(dataset) == 3
    assert dataset.metainfo["classes"][15] == "person" and len(dataset.metainfo["classes"]) == 21
    reader = ShardDataset(dst)
    codec = Codec()
    for i in range(3):
        sample = dataset[i]
        key = reader.keys[i]
        k = sample["data_samples"].metainfo.get("vcm_layers")
        img = sample["inputs"].permute(1, 2, 0).numpy()  # BGR, as LoadImageFromFile gives
        blob = _full_stream(dst, key)
        if k is None:  # PackSegInputs keeps only its meta keys: find the k that matches
            k = next(
                j
                for j in range(1, 4)
                if np.array_equal(img[..., ::-1], codec.decode(blob, layers=j))
            )
        assert 1 <= k <= 3
        assert np.array_equal(img[..., ::-1], codec.decode(blob, layers=k))
        want = LoadAnnotations()(
            dict(
                seg_map_path=str(src / "SegmentationClass" / f"{key}.png"),
                reduce_zero_label=False,
                seg_fields=[],
            )
        )["gt_seg_map"]
        assert np.array_equal(sample["data_samples"].gt_sem_seg.data.numpy()[0], want)
