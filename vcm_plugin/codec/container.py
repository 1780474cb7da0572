"""The layered container: header, layer table, CRC32 per layer.

Layout (little endian)::

    magic  b"\\x89VCM"                       4 bytes
    version                                 u8
    backend id, preset id                   u8, u8
    layer count n                           u8
    width, height                           u32, u32
    config hash                             8 bytes (blake2b of the preset configuration)
    n x (offset, length, crc32)             u32 each; offsets from the start of the stream
        version 3 adds a u16 per entry: the bit mask of earlier layers this one needs
    header crc32                            u32 over every byte above
    layer payloads                          contiguous, in order

A reader can fetch layer 0 alone with one byte-range request: ``[0, offset_0 + length_0)``.

Version 2 layers each need every layer before them, so an operating point is a prefix. Version 3
records what each layer needs, so an operating point is a layer and its needs (a viewer can
fetch the header and one texture layer by byte range and skip the analytics refinements), and
a layer may be absent (length 0): ``view`` streams carry one operating point's layers only.
A stream whose layers form a plain prefix chain is written as version 2, byte for byte as
before.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from vcm_plugin.errors import CorruptStream, TruncatedStream, VCMError

MAGIC = b"\x89VCM"
VERSION = 3  # 3: per-layer needs and absent layers; 2: moment-matched Laplace scales
VERSIONS = (2, 3)  # read; version-1 streams decode differently and are refused
MAX_LAYERS = 16
#: The fixed part of every header, field by field: (name, struct code), little endian.
FIXED_FIELDS = (
    ("magic", "4s"),
    ("version", "B"),
    ("backend_id", "B"),
    ("preset_id", "B"),
    ("num_layers", "B"),
    ("width", "I"),
    ("height", "I"),
    ("config_hash", "8s"),
)
_FIXED = struct.Struct("<" + "".join(code for _, code in FIXED_FIELDS))
_ENTRIES = {2: struct.Struct("<III"), 3: struct.Struct("<IIIH")}
_CRC = struct.Struct("<I")
#: The header layout for tools that build or edit headers byte by byte (the fuzzer): the fixed
#: part, each fixed field's byte offset, one layer-table entry per version (offset, length,
#: crc32; version 3 adds the needs mask) and the trailing header CRC.
FIXED_HEADER = _FIXED
FIELD_OFFSETS = {
    name: struct.calcsize("<" + "".join(c for _, c in FIXED_FIELDS[:i]))
    for i, (name, _) in enumerate(FIXED_FIELDS)
}
TABLE_ENTRY = _ENTRIES
HEADER_CRC = _CRC
_EMPTY_CRC = zlib.crc32(b"")


def header_size(num_layers: int, version: int = 2) -> int:
    """Bytes before the first layer payload."""
    return _FIXED.size + num_layers * _ENTRIES[version].size + _CRC.size


def prefix_needs(num_layers: int) -> tuple[int, ...]:
    """Version 2's rule: every layer needs all layers before it."""
    return tuple((1 << i) - 1 for i in range(num_layers))


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
    version: int = 2
    needs: tuple[int, ...] = ()  # per layer, the bit mask of earlier layers it needs

    def __post_init__(self) -> None:
        if not self.needs:
            object.__setattr__(self, "needs", prefix_needs(len(self.lengths)))

    @property
    def num_layers(self) -> int:
        return len(self.lengths)

    @property
    def size(self) -> int:
        return header_size(self.num_layers, self.version)

    def prefix_end(self, layers: int) -> int:
        """End offset of the first ``layers`` layers (a byte range that holds every operating
        point up to ``layers``, since layers only need earlier ones)."""
        return self.size if layers == 0 else self.offsets[layers - 1] + self.lengths[layers - 1]

    def head_end(self) -> int:
        """End of the first layer that has bytes (the absent layers before it have none): the
        least an upload holds before any operating point can be checked. A view of a texture
        point starts with absent latent layers (``Codec.view``), so this is not always
        ``prefix_end(1)``."""
        for offset, length in zip(self.offsets, self.lengths, strict=True):
            if length:
                return offset + length
        return self.size

    def point_layers(self, layers: int) -> list[int]:
        """Indices of the layers operating point ``layers`` decodes: layer ``layers - 1`` and
        everything it needs, in stream order."""
        top = layers - 1
        mask = self.needs[top] | (1 << top)
        return [i for i in range(self.num_layers) if mask >> i & 1]

    def point_bytes(self, layers: int) -> int:
        """What a reader fetches for operating point ``layers``: the size of ``view``'s stream,
        a header plus the point's layers (a prefix point gets a version-2 header of its own
        layers only)."""
        needed = self.point_layers(layers)
        if needed == list(range(layers)):
            return header_size(layers, 2) + sum(self.lengths[:layers])
        return header_size(self.num_layers, 3) + sum(self.lengths[i] for i in needed)


def pack(
    backend_id: int,
    preset_id: int,
    width: int,
    height: int,
    config_hash: bytes,
    layers: list[bytes],
    needs: tuple[int, ...] | None = None,
) -> bytes:
    """Serialise a header and its layers into one stream; an empty payload is an absent layer.

    ``needs`` (per layer, a bit mask of earlier layers) defaults to the prefix chain, which is
    written as version 2; anything else, or an absent layer, as version 3.
    """
    lengths = [len(payload) for payload in layers]
    crcs = [zlib.crc32(payload) for payload in layers]
    head = _head(backend_id, preset_id, width, height, config_hash, lengths, crcs, needs)
    return head + b"".join(layers)


def _head(
    backend_id: int,
    preset_id: int,
    width: int,
    height: int,
    config_hash: bytes,
    lengths: list[int],
    crcs: list[int],
    needs: tuple[int, ...] | None,
) -> bytes:
    """The header ``pack`` writes for layers of these lengths and CRCs (length 0: absent)."""
    n = len(lengths)
    if not 1 <= n <= MAX_LAYERS:
        raise VCMError(f"a stream holds 1..{MAX_LAYERS} layers, got {n}")
    needs = prefix_needs(n) if needs is None else tuple(needs)
    if len(needs) != n or any(m >> i for i, m in enumerate(needs)):
        raise VCMError(f"bad layer needs {needs}: one mask per layer, earlier layers only")
    version = 2 if needs == prefix_needs(n) and all(lengths) else 3
    entry = _ENTRIES[version]
    table = bytearray()
    offset = header_size(n, version)
    for length, crc, mask in zip(lengths, crcs, needs, strict=True):
        table += entry.pack(*((offset, length, crc) + ((mask,) if version == 3 else ())))
        offset += length
    head = _FIXED.pack(
        MAGIC, version, backend_id, preset_id, n, width, height, config_hash
    ) + bytes(table)
    return head + _CRC.pack(zlib.crc32(head))


def parse_header(blob: bytes, max_pixels: int) -> Header:
    """Read and validate the header; raises VCMError saying what is wrong."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise VCMError(f"expected a bytes-like stream, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _FIXED.size:
        if not MAGIC.startswith(blob[:4]) or len(blob) == 0:
            raise VCMError("not a VCM stream: wrong magic bytes" if blob else "empty stream")
        raise TruncatedStream(f"truncated header: {len(blob)} bytes, need at least {_FIXED.size}")
    magic, version, backend_id, preset_id, n, width, height, chash = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise VCMError(f"not a VCM stream: wrong magic bytes {magic!r}")
    if version not in VERSIONS:
        hint = (
            "; it was written by an older vcm_plugin: re-encode the image"
            if (0 < version < min(VERSIONS))
            else ""
        )
        known = " and ".join(str(v) for v in VERSIONS)
        raise VCMError(f"unsupported stream version {version} (this reader knows {known}){hint}")
    if not 1 <= n <= MAX_LAYERS:
        raise CorruptStream(f"bad layer count {n} (must be 1..{MAX_LAYERS})")
    size = header_size(n, version)
    if len(blob) < size:
        raise TruncatedStream(f"truncated header: {len(blob)} bytes, the layer table needs {size}")
    (stored_crc,) = _CRC.unpack_from(blob, size - _CRC.size)
    if zlib.crc32(blob[: size - _CRC.size]) != stored_crc:
        raise CorruptStream("header CRC mismatch: the header is corrupt")
    if width < 1 or height < 1:
        raise CorruptStream(f"bad image size {width}x{height}")
    if width * height > max_pixels:
        raise VCMError(
            f"image size {width}x{height} exceeds the pixel limit {max_pixels} "
            "(raise max_pixels if this stream is trusted)"
        )
    entry = _ENTRIES[version]
    entries = [entry.unpack_from(blob, _FIXED.size + i * entry.size) for i in range(n)]
    expected = size
    for i, (offset, length, crc, *mask) in enumerate(entries):
        if offset != expected:
            raise CorruptStream(
                f"layer {i} starts at byte {offset}, expected {expected}: "
                "layers must be contiguous and in order"
            )
        if length == 0 and version == 2:
            raise CorruptStream(f"layer {i} has length 0")
        if length == 0 and crc != _EMPTY_CRC:
            raise CorruptStream(f"layer {i} is absent (length 0) but has CRC {crc:#x}")
        if mask and mask[0] >> i:
            raise CorruptStream(f"layer {i} needs layers at or after itself (mask {mask[0]:#x})")
        expected = offset + length
    offsets, lengths, crcs = (tuple(col) for col in zip(*(e[:3] for e in entries), strict=True))
    needs = tuple(e[3] for e in entries) if version == 3 else prefix_needs(n)
    return Header(
        backend_id, preset_id, width, height, chash, offsets, lengths, crcs, version, needs
    )


#: Bytes that always hold a complete header (the fixed part plus the largest layer table).
HEADER_PROBE = header_size(MAX_LAYERS, max(VERSIONS))
#: ``max_pixels`` for a reader that leaves the decompression-bomb check to whoever decodes.
NO_PIXEL_LIMIT = 1 << 62


class HeaderRead(NamedTuple):
    """A header read from the start of a file: the bytes read and what they say."""

    #: The bytes read: the header and possibly the start of layer 0.
    head: bytes
    header: Header


def read_header(f: BinaryIO, max_pixels: int = NO_PIXEL_LIMIT) -> HeaderRead:
    """Read and check a stream's header from a file object positioned at its start (one read
    of :data:`HEADER_PROBE` bytes). The pixel limit defaults to none: Pillow has its own
    decompression-bomb check, and ``Codec`` applies its own when it decodes."""
    head = f.read(HEADER_PROBE)
    return HeaderRead(head, parse_header(head, max_pixels))


def present_layers(blob: bytes, header: Header) -> list[bool]:
    """Per layer: are its bytes here (not cut off, not absent)? A corrupt one raises."""
    present = []
    for i in range(header.num_layers):
        end = header.offsets[i] + header.lengths[i]
        if header.lengths[i] == 0 or end > len(blob):
            present.append(False)
            continue
        if zlib.crc32(blob[header.offsets[i] : end]) != header.crcs[i]:
            raise CorruptStream(f"layer {i} CRC mismatch: the layer is corrupt")
        present.append(True)
    return present


def decodable_points(blob: bytes, header: Header) -> list[int]:
    """The operating points (layer counts) whose layers are all present, ascending."""
    present = present_layers(blob, header)
    points = [
        k
        for k in range(1, header.num_layers + 1)
        if all(present[i] for i in header.point_layers(k))
    ]
    if not points:
        if header.lengths[0] and not present[0]:
            raise TruncatedStream(
                f"stream truncated inside layer 0: {len(blob)} bytes, layer 0 ends at byte "
                f"{header.prefix_end(1)}"
            )
        raise VCMError("no operating point of this stream has all its layers")
    return points


def complete_layers(blob: bytes, header: Header) -> int:
    """How many leading layers are fully present; a corrupt present layer raises
    CorruptStream, a layer 0 cut short TruncatedStream."""
    present = present_layers(blob, header)
    if header.lengths[0] and not present[0]:
        raise TruncatedStream(
            f"stream truncated inside layer 0: {len(blob)} bytes, layer 0 ends at byte "
            f"{header.prefix_end(1)}"
        )
    return present.index(False) if False in present else len(present)


def stored_layers(blob: bytes, header: Header) -> int:
    """How many leading layers have all their bytes in ``blob``, an absent layer (length 0)
    counting as stored: where a byte prefix of the stream ends, in layers (the edge store
    appends uploads at that boundary). A corrupt present layer raises VCMError."""
    present = present_layers(blob, header)
    for i, length in enumerate(header.lengths):
        if length and not present[i]:
            return i
    return header.num_layers


def layer_payload(blob: bytes, header: Header, index: int) -> bytes:
    return blob[header.offsets[index] : header.offsets[index] + header.lengths[index]]


def truncate(blob: bytes, header: Header, layers: int) -> bytes:
    """A valid stream holding the first ``layers`` layers, with a rewritten header."""
    payloads = [layer_payload(blob, header, i) for i in range(layers)]
    return _repack(header, payloads, header.needs[:layers])


def view(blob: bytes, header: Header, layers: int) -> bytes:
    """A valid stream of operating point ``layers`` alone: its layers, every other absent (a
    point that is a prefix of the stream is just that prefix)."""
    head, keep = view_head(header, layers)
    return head + b"".join(layer_payload(blob, header, i) for i in keep)


def view_head(header: Header, layers: int) -> tuple[bytes, list[int]]:
    """``view(blob, header, layers)`` without the blob: its header (lengths and CRCs from
    ``header``) and the indices of the stored layers that follow it, in order. A server
    streams a view from these without holding the frame in memory; the bytes are the same."""
    keep = header.point_layers(layers)
    if keep == list(range(layers)):
        lengths, crcs, needs = header.lengths[:layers], header.crcs[:layers], header.needs[:layers]
    else:
        lengths = tuple(header.lengths[i] if i in keep else 0 for i in range(header.num_layers))
        crcs = tuple(header.crcs[i] if i in keep else 0 for i in range(header.num_layers))
        needs = header.needs
    head = _head(
        header.backend_id,
        header.preset_id,
        header.width,
        header.height,
        header.config_hash,
        list(lengths),
        list(crcs),
        needs,
    )
    return head, keep


def _repack(header: Header, payloads: list[bytes], needs: tuple[int, ...] | None) -> bytes:
    """A new stream of ``header``'s image and configuration around other layer payloads."""
    return pack(
        header.backend_id,
        header.preset_id,
        header.width,
        header.height,
        header.config_hash,
        payloads,
        needs,
    )
