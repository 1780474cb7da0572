"""The public Codec: encode once, decode any prefix of layers."""

from __future__ import annotations

import functools
import warnings

import numpy as np

from vcm_plugin.codec import container
from vcm_plugin.codec.backends import BACKEND_IDS, create
from vcm_plugin.codec.backends.base import LatentBackend
from vcm_plugin.codec.layers import (
    Geometry,
    LatentRefinement,
    PaletteSplits,
    SemanticPalette,
    Source,
    State,
    TextureResidual,
    semantic_image,
)
from vcm_plugin.codec.presets import PRESET_BY_ID, Preset, get_preset
from vcm_plugin.errors import VCMError

#: Default decompression-bomb guard, as Pillow's ``Image.MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 89_478_485
_BACKEND_NAMES = {v: k for k, v in BACKEND_IDS.items()}
#: Decoding works on the block-padded latent grid; images with both sides >= 16 never need
#: more than 4x their pixels there, so only absurdly thin images hit this bound.
_GRID_SLACK = 4


class TruncatedStreamWarning(UserWarning):
    """A stream ended inside a layer; the complete layers before it were decoded."""


@functools.cache
def _backend(name: str) -> LatentBackend:
    """Backends are stateless after loading, so one instance per process serves every Codec."""
    return create(name)


def _bricks(preset: Preset) -> list:
    p = preset
    return [
        SemanticPalette(p.coarse_entries, p.fine_entries, p.palette_step, p.semantic_step,
                        p.deadzone, p.index_penalty, p.content_classes),
        *([] if p.split_step is None else [PaletteSplits(p.split_step)]),
        *(LatentRefinement(step, p.deadzone) for step in p.refine_steps),
        *(TextureResidual(quality) for quality in p.texture_qualities),
    ]


def as_rgb(img) -> np.ndarray:
    """Validate an image: HxWx3 uint8 RGB, or HxW / HxWx1 grayscale (replicated to RGB).

    RGBA is refused rather than silently losing the alpha channel.
    """
    if not isinstance(img, np.ndarray):
        raise VCMError(f"expected an HxWx3 uint8 numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise VCMError(f"expected dtype uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        hint = " (drop or composite the alpha channel first)" if img.ndim == 3 and \
            img.shape[2] == 4 else ""
        raise VCMError(f"expected an HxWx3 RGB image, got shape {img.shape}{hint}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise VCMError(f"image has no pixels: shape {img.shape}")
    return img


class Codec:
    """Scalable codec bound to one preset for encoding; decodes streams of any known preset.

    ``max_pixels`` bounds the image size a stream may declare (decompression-bomb guard).
    """

    def __init__(self, preset: str = "default", max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.preset = get_preset(preset)
        self.max_pixels = int(max_pixels)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> Codec:
        return cls(name, **kwargs)

    def __repr__(self) -> str:
        return f"Codec(preset={self.preset.name!r}, max_pixels={self.max_pixels})"

    @property
    def num_layers(self) -> int:
        return self.preset.num_layers

    def encode(self, img: np.ndarray) -> bytes:
        """HxWx3 uint8 RGB -> one layered stream."""
        img = as_rgb(img)
        h, w = img.shape[:2]
        if h * w > self.max_pixels:
            raise VCMError(f"image {w}x{h} exceeds the pixel limit {self.max_pixels}")
        if max(h, w) > 0xFFFFFFFF:
            raise VCMError(f"image {w}x{h} too large for the container")
        backend = _backend(self.preset.backend)
        geometry = Geometry.of(w, h, self.preset.semantic_scale, backend.factor)
        semantic = semantic_image(img.astype(np.float64), geometry)
        latent = backend.encode(semantic)
        source = Source(img.astype(np.float64), semantic,
                        latent.reshape(latent.shape[0], -1).T.astype(np.float64))
        state = State(geometry, backend)
        payloads = []
        for brick in _bricks(self.preset):
            payloads.append(brick.encode(source, state) or b"\x00\x00\x00\x00")
        return container.pack(BACKEND_IDS[backend.name], self.preset.preset_id, w, h,
                              self._hash(self.preset, backend), payloads)

    @property
    def config_hash(self) -> str:
        """Hex hash of this preset's configuration and backend identity, as ``inspect``
        reports it for the streams this codec writes."""
        return self._hash(self.preset, _backend(self.preset.backend)).hex()

    @staticmethod
    def _hash(preset: Preset, backend: LatentBackend) -> bytes:
        return preset.config_hash(backend.identity())

    def _open(self, blob: bytes) -> tuple[container.Header, Preset]:
        header = container.parse_header(blob, self.max_pixels)
        preset = PRESET_BY_ID.get(header.preset_id)
        if preset is None:
            raise VCMError(f"unknown preset id {header.preset_id} in stream")
        if header.backend_id not in _BACKEND_NAMES:
            raise VCMError(f"unknown backend id {header.backend_id} in stream")
        if BACKEND_IDS.get(preset.backend) != header.backend_id:
            raise VCMError(f"backend id {header.backend_id} does not match preset "
                           f"'{preset.name}'")
        if header.num_layers > preset.num_layers:
            raise VCMError(f"stream declares {header.num_layers} layers; preset "
                           f"'{preset.name}' has {preset.num_layers}")
        return header, preset

    def decode(self, blob: bytes, layers: int | None = None) -> np.ndarray:
        """Decode the first ``layers`` layers (all present ones by default) -> HxWx3 uint8.

        A stream cut inside a layer decodes the complete layers before the cut and warns
        with ``TruncatedStreamWarning``; corrupt data raises VCMError.
        """
        header, preset = self._open(blob)
        blob = bytes(blob)
        present = container.complete_layers(blob, header)
        if layers is None:
            if present < header.num_layers:
                warnings.warn(f"stream truncated: decoded {present} of {header.num_layers} layers",
                              TruncatedStreamWarning, stacklevel=2)
            layers = present
        elif not isinstance(layers, (int, np.integer)) or layers < 1:
            raise VCMError(f"layers must be a positive integer, got {layers!r}")
        elif layers > present:
            raise VCMError(f"asked for {layers} layers but the stream has {present} complete "
                           f"layer(s) of {header.num_layers}")
        backend = _backend(preset.backend)
        if header.config_hash != self._hash(preset, backend):
            raise VCMError(f"stream was written by a different configuration of preset "
                           f"'{preset.name}' (config hash mismatch)")
        geometry = Geometry.of(header.width, header.height, preset.semantic_scale,
                               backend.factor)
        # The latent grid is padded to whole blocks of the half-size image, so a thin image
        # (W x 1) costs up to 16x its pixel count in latent positions and padded pixels.
        grid = geometry.positions * (backend.factor / preset.semantic_scale) ** 2
        if grid > _GRID_SLACK * self.max_pixels:
            raise VCMError(
                f"image size {header.width}x{header.height} needs a latent grid of "
                f"{int(grid)} pixels, over {_GRID_SLACK}x the pixel limit {self.max_pixels} "
                "(raise max_pixels if this stream is trusted)"
            )
        state = State(geometry, backend)
        for i, brick in enumerate(_bricks(preset)[:layers]):
            brick.decode(state, container.layer_payload(blob, header, i), i)
        return np.clip(np.round(state.image()), 0, 255).astype(np.uint8)

    def inspect(self, blob: bytes) -> dict:
        """Header facts without decoding pixels."""
        header, preset = self._open(blob)
        present = container.complete_layers(bytes(blob), header)
        return {
            "width": header.width,
            "height": header.height,
            "backend": _BACKEND_NAMES[header.backend_id],
            "preset": preset.name,
            "num_layers": header.num_layers,
            "complete_layers": present,
            "header_bytes": header.size,
            "layer_bytes": list(header.lengths),
            "layer_offsets": list(header.offsets),
            "total_bytes": header.prefix_end(header.num_layers),
            "config_hash": header.config_hash.hex(),
        }

    def truncate(self, blob: bytes, layers: int) -> bytes:
        """A valid stream of the first ``layers`` layers (no re-encoding)."""
        header, _ = self._open(blob)
        present = container.complete_layers(bytes(blob), header)
        if not isinstance(layers, (int, np.integer)) or not 1 <= layers <= present:
            raise VCMError(f"layers must be in 1..{present}, got {layers!r}")
        return container.truncate(bytes(blob), header, int(layers))
