"""Round trips, layering invariants and determinism of the Codec API."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec.api import TruncatedStreamWarning
from vcm_plugin.codec.measure import psnr


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (13, 7), (479, 641), (16, 16)])
def test_odd_sizes_round_trip(codec, shape):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(shape[0], shape[1], 3))
    img = np.clip(base // 2 + 64, 0, 255).astype(np.uint8)
    blob = codec.encode(img)
    info = codec.inspect(blob)
    assert (info.width, info.height) == (shape[1], shape[0])
    assert info.num_layers >= 4
    for k in range(1, info.num_layers + 1):
        out = codec.decode(blob, layers=k)
        assert out.shape == img.shape and out.dtype == np.uint8


def test_layers_grow_and_psnr_rises(codec, kodak):
    blob = codec.encode(kodak)
    info = codec.inspect(blob)
    assert info.num_layers >= 4
    assert info.layer_bytes[0] <= 0.25 * sum(info.layer_bytes)
    sizes, quality = [], []
    for k in range(1, info.num_layers + 1):
        sizes.append(len(codec.truncate(blob, k)))
        quality.append(psnr(codec.decode(blob, layers=k), kodak))
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False))
    # each ladder (latent layers, analytics textures, viewer textures) gets better point by
    # point; the ladders interleave in bytes, not in layer order
    roles = info.layer_roles
    for ladder in (
        {"semantic", "splits", "refinement"},
        {"texture-analytics"},
        {"texture", "texture-residual"},
    ):
        steps = [q for q, role in zip(quality, roles, strict=True) if role in ladder]
        assert all(b >= a - 0.05 for a, b in zip(steps, steps[1:], strict=False)), (ladder, steps)
    assert quality[-1] > quality[0] + 5
    assert quality[-1] >= 30


def test_truncate_equals_partial_decode(codec, photo):
    blob = codec.encode(photo)
    for k in range(1, codec.num_layers + 1):
        part = codec.truncate(blob, k)
        assert codec.inspect(part).num_layers == k
        np.testing.assert_array_equal(codec.decode(part), codec.decode(blob, layers=k))
    assert codec.decode(blob).shape == photo.shape


def test_layer0_byte_range_is_a_prefix(codec, photo):
    blob = codec.encode(photo)
    info = codec.inspect(blob)
    end = info.layer_offsets[0] + info.layer_bytes[0]
    with pytest.warns(TruncatedStreamWarning):
        partial = codec.decode(blob[:end])
    np.testing.assert_array_equal(partial, codec.decode(blob, layers=1))


def test_config_hash_is_the_one_streams_carry(codec, photo):
    assert codec.config_hash == codec.inspect(codec.encode(photo)).config_hash
    assert codec.config_hash != Codec.from_preset("fast").config_hash


def test_cut_stream_decodes_complete_layers(codec, photo):
    blob = codec.encode(photo)
    info = codec.inspect(blob)
    cut = info.layer_offsets[2] + info.layer_bytes[2] // 2
    with pytest.warns(TruncatedStreamWarning, match="decoded 2 of"):
        out = codec.decode(blob[:cut])
    np.testing.assert_array_equal(out, codec.decode(blob, layers=2))
    assert codec.inspect(blob[:cut]).complete_layers == 2
    with pytest.raises(VCMError, match="3 layers"):
        codec.decode(blob[:cut], layers=3)


def test_encode_is_deterministic(codec, photo):
    assert codec.encode(photo) == codec.encode(photo)


@pytest.mark.slow
def test_decode_identical_across_processes(codec, photo, tmp_path):
    blob = codec.encode(photo)
    path = tmp_path / "x.vcm"
    path.write_bytes(blob)
    script = (
        "import sys, hashlib; from vcm_plugin import Codec;"
        "b=open(sys.argv[1],'rb').read(); c=Codec();"
        "print(hashlib.sha256(c.decode(b).tobytes()).hexdigest(),"
        "hashlib.sha256(c.encode(c.decode(b, layers=1)).hex().encode()).hexdigest())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(outs) == 1
    here = hashlib.sha256(codec.decode(blob).tobytes()).hexdigest()
    assert outs.pop().split()[0] == here


def test_grayscale_converted_rgba_refused(codec, photo):
    gray = photo[..., 1].copy()
    out = codec.decode(codec.encode(gray))
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - gray[..., None].astype(int)).mean() < 6
    with pytest.raises(VCMError, match="alpha"):
        codec.encode(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(VCMError, match="uint8"):
        codec.encode(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(VCMError, match="numpy"):
        codec.encode([[0, 0, 0]])


def test_bad_arguments(codec, photo):
    blob = codec.encode(photo)
    for bad in (0, -1, 99, 1.5):
        with pytest.raises(VCMError):
            codec.decode(blob, layers=bad)
        with pytest.raises(VCMError):
            codec.truncate(blob, bad)
    with pytest.raises(VCMError, match="unknown preset"):
        Codec.from_preset("nope")


def test_pixel_limit_is_configurable(photo):
    small = Codec(max_pixels=1000)
    with pytest.raises(VCMError, match="pixel limit"):
        small.encode(photo)
    blob = Codec().encode(photo)
    with pytest.raises(VCMError, match="pixel limit"):
        small.decode(blob)
    assert Codec(max_pixels=photo.shape[0] * photo.shape[1]).decode(blob).shape == photo.shape


def test_tae_preset_quality(kodak):
    crop = np.ascontiguousarray(kodak[100:292, 200:456])
    codec = Codec.from_preset("tae")
    blob = codec.encode(crop)
    info = codec.inspect(blob)
    assert info.backend == "tae" and info.num_layers >= 4
    assert info.layer_bytes[0] <= 0.25 * sum(info.layer_bytes)
    first, full = psnr(codec.decode(blob, layers=1), crop), psnr(codec.decode(blob), crop)
    assert full >= 28 and full > first
    # a default Codec decodes any preset's stream: the stream says which one it is
    np.testing.assert_array_equal(Codec().decode(blob, layers=2), codec.decode(blob, layers=2))


@pytest.mark.parametrize("preset", ["fast", "tae"])
def test_batches_equal_single_images_on_cpu(preset, photo):
    """On the CPU a batch runs image by image, so each stream and picture is exactly the
    single-image one; sizes may differ within a batch."""
    codec = Codec(preset, device="cpu")
    images = [photo, photo[:61, :83], np.ascontiguousarray(photo[::-1])]
    blobs = codec.encode_batch(images)
    assert blobs == [codec.encode(img) for img in images]
    for k in (1, 3, None):
        got = codec.decode_batch(blobs, layers=k)
        for blob, image in zip(blobs, got, strict=True):
            np.testing.assert_array_equal(image, codec.decode(blob, layers=k))
    assert codec.encode_batch([]) == [] and codec.decode_batch([]) == []


def test_device_choice():
    assert Codec(device="cpu").device == "cpu"
    assert Codec(device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(VCMError, match="device must be"):
        Codec(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VCMError, match="no CUDA device"):
            Codec(device="cuda")


@pytest.fixture(scope="module")
def tae_stream() -> tuple[Codec, np.ndarray, bytes]:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[100:164, 180:276])
    codec = Codec("tae", device="cpu")
    return codec, img, codec.encode(img)


def test_generator_stream_layout(tae_stream):
    """Version 3: three latent layers in a prefix chain, then the texture chain (one layered
    AVIF: the analytics point, then the viewer points) whose layers need the chain's earlier
    layers and no latent layer; every operating point's bytes are what ``view`` writes."""
    codec, img, blob = tae_stream
    info = codec.inspect(blob)
    n = 6
    assert info.version == 3 and info.num_layers == n
    assert info.layer_roles == ["semantic", "splits", "refinement"] + ["texture"] * 3
    assert info.point_layers == [[0], [0, 1], [0, 1, 2], [3], [3, 4], [3, 4, 5]]
    assert info.viewer_points == [4, 5, 6] and info.analytics_point == 4
    for k in range(1, n + 1):
        assert info.point_bytes[k - 1] == len(codec.view(blob, layers=k))
        assert info.point_bytes[k - 1] >= sum(info.layer_bytes[i] for i in info.point_layers[k - 1])
    assert info.decodable_points == list(range(1, n + 1))
    # the climb is nested: each viewer point holds the one below and is closer to the photo
    errors = [
        np.abs(codec.decode(blob, layers=k).astype(int) - img).mean() for k in info.viewer_points
    ]
    assert errors == sorted(errors, reverse=True)
    climb = [set(info.point_layers[k - 1]) for k in info.viewer_points]
    assert all(low < high for low, high in zip(climb, climb[1:], strict=False))


def test_a_view_is_its_point_alone(tae_stream):
    codec, _, blob = tae_stream
    info = codec.inspect(blob)
    n = info.num_layers
    for k in range(1, n + 1):
        view = codec.view(blob, layers=k)
        assert len(view) == codec.inspect(view).point_bytes[k - 1]
        assert codec.inspect(view).decodable_points[-1] == k
        np.testing.assert_array_equal(codec.decode(view), codec.decode(blob, layers=k))
    view = codec.view(blob, layers=6)  # the chain up to point 6: the latent layers are absent
    assert [m > 0 for m in codec.inspect(view).layer_bytes] == [i in (3, 4, 5) for i in range(n)]
    assert len(view) < info.total_bytes  # the chain's first layers, not the stream
    with pytest.raises(VCMError, match=r"decodable operating points: 4\.\.6\)"):
        codec.decode(view, layers=2)
    with pytest.raises(VCMError, match="operating points"):
        codec.view(view, layers=3)


def test_cut_generator_stream_decodes_the_best_complete_point(tae_stream):
    codec, _, blob = tae_stream
    info = codec.inspect(blob)
    cut = info.layer_offsets[5] + 5  # inside the third texture layer
    with pytest.warns(TruncatedStreamWarning, match="decoded 5 of 6"):
        out = codec.decode(blob[:cut])
    np.testing.assert_array_equal(out, codec.decode(blob, layers=5))


def test_bad_version3_tables_are_refused(tae_stream):
    from vcm_plugin.codec import container

    codec, _, blob = tae_stream
    header = container.parse_header(blob, 1 << 30)
    n = header.num_layers
    payloads = [container.layer_payload(blob, header, i) for i in range(n)]
    args = (header.backend_id, header.preset_id, header.width, header.height, header.config_hash)
    with pytest.raises(VCMError, match="earlier layers only"):
        container.pack(*args, payloads, (0, 1, 3, 7) + (0,) * (n - 5) + (1 << (n - 1),))
    # a table that claims a texture layer needs the latent layers: not this preset's rules
    wrong = container.pack(*args, payloads, container.prefix_needs(n))
    with pytest.raises(VCMError, match="do not match preset 'tae'"):
        codec.decode(wrong)
    # hand-edited entries: a forward mask, an absent layer with a CRC
    entry = 24 + (n - 1) * 14
    forward = bytearray(blob)
    forward[entry + 12 : entry + 14] = (1 << (n - 1)).to_bytes(2, "little")
    bad_crc = bytearray(codec.view(blob, layers=6))
    bad_crc[24 + 8 : 24 + 12] = (1234).to_bytes(4, "little")
    for bad, message in (
        (forward, "needs layers at or after itself"),
        (bad_crc, "absent .* but has CRC"),
    ):
        size = container.header_size(n, 3)
        bad[size - 4 : size] = (__import__("zlib").crc32(bytes(bad[: size - 4]))).to_bytes(
            4, "little"
        )
        with pytest.raises(VCMError, match=message):
            codec.inspect(bytes(bad))


def test_byte_budget_keeps_the_best_fit(tae_stream):
    codec, _, blob = tae_stream
    info = codec.inspect(blob)
    n = info.num_layers
    for k in range(1, n + 1):
        prefix = codec.truncate(blob, layers=k)
        assert codec.truncate(blob, max_bytes=len(prefix)) == prefix
        assert len(codec.truncate(blob, max_bytes=len(prefix) + 1)) == len(prefix) or k == n
        view_bytes = info.point_bytes[k - 1]
        fits = max(j for j in range(1, n + 1) if info.point_bytes[j - 1] <= view_bytes)
        assert codec.view(blob, max_bytes=view_bytes) == codec.view(blob, layers=fits)
    with pytest.raises(VCMError, match="below the smallest operating point"):
        codec.truncate(blob, max_bytes=10)
    with pytest.raises(VCMError, match="not both"):
        codec.view(blob, layers=2, max_bytes=10_000)
    with pytest.raises(VCMError, match="positive integer"):
        codec.truncate(blob, max_bytes=-5)
