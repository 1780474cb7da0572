"""Generic integrations (numpy function, torchvision-style transform, Albumentations transform,
stream cache) with real images and the real codec."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.codec.measure import psnr

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
pytestmark = pytest.mark.needs_shared("data/coco128")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from PIL import Image

    path = sorted((SHARED / "data" / "coco128" / "images").iterdir())[0]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((160, 120)))


def test_numpy_roundtrip_layers_dtypes_and_channel_order(photo):
    from vcm_plugin import Codec, VCMError
    from vcm_plugin.integrations.generic import vcm_roundtrip

    codec = Codec()
    blob = codec.encode(photo)
    one = vcm_roundtrip(photo, layers=1)
    full = vcm_roundtrip(photo, layers=None)
    np.testing.assert_array_equal(one, codec.decode(blob, layers=1))
    np.testing.assert_array_equal(full, codec.decode(blob))
    assert one.shape == photo.shape and one.dtype == np.uint8
    assert psnr(full, photo) > psnr(one, photo)  # texture layers add detail
    # OpenCV BGR arrays: the codec still sees RGB, the caller gets BGR back
    bgr = vcm_roundtrip(photo[..., ::-1], layers=1, channel_order="bgr")
    np.testing.assert_array_equal(bgr[..., ::-1], one)
    # grayscale and float images keep their layout and dtype
    gray = vcm_roundtrip(photo[..., 1], layers=2)
    assert gray.shape == photo.shape[:2] and gray.dtype == np.uint8
    flt = vcm_roundtrip(photo.astype(np.float32) / 255, layers=None)
    assert flt.dtype == np.float32 and 0.0 <= flt.min() and flt.max() <= 1.0
    # a range draws a layer count per call; more layers than the stream holds are clamped
    sampled = vcm_roundtrip(photo, layers=(1, 99), rng=random.Random(0))
    assert sampled.shape == photo.shape
    for bad in (
        dict(layers=0),
        dict(layers=(2, 1)),
        dict(layers="all"),
        dict(preset="nope"),
        dict(channel_order="rbg"),
    ):
        with pytest.raises(VCMError):
            vcm_roundtrip(photo, **bad)
    with pytest.raises(VCMError):
        vcm_roundtrip(np.zeros((8, 8, 4), np.uint8))


@pytest.mark.needs_framework("torchvision")
def test_torchvision_style_transform_keeps_input_type(photo):
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from vcm_plugin import VCMError
    from vcm_plugin.integrations.generic import VCMTransform, vcm_roundtrip

    t = VCMTransform(layers=1)
    assert repr(t) == "VCMTransform(layers=1, preset='tae', p=1.0, cache=False)"
    expected = vcm_roundtrip(photo, layers=1)

    pil = t(Image.fromarray(photo))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (160, 120)
    np.testing.assert_array_equal(np.asarray(pil), expected)

    rgba = Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)]))
    out = t(rgba)
    assert out.mode == "RGBA" and (np.asarray(out)[..., 3] == 7).all()
    assert t(Image.fromarray(photo).convert("L")).mode == "L"

    u8 = torch.from_numpy(photo.copy()).permute(2, 0, 1).contiguous()
    out_u8 = t(u8)
    assert out_u8.dtype == torch.uint8 and out_u8.shape == u8.shape
    np.testing.assert_array_equal(out_u8.permute(1, 2, 0).numpy(), expected)
    batch = t(torch.stack([u8.float() / 255, u8.float() / 255]))
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 120, 160)

    # inside torchvision's own Compose, before ToTensor, like any PIL transform
    pipeline = T.Compose([VCMTransform(layers=(1, 3), seed=0), T.ToTensor()])
    x = pipeline(Image.fromarray(photo))
    assert x.shape == (3, 120, 160) and x.dtype == torch.float32

    same = Image.fromarray(photo)
    assert VCMTransform(p=0.0)(same) is same
    with pytest.raises(VCMError):
        t("not an image")
    with pytest.raises(VCMError):
        VCMTransform(p=2)


@pytest.mark.filterwarnings("ignore:Got processor for bboxes")  # image-only: the point
@pytest.mark.needs_framework("albumentations")
def test_albumentations_transform_keeps_boxes_and_serialises(photo):
    import albumentations as A

    from vcm_plugin.integrations.albumentations import VCMCompression
    from vcm_plugin.integrations.generic import vcm_roundtrip

    boxes = [[0.5, 0.5, 0.2, 0.3], [0.25, 0.3, 0.1, 0.1]]
    pipe = A.Compose(
        [VCMCompression(layers=1, p=1.0)],
        bbox_params=A.BboxParams(format="yolo", label_fields=["cls"]),
    )
    out = pipe(image=photo, bboxes=boxes, cls=[0, 3])
    np.testing.assert_allclose(np.asarray(out["bboxes"]), np.asarray(boxes), atol=1e-6)
    assert list(out["cls"]) == [0, 3]
    np.testing.assert_array_equal(out["image"], vcm_roundtrip(photo, layers=1))

    t = VCMCompression(layers=(1, 4), preset="default", cache=True, p=0.5)
    again = A.from_dict(A.to_dict(t))  # what ultralytics does with augmentations=[...]
    assert repr(again) == repr(t)
    # seeded like any Albumentations pipeline: the same seed draws the same layer counts
    a = A.Compose([VCMCompression(layers=(1, 4), p=1.0)], seed=3)
    b = A.Compose([VCMCompression(layers=(1, 4), p=1.0)], seed=3)
    for _ in range(3):
        np.testing.assert_array_equal(a(image=photo)["image"], b(image=photo)["image"])


def test_stream_cache_memory_and_disk(photo, tmp_path):
    from vcm_plugin.integrations import StreamCache, reset_stats, stats
    from vcm_plugin.integrations._core import resolve_cache
    from vcm_plugin.integrations.generic import vcm_roundtrip

    reset_stats()
    resolve_cache(True).clear()  # process-wide: start cold
    first = vcm_roundtrip(photo, layers=2, cache=True)
    second = vcm_roundtrip(photo, layers=2, cache=True)
    np.testing.assert_array_equal(first, second)
    s = stats()
    assert s["encodes"] == 1 and s["cache_hits"] == 1 and s["decodes"] == 2
    assert resolve_cache(True) is resolve_cache(True)

    d = tmp_path / "streams"
    reset_stats()
    vcm_roundtrip(photo, layers=1, cache=str(d))
    vcm_roundtrip(photo, layers=3, cache=str(d))  # another operating point, same stream
    assert stats()["encodes"] == 1
    assert len(list(d.glob("*/*.vcm"))) == 1
    other = StreamCache(d)  # e.g. another DataLoader worker, or the next run
    key = StreamCache.key(photo, "tae")
    assert other.get(key) is not None and other.hits == 1
    assert StreamCache.key(photo, "fast") != key
    mem = StreamCache(max_bytes=10)
    mem.put("k", b"x" * 100)  # larger than the budget: not kept
    assert mem.get("k") is None and len(mem) == 0


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_stream_cache_keeps_latent_points(photo, tmp_path, where):
    """keep_points: the first round trip decodes every kept latent point once; later draws
    read the same pixels back (the generator does not run again); texture points still
    decode, and a cached picture handed out cannot be spoiled by its caller."""
    from vcm_plugin.integrations import StreamCache, reset_stats, stats
    from vcm_plugin.integrations._core import roundtrip_point, spec_points

    cache = StreamCache(None if where == "memory" else tmp_path / "c")
    plain = {k: roundtrip_point(photo, k).image for k in (1, 2, 3, 4)}
    keep = spec_points((1, 4), "tae")
    assert keep == (1, 2, 3, 4)
    reset_stats()
    draws = [4, 2, 1, 3, 2, 4, 1, 3]  # the first draw a texture point: 1-3 kept all the same
    for k in draws:
        got = roundtrip_point(photo, k, cache=cache, keep_points=keep)
        assert got.layers == k
        np.testing.assert_array_equal(got.image, plain[k])
        got.image[:] = 0  # an augmentation writing into the picture it was given
    s = stats()
    # one encode; latent points 1-3 decoded once each (all on the first draw), point 4 (a
    # texture point, an AV1 decode) on each of its draws; every other latent draw was kept
    assert s["encodes"] == 1 and s["cache_hits"] == len(draws) - 1
    assert s["decodes"] == 3 + draws.count(4)
    assert s["point_hits"] == len(draws) - draws.count(4)
    assert s["layers_used"] == {k: draws.count(k) for k in (1, 2, 3, 4)}
    if where == "disk":  # kept across processes and runs: another worker reads them back
        assert len(list((tmp_path / "c").glob("*/*.npy"))) == 3
        key = StreamCache.key(photo, "tae")
        np.testing.assert_array_equal(StreamCache(tmp_path / "c").get_point(key, 2), plain[2])
        cache.clear()
        assert not list((tmp_path / "c").glob("*/*"))
    # a spec that draws no latent point keeps nothing
    assert spec_points("analytics", "tae") == (4,) and spec_points(None, "tae") == (6,)
    small = StreamCache(max_point_bytes=photo.nbytes)  # room for one picture: the one drawn
    roundtrip_point(photo, 1, cache=small, keep_points=keep)
    key = StreamCache.key(photo, "tae")
    assert [small.get_point(key, k) is not None for k in (1, 2, 3)] == [True, False, False]


def test_read_stream_reads_only_needed_layers(photo, tmp_path):
    from vcm_plugin import Codec
    from vcm_plugin.integrations._core import read_stream

    codec = Codec()
    blob = codec.encode(photo)
    path = tmp_path / "x.vcm"
    path.write_bytes(blob)
    one = read_stream(path, layers=1)
    assert one == codec.truncate(blob, layers=1) and len(one) < len(blob)
    assert read_stream(path) == blob and read_stream(blob, layers=1) == one
    # a file cut inside the last layer still yields its complete layers
    n = codec.inspect(blob).num_layers
    path.write_bytes(blob[:-3])
    cut = read_stream(path)
    assert codec.inspect(cut).complete_layers == n - 1
