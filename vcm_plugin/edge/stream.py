"""Upload validation and byte accounting on top of the codec's container.

Why a module: the server, the store and the metrics all need the same facts about a stream
prefix (where each layer ends, how many layers are whole); they come from the container's
layer table, never from re-parsing bytes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcm_plugin.codec import container
from vcm_plugin.codec.api import MAX_IMAGE_PIXELS, Codec
from vcm_plugin.errors import VCMError

#: Bytes that always hold a complete header (the fixed part plus the largest layer table).
HEADER_PROBE = container.header_size(container.MAX_LAYERS)


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
        return {"num_layers": self.num_layers, "stored_layers": self.stored_layers,
                "bytes": self.size, "complete": self.complete,
                "width": self.header.width, "height": self.header.height,
                "layer_ends": [self.end(k) for k in points],
                "point_layers": [self.header.point_layers(k) for k in points],
                "point_bytes": [self.header.point_bytes(k) for k in points]}


def read_header(probe: bytes) -> container.Header:
    """Parse the header from the first :data:`HEADER_PROBE` bytes (or fewer) of a stream."""
    return container.parse_header(probe, MAX_IMAGE_PIXELS)


def validate_stream(blob: bytes, codec: Codec | None = None) -> Layout:
    """Check an upload before it is stored: a known preset, intact header and layer CRCs, and
    whole layers only (a cut inside a layer or trailing bytes are refused). Raises VCMError."""
    codec = codec or Codec()
    blob = bytes(blob)
    info = codec.inspect(blob)  # magic, version, preset/backend, header CRC, layer CRCs
    header = container.parse_header(blob, codec.max_pixels)
    layers = int(info["complete_layers"])
    end = header.prefix_end(layers)
    if len(blob) > end:
        if layers == header.num_layers:
            raise VCMError(f"{len(blob) - end} unexpected bytes after the last layer "
                           f"(stream ends at byte {end})")
        raise VCMError(f"upload ends inside layer {layers}: {len(blob)} bytes, layer {layers} "
                       f"ends at byte {header.prefix_end(layers + 1)}; send whole layers")
    return Layout(header, layers)
