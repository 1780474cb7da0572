"""Unit tests of the layered container (``vcm_plugin.codec.container``) on hand-made payloads:
no codec, no backend. Crafted headers are built here from the layout the module documents,
so the tests also pin that layout (a format constant) against ``pack``."""

from __future__ import annotations

import struct
import zlib

import pytest

from vcm_plugin.codec import container
from vcm_plugin.codec.container import MAGIC, MAX_LAYERS, pack, parse_header
from vcm_plugin.errors import VCMError

HASH = bytes(range(8))
BIG = 1 << 40  # max_pixels that never limits


def _layers(n: int) -> list[bytes]:
    return [bytes([i]) * (3 + 5 * i) for i in range(n)]


def _craft(
    entries: list[tuple],
    *,
    version: int = 2,
    n: int | None = None,
    magic: bytes = MAGIC,
    width: int = 64,
    height: int = 48,
    fix_crc: bool = True,
) -> bytes:
    """A header from the documented layout: fixed part, one entry per layer, CRC32."""
    n = len(entries) if n is None else n
    head = struct.pack("<4sBBBBII8s", magic, version, 1, 1, n, width, height, HASH)
    entry = "<IIIH" if version == 3 else "<III"
    head += b"".join(struct.pack(entry, *e) for e in entries)
    crc = zlib.crc32(head) if fix_crc else zlib.crc32(head) ^ 1
    return head + struct.pack("<I", crc)


def _entries(payloads: list[bytes], version: int = 2, needs=None) -> list[tuple]:
    """Contiguous (offset, length, crc[, needs]) entries for ``payloads``."""
    offset = container.header_size(len(payloads), version)
    out = []
    for i, p in enumerate(payloads):
        extra = () if version == 2 else ((needs[i] if needs else (1 << i) - 1),)
        out.append((offset, len(p), zlib.crc32(p), *extra))
        offset += len(p)
    return out


# -- format constants ----------------------------------------------------------------------


def test_header_sizes_follow_the_documented_layout():
    # 4 magic + 4 u8 + 2 u32 + 8 hash = 24, then 12 (v2) or 14 (v3) bytes per layer, CRC 4
    for n in (1, 2, MAX_LAYERS):
        assert container.header_size(n) == container.header_size(n, 2) == 24 + 12 * n + 4
        assert container.header_size(n, 3) == 24 + 14 * n + 4
    assert MAGIC == b"\x89VCM"
    assert container.VERSIONS == (2, 3) and container.VERSION == 3


def test_pack_writes_the_documented_bytes():
    payloads = _layers(3)
    blob = pack(1, 1, 64, 48, HASH, payloads)
    assert blob == _craft(_entries(payloads)) + b"".join(payloads)


def test_prefix_needs():
    assert container.prefix_needs(0) == ()
    assert container.prefix_needs(4) == (0b0, 0b1, 0b11, 0b111)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, MAX_LAYERS])
def test_pack_parse_round_trip_version2(n):
    payloads = _layers(n)
    blob = pack(2, 4, 640, 480, HASH, payloads)
    h = parse_header(blob, BIG)
    assert (h.backend_id, h.preset_id, h.width, h.height, h.config_hash) == (2, 4, 640, 480, HASH)
    assert h.version == 2 and h.num_layers == n and h.size == container.header_size(n, 2)
    assert h.lengths == tuple(len(p) for p in payloads)
    assert h.crcs == tuple(zlib.crc32(p) for p in payloads)
    assert h.needs == container.prefix_needs(n)
    for i, p in enumerate(payloads):
        assert container.layer_payload(blob, h, i) == p
    assert h.prefix_end(0) == h.size and h.prefix_end(n) == len(blob)
    assert container.complete_layers(blob, h) == n
    assert container.decodable_points(blob, h) == list(range(1, n + 1))


def test_bytes_like_inputs_are_accepted():
    blob = pack(1, 1, 8, 8, HASH, _layers(2))
    for form in (bytearray(blob), memoryview(blob)):
        assert parse_header(form, BIG) == parse_header(blob, BIG)


def test_needs_other_than_the_prefix_chain_write_version3():
    payloads = _layers(4)
    needs = (0, 0b1, 0, 0)  # layers 2 and 3 stand alone
    blob = pack(1, 1, 32, 32, HASH, payloads, needs)
    h = parse_header(blob, BIG)
    assert h.version == 3 and h.needs == needs and h.size == container.header_size(4, 3)
    assert blob == _craft(_entries(payloads, 3, needs), version=3, width=32, height=32) + b"".join(
        payloads
    )
    assert h.point_layers(2) == [0, 1]
    assert h.point_layers(3) == [2] and h.point_layers(4) == [3]
    # a prefix point is fetched as its own version-2 stream; a standalone one as a v3 view
    assert h.point_bytes(2) == container.header_size(2, 2) + sum(map(len, payloads[:2]))
    assert h.point_bytes(4) == container.header_size(4, 3) + len(payloads[3])


def test_explicit_prefix_needs_still_write_version2():
    payloads = _layers(3)
    assert pack(1, 1, 8, 8, HASH, payloads, container.prefix_needs(3)) == pack(
        1, 1, 8, 8, HASH, payloads
    )


def test_an_absent_layer_makes_version3_and_drops_its_points():
    payloads = [b"aaaa", b"", b"cccc"]
    blob = pack(1, 1, 8, 8, HASH, payloads, (0, 0b1, 0))
    h = parse_header(blob, BIG)
    assert h.version == 3 and h.lengths == (4, 0, 4)
    assert h.crcs[1] == zlib.crc32(b"")
    assert container.present_layers(blob, h) == [True, False, True]
    assert container.decodable_points(blob, h) == [1, 3]
    assert container.complete_layers(blob, h) == 1


def test_truncate_and_view_are_valid_streams():
    payloads = _layers(4)
    needs = (0, 0b1, 0b11, 0)
    blob = pack(1, 1, 8, 8, HASH, payloads, needs)
    h = parse_header(blob, BIG)
    cut = container.truncate(blob, h, 2)
    hc = parse_header(cut, BIG)
    assert hc.version == 2 and hc.num_layers == 2 and len(cut) == hc.prefix_end(2)
    assert [container.layer_payload(cut, hc, i) for i in range(2)] == payloads[:2]
    for k in range(1, 5):
        view = container.view(blob, h, k)
        assert len(view) == h.point_bytes(k)
        hv = parse_header(view, BIG)
        assert k in container.decodable_points(view, hv)
        for i in h.point_layers(k):
            assert container.layer_payload(view, hv, i) == payloads[i]
    # the standalone top layer's view holds that layer only
    hv = parse_header(container.view(blob, h, 4), BIG)
    assert hv.lengths == (0, 0, 0, len(payloads[3]))


# -- pack refuses ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, MAX_LAYERS + 1])
def test_pack_refuses_a_layer_count_out_of_range(n):
    with pytest.raises(VCMError, match=rf"1\.\.{MAX_LAYERS} layers, got {n}"):
        pack(1, 1, 8, 8, HASH, [b"x"] * n)


@pytest.mark.parametrize("needs", [(0, 0b10), (0b1, 0), (0,), (0, 0b100)])
def test_pack_refuses_needs_on_itself_later_layers_or_the_wrong_count(needs):
    with pytest.raises(VCMError, match="bad layer needs"):
        pack(1, 1, 8, 8, HASH, [b"a", b"b"], needs)


# -- parse refuses, saying what is wrong --------------------------------------------------------


def _good() -> bytes:
    return pack(1, 1, 64, 48, HASH, _layers(3))


BAD = {
    "empty": (b"", "^empty stream$"),
    "magic prefix only": (MAGIC[:3], "truncated header: 3 bytes"),
    "short wrong magic": (b"GIF8", "wrong magic"),
    "wrong magic": (b"\x89PNG" + _good()[4:], r"wrong magic bytes b'\\x89PNG'"),
    "fixed part cut": (_good()[:20], "truncated header: 20 bytes, need at least 24"),
    "table cut": (_good()[:40], "truncated header: 40 bytes, the layer table needs 64"),
    "crc": (_craft(_entries(_layers(3)), fix_crc=False), "header CRC mismatch"),
    "version 1": (
        _craft(_entries(_layers(1)), version=1),
        "unsupported stream version 1 .*older vcm_plugin: re-encode",
    ),
    "version 4": (
        _craft(_entries(_layers(1)), version=4),
        r"unsupported stream version 4 \(this reader knows 2 and 3\)$",
    ),
    "version 0": (_craft(_entries(_layers(1)), version=0), r"stream version 0 \(this reader"),
    "zero layers": (_craft([]), r"bad layer count 0 \(must be 1\.\.16\)"),
    "17 layers": (_craft(_entries(_layers(1)), n=17), "bad layer count 17"),
    "zero width": (_craft(_entries(_layers(1)), width=0), "bad image size 0x48"),
    "zero height": (_craft(_entries(_layers(1)), height=0), "bad image size 64x0"),
    "gap": (_craft([(44, 5, 0)]), "layer 0 starts at byte 44, expected 40"),
    "overlap": (_craft([(52, 5, 0), (56, 5, 0)]), "layer 1 starts at byte 56, expected 57"),
    "v2 absent": (_craft([(40, 0, 0)]), "layer 0 has length 0"),
    "v3 absent with crc": (
        _craft([(42, 0, 7, 0)], version=3),
        r"layer 0 is absent \(length 0\) but has CRC 0x7",
    ),
    "v3 needs itself": (
        _craft([(42, 1, 0, 0b1)], version=3),
        r"layer 0 needs layers at or after itself \(mask 0x1\)",
    ),
    "v3 needs later": (
        _craft([(56, 1, 0, 0), (57, 1, 0, 0b100)], version=3),
        r"layer 1 needs layers at or after itself \(mask 0x4\)",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_malformed_headers_raise_vcmerror_naming_the_problem(name):
    blob, message = BAD[name]
    with pytest.raises(VCMError, match=message):
        parse_header(blob, BIG)


@pytest.mark.parametrize("thing", [None, "stream", 42, [1, 2]])
def test_parse_refuses_what_is_not_bytes(thing):
    with pytest.raises(VCMError, match=f"expected a bytes-like stream, got {type(thing).__name__}"):
        parse_header(thing, BIG)


def test_a_stream_of_max_layers_parses():
    h = parse_header(pack(1, 1, 8, 8, HASH, _layers(MAX_LAYERS)), BIG)
    assert h.num_layers == MAX_LAYERS


def test_pixel_limit():
    blob = pack(1, 1, 100, 50, HASH, _layers(1))
    assert parse_header(blob, 5000).width == 100  # exactly at the limit
    with pytest.raises(VCMError, match=r"100x50 exceeds the pixel limit 4999 \(raise max_pix"):
        parse_header(blob, 4999)


def test_every_prefix_of_a_header_raises_vcmerror():
    blob = _good()
    size = parse_header(blob, BIG).size
    for cut in range(size):
        with pytest.raises(VCMError):
            parse_header(blob[:cut], BIG)


def test_every_bit_flip_in_a_header_is_caught():
    blob = _good()
    size = parse_header(blob, BIG).size
    for byte in range(size):
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[byte] ^= 1 << bit
            with pytest.raises(VCMError):
                parse_header(bytes(bad), BIG)


# -- layer sizes against the bytes that are there -----------------------------------------------


def test_layers_longer_than_the_blob_are_missing_not_an_error_until_layer0():
    payloads = _layers(3)
    blob = pack(1, 1, 8, 8, HASH, payloads)
    h = parse_header(blob, BIG)
    cut = blob[: h.offsets[2] + 1]  # inside layer 2
    assert container.present_layers(cut, h) == [True, True, False]
    assert container.complete_layers(cut, h) == 2
    assert container.decodable_points(cut, h) == [1, 2]
    inside0 = blob[: h.offsets[0] + 1]
    for check in (container.complete_layers, container.decodable_points):
        with pytest.raises(
            VCMError,
            match=f"truncated inside layer 0: {len(inside0)} bytes, "
            f"layer 0 ends at byte {h.prefix_end(1)}",
        ):
            check(inside0, h)


def test_a_declared_length_past_any_real_blob():
    """A u32 length far beyond the data parses (a reader may fetch layers later), reports the
    layer missing, and a following layer cannot start after it in a u32 offset."""
    huge = _craft([(40, 0xFFFFFFFF, 0)])
    h = parse_header(huge + b"abc", BIG)
    assert h.prefix_end(1) == 40 + 0xFFFFFFFF
    assert container.present_layers(huge + b"abc", h) == [False]
    with pytest.raises(VCMError, match="layer 1 starts at byte 4294967295, expected 4294967347"):
        parse_header(_craft([(52, 0xFFFFFFFF, 0), (0xFFFFFFFF, 1, 0)]), BIG)


def test_a_corrupt_present_layer_raises():
    payloads = _layers(3)
    blob = bytearray(pack(1, 1, 8, 8, HASH, payloads))
    h = parse_header(bytes(blob), BIG)
    blob[h.offsets[1]] ^= 0xFF
    with pytest.raises(VCMError, match="layer 1 CRC mismatch"):
        container.present_layers(bytes(blob), h)
    with pytest.raises(VCMError, match="layer 1 CRC mismatch"):
        container.complete_layers(bytes(blob), h)


def test_an_absent_layer0_leaves_no_decodable_point():
    # every point needs layer 0 (point 1 is layer 0 alone), so a view without it has none
    blob = pack(1, 1, 8, 8, HASH, [b"", b"bb", b"cc"], (0, 0b1, 0b11))
    h = parse_header(blob, BIG)
    assert container.present_layers(blob, h) == [False, True, True]
    with pytest.raises(VCMError):
        container.decodable_points(blob, h)


def test_an_absent_layer0_is_not_reported_as_truncated():
    blob = pack(1, 1, 8, 8, HASH, [b"", b"bb", b"cc"], (0, 0b1, 0b11))
    with pytest.raises(VCMError, match="no operating point of this stream has all its layers"):
        container.decodable_points(blob, parse_header(blob, BIG))
