"""The layer bricks. Each brick codes one layer and speaks one signature:

``encode(source, state) -> payload`` codes the layer and moves ``state`` to what a decoder
will hold after reading it; ``decode(state, payload, layer)`` does the same from the stream.
Because the encoder advances the very state the decoder rebuilds, every layer is coded against
exactly what the receiver has.

Order in a stream: ``SemanticPalette`` (layer 0: coarse palette state, its index map and a
coarse latent residual), ``PaletteSplits`` (the reverse chain: every coarse entry split into
its fine children, with a correction per child), ``LatentRefinement`` layers (finer latent
residuals), then the texture layers: ``TextureLayer`` (the default preset's chain: the photo
in layered AVIF, each layer refining the one before), ``TexturePhoto`` (0.3: standalone AVIFs)
or ``TextureResidual`` (0.1 and ``fast``: the residual against everything before).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from vcm_plugin.codec import layered_avif
from vcm_plugin.codec.backends.base import LatentBackend
from vcm_plugin.codec.entropy import LayerReader, LayerWriter, laplace_scale, scale_to_code
from vcm_plugin.codec.palette import PaletteChain, build_chain
from vcm_plugin.codec.pseudo_labels import content_classes
from vcm_plugin.codec.threads import codec_threads
from vcm_plugin.errors import VCMError

MAX_PALETTE = 256
#: libavif threads per texture layer (``_write_avif``)
AVIF_THREADS = 1


class LayerBrick:
    """What every layer coder provides: one layer of a stream.

    The encoder advances the very state the decoder rebuilds, so every layer is coded against
    exactly what a receiver holds after the layers before it. A preset is a list of bricks,
    one per layer, in stream order (``codec.api._bricks``). The class attributes declare how
    the codec schedules a brick; each subclass sets the ones that hold for it.
    """

    #: coded against the decoded pixels of the layers before it, so a batch renders them first
    reads_pixels: ClassVar[bool] = False
    #: needs no earlier layer: the container records that, and a view fetches it alone
    standalone: ClassVar[bool] = False
    #: its payload comes from the photo alone (``encode_alone``), so the encoder can code it
    #: beside the generator when no later brick reads the state it would leave
    photo_alone: ClassVar[bool] = False

    def encode(self, src: Source, state: State) -> bytes:
        """Code this layer from the encoder's originals; leave ``state`` as a decoder will
        have it after reading the returned payload."""
        raise NotImplementedError

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        """Read this layer's payload (layer index ``layer``, for messages) into ``state``."""
        raise NotImplementedError

    def encode_alone(self, image: np.ndarray) -> bytes:
        """The payload from the photo alone (``photo_alone`` bricks only)."""
        raise NotImplementedError(f"{type(self).__name__} is not coded from the photo alone")

    def texture_chain(self) -> LayeredTexture | None:
        """The texture chain this layer belongs to, if any: it then needs exactly the chain's
        earlier layers, and one encode of the chain makes every one of them."""
        return None


@dataclass
class Geometry:
    """Sizes every layer derives from the header: full image, semantic image, latent grid."""

    width: int
    height: int
    semantic_width: int
    semantic_height: int
    factor: int

    @classmethod
    def of(cls, width: int, height: int, scale: float, factor: int) -> Geometry:
        return cls(
            width, height, max(1, round(width * scale)), max(1, round(height * scale)), factor
        )

    @property
    def latent_shape(self) -> tuple[int, int]:
        f = self.factor
        return -(-self.semantic_height // f), -(-self.semantic_width // f)

    @property
    def positions(self) -> int:
        h, w = self.latent_shape
        return h * w


@dataclass
class Source:
    """Encoder-side originals: never available to a decoder."""

    image: np.ndarray  # (H, W, 3) float64 in [0, 255]
    semantic: np.ndarray  # (h*f, w*f, 3) float32 in [0, 1], edge-padded
    vectors: np.ndarray  # (N, C) latent vectors
    chain: PaletteChain | None = None
    texture: list[bytes] | None = None  # the texture chain's pieces, coded once per image


@dataclass
class State:
    """What a decoder holds after the layers read so far."""

    geometry: Geometry
    backend: LatentBackend
    latent: np.ndarray | None = None  # (N, C) reconstruction
    coarse_index: np.ndarray | None = None
    fine_index: np.ndarray | None = None
    fine_parent: np.ndarray | None = None
    pixels: np.ndarray | None = None  # (H, W, 3) float64 in [0, 255]
    #: the texture chain's pieces read so far; its top layer is the picture (``image``)
    texture: list[bytes] | None = None
    texture_chain: LayeredTexture | None = None

    def set_coarse(self, index: np.ndarray, entries: int) -> None:
        """The coarse state; until splits arrive it is also the finest state known."""
        self.coarse_index = self.fine_index = index
        self.fine_parent = np.arange(entries)

    def image(self) -> np.ndarray:
        """Current reconstruction as float (H, W, 3) in [0, 255]."""
        if self.pixels is None:
            if self.texture:
                self.pixels = self.texture_chain.decode(self.texture, self.geometry)
            else:
                self.pixels = latent_to_pixels(self)
        return self.pixels


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bicubic resize of a float (H, W, 3) array."""
    if image.shape[:2] == (height, width):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
    with codec_threads():
        out = F.interpolate(
            t, size=(height, width), mode="bicubic", align_corners=False, antialias=True
        )
    return out[0].permute(1, 2, 0).numpy().astype(image.dtype)


def semantic_image(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Downscale to the semantic size and edge-pad to the latent grid."""
    small = resize(
        image.astype(np.float32) / 255.0, geometry.semantic_height, geometry.semantic_width
    )
    h, w = geometry.latent_shape
    f = geometry.factor
    pad = ((0, h * f - small.shape[0]), (0, w * f - small.shape[1]), (0, 0))
    return np.clip(np.pad(small, pad, mode="edge"), 0.0, 1.0)


def _latent_grid(state: State) -> np.ndarray:
    h, w = state.geometry.latent_shape
    return state.latent.T.reshape(-1, h, w).astype(np.float32)


def _full_size(state: State, small: np.ndarray) -> np.ndarray:
    g = state.geometry
    small = small[: g.semantic_height, : g.semantic_width]
    return resize(small.astype(np.float64), g.height, g.width) * 255.0


def latent_to_pixels(state: State) -> np.ndarray:
    return _full_size(state, state.backend.decode(_latent_grid(state)))


def render(states: Sequence[State], exact: bool = True) -> None:
    """Fill in the pixels of every state that has none, one generator batch per backend: the
    batched form of ``State.image`` (a GPU decodes equal shapes together). ``exact=False``
    for pixels no layer is coded against (a decoder's output): the generator may then use
    the caller's torch threads (``LatentBackend.decode_batch``)."""
    by_backend: dict[int, list[State]] = {}
    for state in states:
        if state.pixels is None and state.texture:
            state.image()  # a texture chain's picture: an AV1 decode, no generator
        elif state.pixels is None:
            by_backend.setdefault(id(state.backend), []).append(state)
    for group in by_backend.values():
        smalls = group[0].backend.decode_batch([_latent_grid(s) for s in group], exact=exact)
        for state, small in zip(group, smalls, strict=True):
            state.pixels = _full_size(state, small)


def deadzone_quantise(values: np.ndarray, step: float, deadzone: float) -> np.ndarray:
    """Uniform quantiser whose zero bin is widened by ``deadzone`` steps: cheap RDO."""
    mag = np.floor(np.abs(values) / step + 0.5 - deadzone)
    return (np.sign(values) * np.maximum(mag, 0)).astype(np.int32)


def _write_scales(writer: LayerWriter, mean_abs: np.ndarray) -> np.ndarray:
    """Mean magnitudes as side information, one log-coded byte each; returns the codes."""
    codes = scale_to_code(mean_abs)
    writer.uniform(codes, 256)
    return codes


def _read_scales(reader: LayerReader, count: int) -> np.ndarray:
    return reader.uniform(count, 256)


def _mean_abs(values: np.ndarray, axis=None) -> np.ndarray:
    return np.abs(values).mean(axis=axis) + 0.005


def _code_values(writer: LayerWriter, symbols: np.ndarray) -> None:
    """Small tables (palettes, corrections): per-column Laplace scale as side information."""
    scales = laplace_scale(_write_scales(writer, _mean_abs(symbols, axis=0)))
    writer.laplace(symbols, np.broadcast_to(scales, symbols.shape))


def _read_values(reader: LayerReader, rows: int, cols: int) -> np.ndarray:
    scales = laplace_scale(_read_scales(reader, cols))
    return reader.laplace(np.broadcast_to(scales, (rows, cols))).reshape(rows, cols)


def _index_prior(alphabet: int, left: int, top: int) -> np.ndarray:
    """Initial counts of one (left, top) context; 'alphabet' stands for 'no neighbour'.

    Built per context on first use rather than as a dense (alphabet+1)^2 x alphabet table: a
    hostile stream can declare 256 groups of 256 letters (129 MiB of table each). The values
    and float operations are those of the dense table, so coding is unchanged.
    """
    counts = np.full(alphabet, 0.4)
    if left < alphabet:
        counts[left] += 3.0
    if top < alphabet:
        counts[top] += 3.0
    return counts


class IndexMapCoder:
    """Index maps coded in raster order with adaptive counts conditioned on the already-decoded
    left and top neighbours (a coherent map costs a fraction of a bit per position)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def _walk(
        self, alphabets: np.ndarray, groups: np.ndarray, symbols: np.ndarray | None, code
    ) -> np.ndarray:
        """Shared raster walk. ``groups`` (per position) chooses the counts table, so maps
        whose alphabet differs per position (children of a coarse entry) share the logic;
        neighbours count as context only inside the same group."""
        h, w = self.shape
        out = np.zeros(h * w, dtype=np.int64)
        contexts: dict[tuple[int, int, int], np.ndarray] = {}
        for pos in range(h * w):
            size = int(alphabets[pos])
            if size <= 1:
                continue
            g = int(groups[pos])
            left = int(out[pos - 1]) if pos % w and groups[pos - 1] == g else size
            top = int(out[pos - w]) if pos >= w and groups[pos - w] == g else size
            counts = contexts.get((g, left, top))
            if counts is None:
                counts = contexts[g, left, top] = _index_prior(size, left, top)
            sym = code(counts, None if symbols is None else int(symbols[pos]))
            if not 0 <= sym < size:
                raise VCMError(f"index symbol {sym} outside its alphabet of {size}")
            out[pos] = sym
            counts[sym] += 1.0
        return out

    def encode(
        self, writer: LayerWriter, symbols: np.ndarray, alphabets: np.ndarray, groups: np.ndarray
    ) -> None:
        def code(p, s):
            writer.categorical(s, p)
            return s

        self._walk(alphabets, groups, symbols, code)

    def decode(self, reader: LayerReader, alphabets: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return self._walk(alphabets, groups, None, lambda p, _s: reader.categorical(p))


def _residual_magnitudes(symbols: np.ndarray, index: np.ndarray, entries: int):
    """Mean |symbol| factored as per-entry (relative) x per-channel: the palette doubles as
    an entropy model."""
    channel = _mean_abs(symbols, axis=0)
    rel = (np.abs(symbols) / channel).mean(axis=1)
    count = np.bincount(index, minlength=entries)
    entry = (np.bincount(index, weights=rel, minlength=entries) + 0.5) / (count + 0.5)
    return entry, channel


def _residual_scales(
    entry_codes: np.ndarray, channel_codes: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Laplace scale per (position, channel): log codes add where the means multiply
    (entry codes are relative, centred on code 64 = 1.0)."""
    return laplace_scale(entry_codes[index][:, None] + channel_codes[None, :] - 64)


def _write_residual(
    writer: LayerWriter, symbols: np.ndarray, index: np.ndarray, entries: int
) -> None:
    entry, channel = _residual_magnitudes(symbols, index, entries)
    scales = _residual_scales(_write_scales(writer, entry), _write_scales(writer, channel), index)
    writer.laplace(symbols, scales)


def _read_residual(reader: LayerReader, index: np.ndarray, entries: int, channels: int):
    entry = _read_scales(reader, entries)
    channel = _read_scales(reader, channels)
    return reader.laplace(_residual_scales(entry, channel, index)).reshape(len(index), channels)


@dataclass
class SemanticPalette(LayerBrick):
    """Layer 0: coarse palette state + its index map + a coarse latent residual."""

    coarse_entries: int
    fine_entries: int
    palette_step: float
    step: float
    deadzone: float
    index_penalty: float
    content_classes: int

    def encode(self, src: Source, state: State) -> bytes:
        writer = LayerWriter()
        g = state.geometry
        gray = src.semantic @ np.array([0.299, 0.587, 0.114])
        classes, _ = content_classes(src.vectors, gray, g.factor, self.content_classes)
        penalty = self.index_penalty * self.step**2
        src.chain = build_chain(
            src.vectors, classes, g.latent_shape, self.fine_entries, self.coarse_entries, penalty
        )
        coarse = src.chain.coarse_index
        k0 = src.chain.coarse_count
        palette = np.round(src.chain.coarse_means() / self.palette_step).astype(np.int32)
        writer.uniform(k0 - 1, MAX_PALETTE)
        _code_values(writer, palette)
        IndexMapCoder(g.latent_shape).encode(
            writer, coarse, np.full(g.positions, k0), np.zeros(g.positions)
        )
        prediction = palette[coarse] * self.palette_step
        symbols = deadzone_quantise(src.vectors - prediction, self.step, self.deadzone)
        _write_residual(writer, symbols, coarse, k0)
        state.set_coarse(coarse, k0)
        state.latent = prediction + symbols * self.step
        return writer.getvalue()

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        reader = LayerReader(payload, layer)
        g = state.geometry
        channels = state.backend.channels
        k0 = int(reader.uniform(1, MAX_PALETTE)[0]) + 1
        if k0 > g.positions:
            raise VCMError(f"layer 0: palette of {k0} entries for {g.positions} positions")
        palette = _read_values(reader, k0, channels)
        coarse = IndexMapCoder(g.latent_shape).decode(
            reader, np.full(g.positions, k0), np.zeros(g.positions)
        )
        residual = _read_residual(reader, coarse, k0, channels)
        state.set_coarse(coarse, k0)
        state.latent = palette[coarse] * self.palette_step + residual * self.step


@dataclass
class PaletteSplits(LayerBrick):
    """Reverse chain: split every coarse entry into its fine children (index bits per position
    plus one quantised correction vector per child)."""

    step: float

    def encode(self, src: Source, state: State) -> bytes:
        writer = LayerWriter()
        chain = src.chain
        k0 = chain.coarse_count
        children = np.bincount(chain.fine_parent, minlength=k0)
        writer.uniform(children - 1, MAX_PALETTE)
        first = np.concatenate([[0], np.cumsum(children)[:-1]])
        coarse = state.coarse_index
        local = chain.fine_index - first[coarse]
        IndexMapCoder(state.geometry.latent_shape).encode(writer, local, children[coarse], coarse)
        counts = np.bincount(chain.fine_index, minlength=int(children.sum()))
        error = np.zeros((int(children.sum()), src.vectors.shape[1]))
        np.add.at(error, chain.fine_index, src.vectors - state.latent)
        correction = np.round(error / np.maximum(counts, 1)[:, None] / self.step).astype(np.int32)
        _code_values(writer, correction)
        state.fine_index = chain.fine_index
        state.fine_parent = chain.fine_parent
        state.latent = state.latent + correction[chain.fine_index] * self.step
        return writer.getvalue()

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        reader = LayerReader(payload, layer)
        coarse = state.coarse_index
        k0 = int(coarse.max()) + 1
        children = reader.uniform(k0, MAX_PALETTE).astype(np.int64) + 1
        total = int(children.sum())  # at most k0 * MAX_PALETTE by the field's range
        first = np.concatenate([[0], np.cumsum(children)[:-1]])
        local = IndexMapCoder(state.geometry.latent_shape).decode(reader, children[coarse], coarse)
        fine = first[coarse] + local
        correction = _read_values(reader, total, state.backend.channels)
        state.fine_index = fine
        state.fine_parent = np.repeat(np.arange(k0), children)
        state.latent = state.latent + correction[fine] * self.step


@dataclass
class LatentRefinement(LayerBrick):
    """Finer latent residual, its entropy model conditioned on the fine palette entry."""

    step: float
    deadzone: float

    def encode(self, src: Source, state: State) -> bytes:
        writer = LayerWriter()
        entries = len(state.fine_parent)
        symbols = deadzone_quantise(src.vectors - state.latent, self.step, self.deadzone)
        _write_residual(writer, symbols, state.fine_index, entries)
        state.latent = state.latent + symbols * self.step
        return writer.getvalue()

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        entries = len(state.fine_parent)
        residual = _read_residual(
            LayerReader(payload, layer), state.fine_index, entries, state.backend.channels
        )
        state.latent = state.latent + residual * self.step


@dataclass
class TextureResidual(LayerBrick):
    """Full-resolution detail through a real codec: the residual against the current
    reconstruction, offset by 128, coded as AVIF (Pillow's libavif, bit-exact AV1 decoding).

    It replaced an 8x8-DCT residual coder with per-band Laplace models, which spent more bits
    for the same HaarPSI on Kodak (README, "How the codec works").
    """

    quality: int
    speed: int = 6
    reads_pixels = True

    def encode(self, src: Source, state: State) -> bytes:
        current = state.image()
        offset = np.clip(np.round(src.image - current) + 128, 0, 255).astype(np.uint8)
        payload = _write_avif(offset, self.quality, self.speed)
        self._apply(state, payload, layer=-1)
        return payload

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        self._apply(state, payload, layer)

    @staticmethod
    def _apply(state: State, payload: bytes, layer: int) -> None:
        residual = _read_avif(payload, state.geometry, layer) - 128.0
        state.pixels = state.image() + residual


def _write_avif(pixels: np.ndarray, quality: int, speed: int) -> bytes:
    """One texture layer's payload: (H, W, 3) uint8 through Pillow's libavif.

    One libavif thread: libaom's bytes depend on its thread count (Pillow's default is the
    machine's core count), so a fixed count keeps a stream the same on every machine; the
    encoder runs independent layers side by side instead (``Codec.encode_batch``).
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, format="AVIF", quality=quality, speed=speed, max_threads=AVIF_THREADS
    )
    return buffer.getvalue()


def _read_avif(payload: bytes, geometry: Geometry, layer: int) -> np.ndarray:
    """An AVIF layer payload as float (H, W, 3); VCMError when it is not one of this size."""
    try:
        with Image.open(io.BytesIO(payload), formats=["AVIF"]) as im:
            if im.size != (geometry.width, geometry.height):
                raise VCMError(
                    f"layer {layer}: texture is {im.size[0]}x{im.size[1]}, "
                    f"image is {geometry.width}x{geometry.height}"
                )
            return np.asarray(im.convert("RGB"), dtype=np.float64)
    except VCMError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad data
        raise VCMError(f"layer {layer}: texture data is malformed ({exc})") from None


@dataclass
class TexturePhoto(LayerBrick):
    """The photo itself at one AVIF quality, needing no other layer: a person's view is the
    header plus this layer, and analytics above the latent layers' reach read it too.

    Why not a residual against the generator decode (``TextureResidual``): on Kodak that cost
    +77.6 % HaarPSI BD-rate against AVIF alone, the photo itself after layer 0 +5.7 %
    (issue 15); the generator's prediction costs more than it saves.

    ``blur`` > 0 (an analytics texture): the encoder low-passes the photo (Gaussian, that many
    pixels) before AVIF. Detectors barely notice, AVIF spends far fewer bits on it: on
    coco-val2017 YOLOv5n kept 92 % of its mAP at 0.24 bpp where plain AVIF needs 0.34
    (README, "Operating points"). Decoding is the same; only the encoder knows the blur.
    """

    quality: int
    blur: float = 0.0
    speed: int = 6
    standalone = True
    photo_alone = True

    def encode(self, src: Source, state: State) -> bytes:
        payload = self.encode_alone(src.image)
        self.decode(state, payload, layer=-1)
        return payload

    def encode_alone(self, image: np.ndarray) -> bytes:
        """The payload from the photo alone, touching no state: the encoder runs these layers
        concurrently with the generator and each other."""
        photo = np.clip(np.round(image), 0, 255).astype(np.uint8)
        if self.blur > 0:
            photo = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(self.blur)))
        return _write_avif(photo, self.quality, self.speed)

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        state.pixels = _read_avif(payload, state.geometry, layer)


@dataclass(frozen=True)
class LayeredTexture:
    """The default preset's texture chain: the photo as one layered AVIF (``layered_avif``),
    one stream layer per AVIF layer, each coded against the reconstruction of the one before.
    Going up a layer costs only what it adds, and more layers never give a worse picture
    (README, "Stream layout", for the measured choice of this coder over the alternatives).

    4:4:4 (no chroma subsampling): on Kodak it beat 4:2:0 in every metric of the climb
    (PSNR, HaarPSI, SSIMULACRA2 BD against AVIF). libaom speed 6, one thread, as the 0.3
    standalone layers.
    """

    qualities: tuple[int, ...]
    speed: int = 6
    pixel_format: str = "444"

    def encode_alone(self, image: np.ndarray, first: np.ndarray | None = None) -> list[bytes]:
        """Every layer's payload from the photo alone (the encoder runs this beside the
        generator, ``Codec.encode_batch``). ``first``: the picture the first layer (the
        analytics point) codes instead of the photo (``Codec.encode``'s ``objects``)."""
        photo = np.clip(np.round(image), 0, 255).astype(np.uint8)
        return layered_avif.encode(
            photo, self.qualities, self.speed, self.pixel_format, first=first
        )

    def decode(self, pieces: list[bytes], geometry: Geometry) -> np.ndarray:
        """The picture of the last of ``pieces`` (the chain's first layers) as float."""
        pixels = layered_avif.decode(pieces, len(self.qualities), geometry.width, geometry.height)
        return pixels.astype(np.float64)


@dataclass
class TextureLayer(LayerBrick):
    """Layer ``index`` of a ``LayeredTexture`` chain: it needs the chain's layers before it and
    no latent layer (``codec.api._needs``), so a viewer's point is the header plus the chain up
    to it, and the analytics point (the chain's first layer) is one piece."""

    chain: LayeredTexture
    index: int
    photo_alone = True

    def texture_chain(self) -> LayeredTexture:
        return self.chain

    def encode(self, src: Source, state: State) -> bytes:
        if src.texture is None:
            src.texture = self.chain.encode_alone(src.image)
        payload = src.texture[self.index]
        self.decode(state, payload, layer=-1)
        return payload

    def encode_alone(self, image: np.ndarray) -> bytes:
        """This layer's payload from the photo alone (the whole chain is coded: prefer
        ``chain.encode_alone`` for several layers)."""
        return self.chain.encode_alone(image)[self.index]

    def decode(self, state: State, payload: bytes, layer: int) -> None:
        held = state.texture or []
        if len(held) != self.index or (held and state.texture_chain != self.chain):
            raise VCMError(f"layer {layer}: texture layer {self.index} without the ones before")
        state.texture = [*held, payload]
        state.texture_chain = self.chain
        state.pixels = None
