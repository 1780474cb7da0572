"""Upload validation and byte accounting on top of the codec's container.

Why a module: the server, the store and the metrics all need the same facts about a stream
prefix (where each layer ends, how many layers are whole); they come from the container's
layer table, never from re-parsing bytes here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.codec.streaminfo import StreamInfo
from vcm_plugin.errors import VCMError


@dataclass(frozen=True)
class Layout:
    """Where the layers of one stored stream prefix end."""

    header: container.Header
    stored_layers: int

    @property
    def num_layers(self) -> int:
        return self.header.num_layers

    @property
    def size(self) -> int:
        """Bytes stored: the header plus the first ``stored_layers`` layers."""
        return self.header.prefix_end(self.stored_layers)

    @property
    def complete(self) -> bool:
        return self.stored_layers == self.num_layers

    def end(self, layers: int) -> int:
        """Byte count of the first ``layers`` layers including the header."""
        return self.header.prefix_end(layers)

    def bytes_per_layer(self, start: int, stop: int) -> list[int]:
        """How many bytes of ``[start, stop)`` fall in each layer (the header counts as layer 0,
        since nobody can use layer 0 without it)."""
        out = []
        lo = 0
        for k in range(1, self.num_layers + 1):
            hi = self.end(k)
            out.append(max(0, min(stop, hi) - max(start, lo)))
            lo = hi
        return out

    def point_ranges(self, layers: int) -> list[tuple[int, int]]:
        """Byte ranges of the layers operating point ``layers`` reads (the header aside)."""
        h = self.header
        return [(h.offsets[i], h.offsets[i] + h.lengths[i]) for i in h.point_layers(layers)]

    def view_per_layer(self, layers: int) -> list[int]:
        """Bytes of a view of point ``layers`` in each layer (the header counted with the
        first layer read, as ``bytes_per_layer`` counts it with layer 0)."""
        h = self.header
        needed = h.point_layers(layers)
        out = [h.lengths[i] if i in needed else 0 for i in range(self.num_layers)]
        out[needed[0]] += h.point_bytes(layers) - sum(out)
        return out

    def describe(self) -> dict:
        points = range(1, self.num_layers + 1)
        return {
            "num_layers": self.num_layers,
            "stored_layers": self.stored_layers,
            "bytes": self.size,
            "complete": self.complete,
            "width": self.header.width,
            "height": self.header.height,
            "layer_ends": [self.end(k) for k in points],
            "point_layers": [self.header.point_layers(k) for k in points],
            "point_bytes": [self.header.point_bytes(k) for k in points],
        }


def validate_stream(blob: bytes, codec: Codec | None = None) -> Layout:
    """Check an upload before it is stored: a known preset, intact header and layer CRCs, and
    whole layers only (a cut inside a layer or trailing bytes are refused). Raises VCMError."""
    codec = codec or Codec()
    blob = bytes(blob)
    # magic, version, preset/backend, header CRC, layer CRCs
    return _whole_layers(codec.inspect(blob), blob)


def _whole_layers(info: StreamInfo, blob: bytes) -> Layout:
    """The layout of an inspected upload; VCMError unless it ends at a layer boundary (absent
    layers, as in the camera's view of the climb, count as stored)."""
    header, size = info.header, len(blob)
    layers = container.stored_layers(blob, header)
    end = header.prefix_end(layers)
    if size > end:
        if layers == header.num_layers:
            raise VCMError(
                f"{size - end} unexpected bytes after the last layer (stream ends at byte {end})"
            )
        raise VCMError(
            f"upload ends inside layer {layers}: {size} bytes, layer {layers} "
            f"ends at byte {header.prefix_end(layers + 1)}; send whole layers"
        )
    return Layout(header, layers)


#: Largest header + first layer an upload may carry: that layer is validated (and later
#: decoded) from memory, so it is bounded apart from the later layers, which stream to disk.
MAX_LAYER0_BYTES = 4 << 20


class StreamCheck:
    """Validate an upload as its bytes arrive, so only the header and the first layer with
    bytes (layer 0, or the analytics layer of a view of the climb) sit in memory.

    Header and that layer go through :func:`validate_stream` (preset, header CRC, its CRC);
    each later layer's CRC is computed incrementally and a bad one, a cut inside a layer or
    bytes after the last layer are refused. ``resume`` continues after a stored prefix (an
    append): its header + first layer bytes and its stored size.
    """

    def __init__(
        self,
        codec: Codec,
        resume: tuple[bytes, int] | None = None,
        max_layer0: int = MAX_LAYER0_BYTES,
    ) -> None:
        self.codec, self.max_layer0 = codec, max_layer0
        self.head = bytearray()
        self.header: container.Header | None = None
        self.pos = 0
        self.info: StreamInfo | None = None
        self._crc = 0
        if resume is not None:
            head, stored = resume
            self.head = bytearray(head)
            self._parse_head()
            self.pos = stored

    def _parse_head(self) -> None:
        if self.header is None:
            self.header = container.parse_header(bytes(self.head), self.codec.max_pixels)
            end1 = self.header.head_end()
            if end1 > self.max_layer0:
                raise VCMError(
                    f"header + first layer is {end1} bytes, over the limit of "
                    f"{self.max_layer0} bytes"
                )
        end1 = self.header.head_end()
        if len(self.head) >= end1:
            del self.head[end1:]
            info = self.codec.inspect(bytes(self.head))
            _whole_layers(info, bytes(self.head))
            self.info = info

    def _head_wanted(self) -> int:
        """Bytes of ``head`` needed for the next parsing step."""
        fixed = container._FIXED.size  # magic .. config hash: enough to read version, n
        if self.header is not None:
            return self.header.head_end()
        if len(self.head) < fixed:
            return fixed
        version, n = self.head[4], self.head[7]
        try:
            return max(fixed, container.header_size(n, version))
        except KeyError:  # unknown version: parse_header says so
            return fixed

    def feed(self, data: bytes) -> None:
        """The next bytes of the upload; raises VCMError as soon as they are wrong."""
        view = memoryview(data)
        while self.info is None and view:  # still collecting header + first layer
            want = self._head_wanted()
            take = max(0, want - len(self.head))
            self.head += view[:take]
            self.pos += min(take, len(view))
            view = view[take:]
            if len(self.head) >= want and (self.header is not None or want == self._head_wanted()):
                self._parse_head()
        if view:
            self._layers(view)

    def _layers(self, view: memoryview) -> None:
        h = self.header
        assert h is not None
        end = h.prefix_end(h.num_layers)
        while view:
            if self.pos >= end:
                raise VCMError(f"unexpected bytes after the last layer (stream ends at byte {end})")
            i = next(
                i
                for i in range(h.num_layers)
                if h.offsets[i] <= self.pos < h.offsets[i] + h.lengths[i]
            )
            stop = h.offsets[i] + h.lengths[i]
            part = view[: stop - self.pos]
            self._crc = zlib.crc32(part, self._crc)
            self.pos += len(part)
            view = view[len(part) :]
            if self.pos == stop:
                if self._crc != h.crcs[i]:
                    raise VCMError(f"layer {i} CRC mismatch: the layer is corrupt")
                self._crc = 0

    def finish(self) -> Layout:
        """The stored layout once every byte is in; raises VCMError for a cut upload."""
        if self.info is None:
            if self.header is None and self.head:
                self.header = container.parse_header(bytes(self.head), self.codec.max_pixels)
            validate_stream(bytes(self.head), self.codec)  # says what is missing
            raise VCMError("upload ends inside layer 0")  # not reached: the line above raises
        h = self.header
        assert h is not None
        layers = max(k for k in range(1, h.num_layers + 1) if h.prefix_end(k) <= self.pos)
        if self.pos != h.prefix_end(layers):
            raise VCMError(
                f"upload ends inside layer {layers}: {self.pos} bytes, layer "
                f"{layers} ends at byte {h.prefix_end(layers + 1)}; send whole "
                "layers"
            )
        return Layout(h, layers)
