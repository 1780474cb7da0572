"""Anything malformed raises VCMError (and nothing else) with a message naming the problem."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import container


@pytest.fixture(scope="module")
def blob(request) -> bytes:
    from skimage import data

    return Codec().encode(np.ascontiguousarray(data.astronaut()[:64, :96]))


def _reheader(blob: bytes, **fields) -> bytes:
    """Rewrite header fields and fix the header CRC, as a crafted stream would."""
    h = container.parse_header(blob, 1 << 40)
    values = dict(
        magic=container.MAGIC,
        version=container.VERSION,
        backend=h.backend_id,
        preset=h.preset_id,
        n=h.num_layers,
        width=h.width,
        height=h.height,
    )
    values.update(fields)
    head = bytearray(blob[: h.size - 4])
    struct.pack_into(
        "<4sBBBBII",
        head,
        0,
        values["magic"],
        values["version"],
        values["backend"],
        values["preset"],
        values["n"],
        values["width"],
        values["height"],
    )
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + blob[h.size :]


CASES = {
    "empty": (lambda b: b"", "empty"),
    "random": (lambda b: bytes(np.random.default_rng(1).integers(0, 256, 500, np.uint8)), "magic"),
    "truncated header": (lambda b: b[:10], "truncated header"),
    "truncated table": (lambda b: b[:30], "truncated header"),
    "wrong magic": (lambda b: b"XVCM" + b[4:], "magic"),
    "future version": (lambda b: _reheader(b, version=9), "version 9"),
    "header bit flip": (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "header CRC"),
    "absurd size": (lambda b: _reheader(b, width=1 << 30, height=1 << 30), "pixel limit"),
    "zero size": (lambda b: _reheader(b, width=0), "bad image size"),
    "unknown preset": (lambda b: _reheader(b, preset=77), "unknown preset id 77"),
    "backend mismatch": (lambda b: _reheader(b, backend=9), "backend id 9"),
    "zero layers": (lambda b: _reheader(b, n=0), "layer count"),
    "too many layers": (lambda b: _reheader(b, n=200), "layer count"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_header(blob, name):
    mutate, message = CASES[name]
    codec = Codec()
    for call in (codec.decode, codec.inspect, lambda b: codec.truncate(b, 1)):
        with pytest.raises(VCMError, match=message):
            call(mutate(blob))


def test_bit_flip_in_each_layer(blob):
    codec = Codec()
    info = codec.inspect(blob)
    for i, (offset, length) in enumerate(zip(info.layer_offsets, info.layer_bytes, strict=True)):
        for pos in (offset, offset + length // 2, offset + length - 1):
            bad = bytearray(blob)
            bad[pos] ^= 0x10
            with pytest.raises(VCMError, match=f"layer {i} CRC"):
                codec.decode(bytes(bad))


def test_garbage_layer_with_valid_crc(blob):
    """A crafted stream whose layer CRCs match garbage must still fail cleanly or decode."""
    codec = Codec()
    h = container.parse_header(blob, 1 << 40)
    rng = np.random.default_rng(5)
    for trial in range(30):
        layers = [container.layer_payload(blob, h, i) for i in range(h.num_layers)]
        victim = trial % h.num_layers
        layers[victim] = bytes(rng.integers(0, 256, max(4, len(layers[victim])), np.uint8))
        crafted = container.pack(
            h.backend_id, h.preset_id, h.width, h.height, h.config_hash, layers
        )
        try:
            out = codec.decode(crafted)
        except VCMError:
            continue
        assert out.shape == (h.height, h.width, 3)


def test_non_contiguous_layers(blob):
    h = container.parse_header(blob, 1 << 40)
    head = bytearray(blob[: h.size - 4])
    struct.pack_into("<I", head, 28 + 12, h.offsets[1] + 5)  # layer 1 offset
    bad = bytes(head) + struct.pack("<I", zlib.crc32(head)) + blob[h.size :]
    with pytest.raises(VCMError, match="contiguous"):
        Codec().decode(bad)


def test_not_bytes():
    with pytest.raises(VCMError, match="bytes-like"):
        Codec().decode("not bytes")
