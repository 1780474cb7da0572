"""The layered container: header, layer table, CRC32 per layer.

Layout (little endian)::

    magic  b"\\x89VCM"                       4 bytes
    version                                 u8
    backend id, preset id                   u8, u8
    layer count n                           u8
    width, height                           u32, u32
    config hash                             8 bytes (blake2b of the preset configuration)
    n x (offset, length, crc32)             u32 each; offsets from the start of the stream
    header crc32                            u32 over every byte above
    layer payloads                          contiguous, in order

A reader can fetch layer 0 alone with one byte-range request: ``[0, offset_0 + length_0)``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from vcm_plugin.errors import VCMError

MAGIC = b"\x89VCM"
VERSION = 2  # 2: moment-matched Laplace scales (version-1 streams decode differently)
MAX_LAYERS = 16
_FIXED = struct.Struct("<4sBBBBII8s")
_ENTRY = struct.Struct("<III")
_CRC = struct.Struct("<I")


def header_size(num_layers: int) -> int:
    """Bytes before the first layer payload."""
    return _FIXED.size + num_layers * _ENTRY.size + _CRC.size


@dataclass(frozen=True)
class Header:
    backend_id: int
    preset_id: int
    width: int
    height: int
    config_hash: bytes
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    crcs: tuple[int, ...]

    @property
    def num_layers(self) -> int:
        return len(self.lengths)

    @property
    def size(self) -> int:
        return header_size(self.num_layers)

    def prefix_end(self, layers: int) -> int:
        """End offset of the first ``layers`` layers (the byte range a client fetches)."""
        return self.size if layers == 0 else self.offsets[layers - 1] + self.lengths[layers - 1]


def pack(
    backend_id: int, preset_id: int, width: int, height: int, config_hash: bytes,
    layers: list[bytes],
) -> bytes:
    """Serialise a header and its layers into one stream."""
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise VCMError(f"a stream holds 1..{MAX_LAYERS} layers, got {len(layers)}")
    start = header_size(len(layers))
    table = bytearray()
    offset = start
    for payload in layers:
        table += _ENTRY.pack(offset, len(payload), zlib.crc32(payload))
        offset += len(payload)
    head = _FIXED.pack(MAGIC, VERSION, backend_id, preset_id, len(layers), width, height,
                       config_hash) + bytes(table)
    return head + _CRC.pack(zlib.crc32(head)) + b"".join(layers)


def parse_header(blob: bytes, max_pixels: int) -> Header:
    """Read and validate the header; raises VCMError saying what is wrong."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise VCMError(f"expected a bytes-like stream, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _FIXED.size:
        if not MAGIC.startswith(blob[:4]) or len(blob) == 0:
            raise VCMError("not a VCM stream: wrong magic bytes" if blob else "empty stream")
        raise VCMError(f"truncated header: {len(blob)} bytes, need at least {_FIXED.size}")
    magic, version, backend_id, preset_id, n, width, height, chash = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise VCMError(f"not a VCM stream: wrong magic bytes {magic!r}")
    if version != VERSION:
        hint = "; it was written by an older vcm_plugin: re-encode the image" if (
            0 < version < VERSION) else ""
        raise VCMError(f"unsupported stream version {version} (this reader knows {VERSION})"
                       f"{hint}")
    if not 1 <= n <= MAX_LAYERS:
        raise VCMError(f"bad layer count {n} (must be 1..{MAX_LAYERS})")
    size = header_size(n)
    if len(blob) < size:
        raise VCMError(f"truncated header: {len(blob)} bytes, the layer table needs {size}")
    (stored_crc,) = _CRC.unpack_from(blob, size - _CRC.size)
    if zlib.crc32(blob[: size - _CRC.size]) != stored_crc:
        raise VCMError("header CRC mismatch: the header is corrupt")
    if width < 1 or height < 1:
        raise VCMError(f"bad image size {width}x{height}")
    if width * height > max_pixels:
        raise VCMError(
            f"image size {width}x{height} exceeds the pixel limit {max_pixels} "
            "(raise max_pixels if this stream is trusted)"
        )
    entries = [_ENTRY.unpack_from(blob, _FIXED.size + i * _ENTRY.size) for i in range(n)]
    expected = size
    for i, (offset, length, _crc) in enumerate(entries):
        if offset != expected:
            raise VCMError(f"layer {i} starts at byte {offset}, expected {expected}: "
                           "layers must be contiguous and in order")
        if length == 0:
            raise VCMError(f"layer {i} has length 0")
        expected = offset + length
    offsets, lengths, crcs = (tuple(col) for col in zip(*entries, strict=True))
    return Header(backend_id, preset_id, width, height, chash, offsets, lengths, crcs)


def complete_layers(blob: bytes, header: Header) -> int:
    """How many leading layers are fully present; a corrupt present layer raises VCMError."""
    count = 0
    for i in range(header.num_layers):
        end = header.offsets[i] + header.lengths[i]
        if end > len(blob):
            break
        if zlib.crc32(blob[header.offsets[i]:end]) != header.crcs[i]:
            raise VCMError(f"layer {i} CRC mismatch: the layer is corrupt")
        count += 1
    if count == 0:
        raise VCMError(
            f"stream truncated inside layer 0: {len(blob)} bytes, layer 0 ends at byte "
            f"{header.prefix_end(1)}"
        )
    return count


def layer_payload(blob: bytes, header: Header, index: int) -> bytes:
    return blob[header.offsets[index]: header.offsets[index] + header.lengths[index]]


def truncate(blob: bytes, header: Header, layers: int) -> bytes:
    """A valid stream holding the first ``layers`` layers, with a rewritten header."""
    payloads = [layer_payload(blob, header, i) for i in range(layers)]
    return pack(header.backend_id, header.preset_id, header.width, header.height,
                header.config_hash, payloads)
