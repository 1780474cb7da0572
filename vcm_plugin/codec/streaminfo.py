"""What ``Codec.inspect`` reports about a stream: header facts, no pixels decoded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vcm_plugin.codec.container import Header

#: Layer roles (``StreamInfo.layer_roles``) decoded by the latent backend: a point holding one
#: runs the generator's decoder (``tae``), the costly decode.
LATENT_ROLES = frozenset({"semantic", "splits", "refinement"})


@dataclass(frozen=True)
class StreamInfo:
    """Facts about one stream from its header and layer CRCs (``Codec.inspect``).

    Operating point ``k`` (1-based) is layer ``k - 1`` plus the earlier layers it needs; lists
    indexed by point hold point ``k`` at index ``k - 1``. ``as_dict()`` is the JSON object
    ``vcm info`` prints; ``info["width"]`` still reads a field by name, for code written when
    ``inspect`` returned that dict.
    """

    #: Image size in pixels.
    width: int
    height: int
    #: Name of the latent backend that wrote the stream (``"tae"``, ``"dct"``).
    backend: str
    #: Name of the preset that wrote the stream.
    preset: str
    #: Container version (2: every layer needs all before it; 3: per-layer needs).
    version: int
    #: Layers the header declares.
    num_layers: int
    #: Leading layers whose bytes are all here with a good CRC (fewer than ``num_layers`` for a
    #: cut or viewed stream).
    complete_layers: int
    #: Operating points whose layers are all present, ascending.
    decodable_points: list[int]
    #: Bytes before the first layer payload.
    header_bytes: int
    #: Per layer: its payload size (0: absent) and its offset from the start of the stream.
    layer_bytes: list[int]
    layer_offsets: list[int]
    #: Per layer, what it carries: ``semantic``, ``splits``, ``refinement``,
    #: ``texture-analytics``, ``texture`` or ``texture-residual``.
    layer_roles: list[str]
    #: Per operating point, the indices of the layers it decodes.
    point_layers: list[list[int]]
    #: Per operating point, what a reader fetches for it (``Codec.view``'s stream size).
    point_bytes: list[int]
    #: The preset's analytics operating point, capped at ``num_layers``.
    analytics_point: int
    #: Operating points meant for a person (texture layers).
    viewer_points: list[int]
    #: Size of the whole stream as the header declares it.
    total_bytes: int
    #: Hex of the preset configuration hash the stream was written with.
    config_hash: str
    #: The parsed container header (offsets, lengths, CRCs, needs), for byte-range readers;
    #: not part of ``as_dict()``.
    header: Header = dataclasses.field(repr=False, compare=False, kw_only=True)

    @property
    def latent_points(self) -> list[int]:
        """Decodable points whose decode runs the latent backend (``LATENT_ROLES``): in ``tae``
        the points below the texture chain, each a TAEF2 decode (~0.2 s at 640x480 on a CPU)
        where a texture point is an AV1 decode (ms)."""
        return [
            k
            for k in self.decodable_points
            if any(self.layer_roles[i] in LATENT_ROLES for i in self.point_layers[k - 1])
        ]

    def as_dict(self) -> dict[str, Any]:
        """The JSON-serialisable facts, in field order (what ``vcm info`` prints)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "header"
        }

    def __getitem__(self, name: str) -> Any:
        """``info["num_layers"]``: a field by name (``inspect`` used to return a dict)."""
        if name == "header" or name not in _FIELDS:
            raise KeyError(name)
        return getattr(self, name)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


_FIELDS = frozenset(f.name for f in dataclasses.fields(StreamInfo))
