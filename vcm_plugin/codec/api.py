"""The public Codec: encode once, decode any prefix of layers."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, overload

import numpy as np
import torch

from vcm_plugin.codec import container
from vcm_plugin.codec.backends import BACKEND_IDS, create
from vcm_plugin.codec.backends.base import LatentBackend
from vcm_plugin.codec.layers import (
    Geometry,
    LatentRefinement,
    LayerBrick,
    LayeredTexture,
    PaletteSplits,
    SemanticPalette,
    Source,
    State,
    TextureLayer,
    TexturePhoto,
    TextureResidual,
    render,
    semantic_image,
)
from vcm_plugin.codec.presets import (
    ANALYTICS,
    DEFAULT_PRESET,
    PRESET_BY_ID,
    Preset,
    get_preset,
)
from vcm_plugin.codec.roi import Roi, focus, object_region
from vcm_plugin.codec.streaminfo import StreamInfo
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
def _backend(name: str, device: str = "cpu") -> LatentBackend:
    """Backends are stateless after loading, so one instance per process and device serves
    every Codec."""
    return create(name, device)


def resolve_device(device: str) -> str:
    """``"auto"``: CUDA when a GPU is usable here, else the CPU; ``"cpu"``; ``"cuda[:N]"``.

    A DataLoader worker forked from a process that already uses CUDA cannot use it, so
    ``"auto"`` picks the CPU there rather than failing inside the worker.
    """
    if device == "auto":
        usable = torch.cuda.is_available() and not torch.cuda._is_in_bad_fork()
        return "cuda" if usable else "cpu"
    if device == "cpu":
        return device
    if isinstance(device, str) and device.split(":")[0] == "cuda":
        if not torch.cuda.is_available():
            raise VCMError(f"device {device!r} asked for, but torch sees no CUDA device here")
        try:
            return str(torch.device(device))
        except RuntimeError:
            raise VCMError(f"bad device {device!r}") from None
    raise VCMError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def _bricks(preset: Preset) -> list[LayerBrick]:
    """The preset's layer coders, one per layer, in stream order."""
    p = preset
    if p.texture_coding == "layered":
        chain = LayeredTexture(p.texture_qualities)
        textures = [TextureLayer(chain, i) for i in range(len(p.texture_qualities))]
    else:
        texture = TexturePhoto if p.texture_coding == "photo" else TextureResidual
        textures = [texture(quality) for quality in p.texture_qualities]
    return [
        SemanticPalette(
            p.coarse_entries,
            p.fine_entries,
            p.palette_step,
            p.semantic_step,
            p.deadzone,
            p.index_penalty,
            p.content_classes,
        ),
        *([] if p.split_step is None else [PaletteSplits(p.split_step)]),
        *(LatentRefinement(step, p.deadzone) for step in p.refine_steps),
        *(TexturePhoto(quality, blur) for quality, blur in p.analytics_textures),
        *textures,
    ]


def _needs(bricks: Sequence[LayerBrick]) -> tuple[int, ...]:
    """Per layer, the bit mask of the earlier layers it is coded against: none for a
    standalone layer, the chain's earlier layers for a texture chain's layer, else all."""
    needs = []
    for i, brick in enumerate(bricks):
        chain = brick.texture_chain()
        if chain is not None:
            earlier = (j for j in range(i) if bricks[j].texture_chain() is chain)
            needs.append(sum(1 << j for j in earlier))
        else:
            needs.append(0 if brick.standalone else (1 << i) - 1)
    return tuple(needs)


@functools.cache
def _preset_needs(preset: Preset) -> tuple[int, ...]:
    """``_needs`` of the preset's bricks, once per preset: every stream opened checks it."""
    return _needs(_bricks(preset))


#: A photo-alone encode: ``job(photo, first=None)`` -> payloads in stream order; ``first`` is
#: the picture a texture chain's first layer codes instead of the photo (``objects``).
PhotoJob = Callable[..., list[bytes]]


def _photo_jobs(bricks: Sequence[LayerBrick]) -> list[PhotoJob]:
    """The encodes of trailing photo-alone bricks, one per coder: a texture chain's layers come
    from one layered encode, a standalone layer from its own. Each job returns its payloads in
    stream order."""
    jobs: list[PhotoJob] = []
    chains: list[LayeredTexture] = []
    for brick in bricks:
        chain = brick.texture_chain()
        if chain is None:
            jobs.append(lambda img, first=None, b=brick: [b.encode_alone(img)])
        elif not any(chain is seen for seen in chains):  # one layered encode per chain
            chains.append(chain)
            jobs.append(chain.encode_alone)
    return jobs


def _alone_from(bricks: Sequence[LayerBrick]) -> int:
    """Index of the first of the trailing bricks that encode from the photo alone
    (``encode_alone``): no later brick reads the encoder state they would leave."""
    start = len(bricks)
    while start > 0 and bricks[start - 1].photo_alone:
        start -= 1
    return start


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
        hint = (
            " (drop or composite the alpha channel first)"
            if img.ndim == 3 and img.shape[2] == 4
            else ""
        )
        raise VCMError(f"expected an HxWx3 RGB image, got shape {img.shape}{hint}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise VCMError(f"image has no pixels: shape {img.shape}")
    return img


class Codec:
    """Scalable codec bound to one preset for encoding; decodes streams of any known preset.

    ``max_pixels`` bounds the image size a stream may declare (decompression-bomb guard).
    ``device`` is where the generator networks run (``"auto"``: CUDA when present); the rest
    (quantisation, entropy coding, resizing) runs on the CPU, so a stream written on a GPU
    carries symbols a CPU decodes exactly, and pixels differ between devices only by the
    networks' float rounding (README, Assumptions).
    """

    def __init__(
        self, preset: str = DEFAULT_PRESET, max_pixels: int = MAX_IMAGE_PIXELS, device: str = "auto"
    ) -> None:
        self.preset = get_preset(preset)
        self.max_pixels = int(max_pixels)
        resolve_device(device)  # refuse a bad choice now, not at the first encode
        self._device = device

    @property
    def device(self) -> str:
        """Resolved in the process that uses the codec: a Codec built where CUDA works and
        handed to a forked DataLoader worker runs on the CPU there instead of failing."""
        return resolve_device(self._device)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> Codec:
        return cls(name, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Codec(preset={self.preset.name!r}, max_pixels={self.max_pixels}, "
            f"device={self.device!r})"
        )

    @property
    def num_layers(self) -> int:
        return self.preset.num_layers

    def _backend_of(self, preset: Preset) -> LatentBackend:
        return _backend(preset.backend, self.device)

    def _check_image(self, img: np.ndarray) -> np.ndarray:
        img = as_rgb(img)
        h, w = img.shape[:2]
        if h * w > self.max_pixels:
            raise VCMError(f"image {w}x{h} exceeds the pixel limit {self.max_pixels}")
        if max(h, w) > 0xFFFFFFFF:
            raise VCMError(f"image {w}x{h} too large for the container")
        return img

    def encode(self, img: np.ndarray, roi: Roi | None = None, objects: Roi | None = None) -> bytes:
        """HxWx3 uint8 RGB -> one layered stream. ``roi`` (an HxW mask or a list of
        ``(x0, y0, x1, y1)`` boxes): spend each layer's bits inside the region. ``objects``
        (the same kinds; e.g. a detector's boxes on the photo): the analytics point spends its
        bits on them and the viewer points code the whole photo (a texture chain's preset,
        ``tae``). Both: ``vcm_plugin.codec.roi``; decoders need nothing to read such a
        stream."""
        return self.encode_batch(
            [img], None if roi is None else [roi], None if objects is None else [objects]
        )[0]

    def encode_batch(
        self,
        images: Sequence[np.ndarray],
        rois: Sequence[Roi | None] | None = None,
        objects: Sequence[Roi | None] | None = None,
    ) -> list[bytes]:
        """Streams of several images, the generator run once per batch of equal sizes (on a
        GPU; on the CPU image by image, so each stream equals ``encode``'s). ``rois`` and
        ``objects``: one region (or None) per image, as ``encode``'s."""
        images = [self._check_image(img) for img in images]
        if rois is not None:
            if len(rois) != len(images):
                raise VCMError(f"{len(rois)} rois for {len(images)} images")
            images = [
                img if roi is None else focus(img, roi)
                for img, roi in zip(images, rois, strict=True)
            ]
        firsts: list[np.ndarray | None] = [None] * len(images)
        if objects is not None:
            if len(objects) != len(images):
                raise VCMError(f"{len(objects)} object lists for {len(images)} images")
            if self.preset.texture_coding != "layered":
                raise VCMError(
                    f"objects= needs a preset whose analytics point is a texture chain's first "
                    f"layer (tae); {self.preset.name!r} has none"
                )
            firsts = [
                None if obj is None else focus(img, object_region(obj, *img.shape[:2]))
                for img, obj in zip(images, objects, strict=True)
            ]
        backend = self._backend_of(self.preset)
        geometries = [
            Geometry.of(img.shape[1], img.shape[0], self.preset.semantic_scale, backend.factor)
            for img in images
        ]
        originals = [img.astype(np.float64) for img in images]
        semantics = [semantic_image(img, g) for img, g in zip(originals, geometries, strict=True)]
        bricks = _bricks(self.preset)
        tail = _alone_from(bricks)
        photo_jobs = _photo_jobs(bricks[tail:])
        jobs = len(images) * len(photo_jobs)
        with ThreadPoolExecutor(max(1, min(jobs, torch.get_num_threads()))) as pool:
            # the trailing layers that need only the photo (AVIF, GIL released) run beside
            # the generator and each other (tae's encode time: README, Speed)
            alone = [
                [pool.submit(job, img, first) for job in photo_jobs]
                for img, first in zip(images, firsts, strict=True)
            ]
            latents = backend.encode_batch(semantics)
            sources = [
                Source(img, sem, z.reshape(z.shape[0], -1).T.astype(np.float64))
                for img, sem, z in zip(originals, semantics, latents, strict=True)
            ]
            states = [State(g, backend) for g in geometries]
            payloads: list[list[bytes]] = [[] for _ in images]
            for brick in bricks[:tail]:
                if brick.reads_pixels:
                    render(states)
                for source, state, out in zip(sources, states, payloads, strict=True):
                    out.append(brick.encode(source, state) or b"\x00\x00\x00\x00")
            for out, futures in zip(payloads, alone, strict=True):
                for future in futures:
                    out.extend(future.result())
        config_hash = self._hash(self.preset, backend)
        return [
            container.pack(
                BACKEND_IDS[backend.name],
                self.preset.preset_id,
                g.width,
                g.height,
                config_hash,
                out,
                _needs(bricks),
            )
            for g, out in zip(geometries, payloads, strict=True)
        ]

    @property
    def config_hash(self) -> str:
        """Hex hash of this preset's configuration and backend identity, as ``inspect``
        reports it for the streams this codec writes."""
        return self._hash(self.preset, self._backend_of(self.preset)).hex()

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
            raise VCMError(f"backend id {header.backend_id} does not match preset '{preset.name}'")
        if header.num_layers > preset.num_layers:
            raise VCMError(
                f"stream declares {header.num_layers} layers; preset "
                f"'{preset.name}' has {preset.num_layers}"
            )
        # every door (decode, inspect, truncate, view) refuses the same streams: a truncate
        # that dropped the mismatched layers would hand on a stream decode had refused
        if header.needs != _preset_needs(preset)[: header.num_layers]:
            raise VCMError(f"layer needs {header.needs} do not match preset '{preset.name}'")
        return header, preset

    def decode(self, blob: bytes, layers: int | str | None = None) -> np.ndarray:
        """Decode operating point ``layers`` (the highest whose layers are present by default)
        -> HxWx3 uint8. Point k is layer k - 1 and the layers it needs (``inspect``'s
        ``point_layers``): the first k layers in a version-2 stream. ``"analytics"``: the
        preset's analytics point (``inspect().analytics_point``), or the highest point below
        it that the stream holds.

        A stream cut inside a layer decodes the highest complete point and warns with
        ``TruncatedStreamWarning``; corrupt data raises VCMError.
        """
        return self._decode_many([blob], layers, stacklevel=3)[0]

    def decode_batch(
        self, blobs: Sequence[bytes], layers: int | str | None = None
    ) -> list[np.ndarray]:
        """``decode`` of several streams, the generator run once per batch of equal sizes (on
        a GPU; on the CPU stream by stream, so each image equals ``decode``'s)."""
        return self._decode_many(blobs, layers, stacklevel=3)

    def _decode_many(
        self, blobs: Sequence[bytes], layers: int | str | None, stacklevel: int
    ) -> list[np.ndarray]:
        jobs = [self._start_decode(blob, layers, stacklevel + 1) for blob in blobs]
        for step in range(max((len(steps) for *_, steps in jobs), default=0)):
            active = [
                (state, blob, header, steps[step])
                for state, blob, header, steps in jobs
                if step < len(steps)
            ]
            if any(brick.reads_pixels for *_, (_, brick) in active):
                render([state for state, *_ in active])
            for state, blob, header, (index, brick) in active:
                brick.decode(state, container.layer_payload(blob, header, index), index)
        render([state for state, *_ in jobs], exact=False)  # the output: nothing codes on it
        return [np.clip(np.round(state.image()), 0, 255).astype(np.uint8) for state, *_ in jobs]

    def _start_decode(self, blob: bytes, layers: int | str | None, stacklevel: int):
        """Validate one stream; its empty state and the (index, brick) steps of the point."""
        header, preset = self._open(blob)
        blob = bytes(blob)
        points = container.decodable_points(blob, header)
        layers = resolve_point(layers, header, points, clamp=False)
        if layers is None:
            if len(blob) < header.prefix_end(header.num_layers):
                warnings.warn(
                    f"stream truncated: decoded {points[-1]} of {header.num_layers} layers",
                    TruncatedStreamWarning,
                    stacklevel=stacklevel,
                )
            count = points[-1]
        elif not isinstance(layers, (int, np.integer)) or layers < 1:
            raise VCMError(f"layers must be a positive integer, got {layers!r}")
        elif layers not in points:
            complete = container.complete_layers(blob, header)
            others = (
                ""
                if points == list(range(1, complete + 1))
                else (f" (decodable operating points: {_ranges(points)})")
            )
            raise VCMError(
                f"asked for {layers} layers but the stream has {complete} complete "
                f"layer(s) of {header.num_layers}{others}"
            )
        else:
            count = int(layers)
        backend = self._backend_of(preset)
        if header.config_hash != self._hash(preset, backend):
            raise VCMError(
                f"stream was written by a different configuration of preset "
                f"'{preset.name}' (config hash mismatch)"
            )
        geometry = Geometry.of(header.width, header.height, preset.semantic_scale, backend.factor)
        # The latent grid is padded to whole blocks of the half-size image, so a thin image
        # (W x 1) costs up to 16x its pixel count in latent positions and padded pixels.
        grid = geometry.positions * (backend.factor / preset.semantic_scale) ** 2
        if grid > _GRID_SLACK * self.max_pixels:
            raise VCMError(
                f"image size {header.width}x{header.height} needs a latent grid of "
                f"{int(grid)} pixels, over {_GRID_SLACK}x the pixel limit {self.max_pixels} "
                "(raise max_pixels if this stream is trusted)"
            )
        bricks = _bricks(preset)
        steps = [(i, bricks[i]) for i in header.point_layers(count)]
        return State(geometry, backend), blob, header, steps

    def inspect(self, blob: bytes) -> StreamInfo:
        """Header facts without decoding pixels (``StreamInfo``), including which layers make
        each operating point (``point_layers``) and the bytes a reader fetches for it
        (``point_bytes``). Checks the header and the CRC of every layer present."""
        header, preset = self._open(blob)
        blob = bytes(blob)
        present = container.complete_layers(blob, header)
        bricks = _bricks(preset)[: header.num_layers]
        points = range(1, header.num_layers + 1)
        return StreamInfo(
            width=header.width,
            height=header.height,
            backend=_BACKEND_NAMES[header.backend_id],
            preset=preset.name,
            version=header.version,
            num_layers=header.num_layers,
            complete_layers=present,
            decodable_points=container.decodable_points(blob, header),
            header_bytes=header.size,
            layer_bytes=list(header.lengths),
            layer_offsets=list(header.offsets),
            layer_roles=[_role(b) for b in bricks],
            point_layers=[header.point_layers(k) for k in points],
            point_bytes=[header.point_bytes(k) for k in points],
            analytics_point=min(preset.analytics_point, header.num_layers),
            viewer_points=[k for k, b in enumerate(bricks, 1) if _role(b) in _VIEWER_ROLES],
            total_bytes=header.prefix_end(header.num_layers),
            config_hash=header.config_hash.hex(),
            header=header,
        )

    def truncate(
        self, blob: bytes, layers: int | str | None = None, *, max_bytes: int | None = None
    ) -> bytes:
        """A valid stream of the first ``layers`` layers (no re-encoding); it holds every
        operating point up to ``layers``. ``max_bytes`` instead: the longest such prefix
        that fits (rate control for a link or a store with a byte budget)."""
        header, preset = self._open(blob)
        present = container.complete_layers(bytes(blob), header)
        if present == 0:
            raise VCMError(
                "the stream's layer 0 is absent (a view of a texture point): truncate keeps "
                "leading layers; use view() for its points"
            )
        layers = resolve_point(layers, header, range(1, present + 1), clamp=False)
        if max_bytes is not None:
            if layers is not None:
                raise VCMError("give layers or max_bytes, not both")
            layers = _largest_within(
                {k: len(container.truncate(bytes(blob), header, k)) for k in range(1, present + 1)},
                max_bytes,
            )
        if not isinstance(layers, (int, np.integer)) or not 1 <= layers <= present:
            raise VCMError(f"layers must be in 1..{present}, got {layers!r}")
        return container.truncate(bytes(blob), header, int(layers))

    def view(
        self, blob: bytes, layers: int | str | None = None, *, max_bytes: int | None = None
    ) -> bytes:
        """A valid stream of operating point ``layers`` alone: the header and the layers it
        needs (``inspect().point_layers``), every other layer absent. For a texture point
        of the generator preset that is the texture chain up to it: what a viewer fetches.
        ``max_bytes`` instead: the highest operating point whose view fits."""
        header, preset = self._open(blob)
        points = container.decodable_points(bytes(blob), header)
        layers = resolve_point(layers, header, points, clamp=False)
        if max_bytes is not None:
            if layers is not None:
                raise VCMError("give layers or max_bytes, not both")
            layers = _largest_within(
                {k: len(container.view(bytes(blob), header, k)) for k in points}, max_bytes
            )
        if not isinstance(layers, (int, np.integer)) or layers not in points:
            raise VCMError(
                f"layers must be one of the stream's operating points "
                f"{_ranges(points)}, got {layers!r}"
            )
        return container.view(bytes(blob), header, int(layers))

    def uplink(self, blob: bytes, max_bytes: int | None = None) -> bytes:
        """The stream a camera sends for ``blob`` (``vcm edge push``): the view of its top
        point, the climb, when that holds the analytics point (a nested stream: ``tae``'s
        texture chain, latent layers absent) and ``max_bytes`` (if given) holds the analytics
        point's prefix of it; else the whole stream, whose cheap latent points come first."""
        info = self.inspect(blob)
        climb = self.view(blob, info.decodable_points[-1])
        header = container.parse_header(climb, self.max_pixels)
        points = container.decodable_points(climb, header)
        if info.analytics_point not in points:
            return bytes(blob)
        if max_bytes is None or header.prefix_end(self.first_upload(climb)) <= max_bytes:
            return climb
        return bytes(blob)

    def first_upload(self, stream: bytes, max_bytes: int | None = None) -> int:
        """Layers of the first upload of ``stream`` (what ``uplink`` returned): through the
        analytics point's last layer, or with ``max_bytes`` through the highest point whose
        byte prefix fits (the budget wins over the analytics point). Uploads are byte prefixes
        whose header lists every layer, so the rest can be appended."""
        header = container.parse_header(stream, self.max_pixels)
        points = container.decodable_points(stream, header)
        ends = {k: max(header.point_layers(k)) + 1 for k in points}
        if max_bytes is None:
            return ends[resolve_point(ANALYTICS, header, points)]
        fits = [k for k in points if header.prefix_end(ends[k]) <= max_bytes]
        if not fits:
            smallest = min(header.prefix_end(n) for n in ends.values())
            raise VCMError(
                f"--max-bytes {max_bytes} is below the frame's smallest operating point "
                f"({smallest} bytes with the header): nothing smaller decodes"
            )
        return ends[max(fits)]


@overload
def resolve_point(
    layers: int | str | None,
    header: container.Header,
    points: Sequence[int] | None = None,
    *,
    clamp: Literal[True] = True,
) -> int: ...
@overload
def resolve_point(
    layers: int | str | None,
    header: container.Header,
    points: Sequence[int] | None = None,
    *,
    clamp: Literal[False],
) -> Any: ...
def resolve_point(layers, header, points=None, *, clamp=True):
    """The operating point ``layers`` names for a stream with this header: the one rule for
    ``"analytics"`` everywhere (the Codec's methods, file and shard readers, the Pillow
    plugin).

    ``"analytics"``: the stream's preset's analytics point, or the highest point below it among
    ``points`` (default: every point the header declares; a stream cut or viewed to fewer
    layers passes the points it holds); any other string is refused. ``clamp`` (a reader
    choosing what to fetch from the header alone): ``None`` is the highest point and ``k`` at
    most the stream's layer count. ``clamp=False`` (callers that check counts themselves):
    ``None`` and counts pass unchanged.
    """
    if isinstance(layers, str):
        if layers != ANALYTICS:
            raise VCMError(f"layers must be a positive integer or {ANALYTICS!r}, got {layers!r}")
        preset = PRESET_BY_ID.get(header.preset_id)
        if preset is None:
            raise VCMError(f"unknown preset id {header.preset_id} in stream")
        below = [
            k
            for k in (range(1, header.num_layers + 1) if points is None else points)
            if k <= preset.analytics_point
        ]
        if not below:
            raise VCMError(
                f"the stream holds no operating point at or below the analytics "
                f"point {preset.analytics_point} of preset '{preset.name}'"
            )
        return below[-1]
    if not clamp:
        return layers
    return header.num_layers if layers is None else min(int(layers), header.num_layers)


def _largest_within(sizes: dict[int, int], max_bytes: int) -> int:
    """The largest key whose size fits ``max_bytes``; VCMError naming the smallest size."""
    if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise VCMError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    fits = [k for k, size in sizes.items() if size <= max_bytes]
    if not fits:
        raise VCMError(
            f"max_bytes={max_bytes} is below the smallest operating point "
            f"({min(sizes.values())} bytes)"
        )
    return max(fits)


#: What each layer carries, as ``inspect().layer_roles`` names it.
_ROLES = {
    SemanticPalette: "semantic",
    PaletteSplits: "splits",
    LatentRefinement: "refinement",
    TextureResidual: "texture-residual",
    TexturePhoto: "texture",
    TextureLayer: "texture",
}
#: Roles whose points are meant for a person (``inspect().viewer_points``).
_VIEWER_ROLES = ("texture", "texture-residual")


def _role(brick) -> str:
    if isinstance(brick, TexturePhoto) and brick.blur > 0:
        return "texture-analytics"
    return _ROLES[type(brick)]


def photo_jobs(preset: Preset) -> list[PhotoJob]:
    """The encodes of the preset's trailing layers that code the photo alone, one per coder
    (a texture chain is one): ``Codec.encode_batch`` runs them beside the generator, so their
    cost is a floor under the preset's encode time (``vcm_eval.bench_speed``). Together they
    return the payloads of those layers in stream order."""
    bricks = _bricks(preset)
    return _photo_jobs(bricks[_alone_from(bricks) :])


def layer_roles(preset: Preset) -> list[str]:
    """What each layer of ``preset`` carries (``inspect().layer_roles`` of a full stream)."""
    return [_role(b) for b in _bricks(preset)]


def _ranges(points: list[int]) -> str:
    """[1, 2, 3, 5] -> '1..3, 5' for messages."""
    spans: list[list[int]] = []
    for k in points:
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in spans)
