"""The layered-AVIF texture chain (``vcm_plugin.codec.layered_avif``, ctypes over Pillow's
libavif): each layer refines the one before, a layer decodes from the pieces up to it, and
hostile pieces give VCMError, never a crash or another exception."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from skimage import data

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import container, layered_avif
from vcm_plugin.codec.measure import psnr

QUALITIES = (35, 60, 80)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[96:192, 160:288])


@pytest.fixture(scope="module")
def pieces(photo) -> list[bytes]:
    return layered_avif.encode(photo, QUALITIES, 6, "444")


def test_each_layer_refines_the_one_before(photo, pieces):
    h, w = photo.shape[:2]
    assert len(pieces) == len(QUALITIES) and all(pieces)
    quality = [
        psnr(layered_avif.decode(pieces[: j + 1], len(QUALITIES), w, h), photo)
        for j in range(len(QUALITIES))
    ]
    assert quality == sorted(quality) and quality[-1] - quality[0] > 3
    # piece 0 starts with the whole file's length, then the file header
    (total,) = struct.unpack(">I", pieces[0][:4])
    assert total == sum(len(p) for p in pieces) - 4


def test_encoding_is_deterministic(photo, pieces):
    assert layered_avif.encode(photo, QUALITIES, 6, "444") == pieces


def test_wrong_pieces_are_refused(photo, pieces):
    h, w = photo.shape[:2]
    with pytest.raises(VCMError, match="malformed layer pieces"):
        layered_avif.decode([], 3, w, h)
    with pytest.raises(VCMError, match="expected 4"):
        layered_avif.decode(pieces[:1], 4, w, h)
    with pytest.raises(VCMError, match="image is"):
        layered_avif.decode(pieces[:1], 3, w + 2, h)
    huge = struct.pack(">I", 0xFFFFFFFF) + pieces[0][4:]
    with pytest.raises(VCMError, match="declared length"):
        layered_avif.decode([huge], 3, w, h)
    with pytest.raises(VCMError, match="1 to 4 layers"):
        layered_avif.encode(photo, (10, 20, 30, 40, 50), 6, "444")


def test_mutated_pieces_give_vcmerror_or_a_picture(photo, pieces):
    """400 random byte edits (flips, cuts, splices) of each piece: the AV1/ISOBMFF parsers
    see hostile bytes past the container's CRC (a stream repacked with valid CRCs)."""
    h, w = photo.shape[:2]
    rng = np.random.default_rng(26)
    outcomes = {"picture": 0, "error": 0}
    for trial in range(400):
        mutated = [bytearray(p) for p in pieces]
        j = int(rng.integers(len(mutated)))
        piece = mutated[j]
        kind = trial % 3
        if kind == 0:  # flip a few bytes
            for pos in rng.integers(0, len(piece), int(rng.integers(1, 8))):
                piece[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # cut
            del piece[int(rng.integers(len(piece))) :]
        else:  # splice bytes of another piece in
            other = pieces[int(rng.integers(len(pieces)))]
            at = int(rng.integers(len(piece)))
            piece[at : at + 16] = other[:16]
        try:
            out = layered_avif.decode([bytes(p) for p in mutated], len(QUALITIES), w, h)
        except VCMError:
            outcomes["error"] += 1
        else:
            assert out.shape == (h, w, 3) and out.dtype == np.uint8
            outcomes["picture"] += 1
    assert outcomes["error"] > 0  # the mutations reached the parsers


def test_codec_refuses_a_repacked_garbage_chain(photo):
    codec = Codec("tae", device="cpu")
    blob = codec.encode(photo)
    header = container.parse_header(blob, codec.max_pixels)
    payloads = [container.layer_payload(blob, header, i) for i in range(header.num_layers)]
    first = codec.inspect(blob).analytics_point - 1  # the chain's first layer
    payloads[first] = payloads[first][:4] + bytes(len(payloads[first]) - 4)
    bad = container.pack(
        header.backend_id,
        header.preset_id,
        header.width,
        header.height,
        header.config_hash,
        payloads,
        header.needs,
    )
    with pytest.raises(VCMError, match="layered AVIF"):
        codec.decode(bad, layers=first + 1)
    np.testing.assert_array_equal(codec.decode(bad, layers=1), codec.decode(blob, layers=1))
