"""What every framework integration shares: option checks, one codec per preset, the round trip,
the stream cache and the counters.

Why one module: each framework wants a different *shape* (an Albumentations transform, an
OpenMMLab ``BaseTransform``, a Pillow plugin ...) around the same few operations, and the
options must mean the same thing everywhere (``layers="analytics"``, the default, is always the
preset's analytics operating point; ``layers=1`` always "semantic layer only").
Nothing here imports a framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from vcm_plugin.codec import container
from vcm_plugin.codec.api import as_rgb, resolve_point
from vcm_plugin.codec.container import read_header
from vcm_plugin.codec.files import write_atomic
from vcm_plugin.codec.layerspec import LayerSpec, fixed_layers, parse_layers
from vcm_plugin.codec.presets import ANALYTICS, DEFAULT_PRESET, get_preset
from vcm_plugin.errors import TruncatedStream, VCMError

if TYPE_CHECKING:
    from vcm_plugin import Codec
    from vcm_plugin.codec.streaminfo import StreamInfo


_CODECS: dict[str, Codec] = {}
_CODECS_LOCK = threading.Lock()


def get_codec(preset: str = DEFAULT_PRESET) -> Codec:
    """One codec per preset and process: the ``tae`` preset loads weights, so build it once."""
    if not isinstance(preset, str) or not preset:
        raise VCMError(f"preset must be a non-empty string, got {preset!r}")
    with _CODECS_LOCK:
        codec = _CODECS.get(preset)
        if codec is None:
            from vcm_plugin import Codec

            codec = Codec.from_preset(preset)
            _CODECS[preset] = codec
        return codec


def check_p(p: Any) -> float:
    """Probabilities outside [0, 1] are always a typo."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise VCMError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def check_channel_order(order: Any) -> str:
    """Frameworks disagree (OpenCV/ultralytics/OpenMMLab: BGR; PIL/torchvision: RGB)."""
    if order not in ("rgb", "bgr"):
        raise VCMError(f"channel_order must be 'rgb' or 'bgr', got {order!r}")
    return order


def layers_repr(layers: LayerSpec) -> str:
    return "all" if layers is None else repr(layers)


# --------------------------------------------------------------------------------------------
# Counters: ultralytics and Albumentations rebuild transforms from dicts, so an instance counter
# would be lost; process-wide counters let a test or a log line prove the transform ran.


@dataclass
class Stats:
    """Process-wide counters of the integrations' codec work."""

    images: int = 0
    encodes: int = 0
    decodes: int = 0
    cache_hits: int = 0
    point_hits: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    layers_used: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "encodes": self.encodes,
            "decodes": self.decodes,
            "cache_hits": self.cache_hits,
            "point_hits": self.point_hits,
            "encode_s": self.encode_s,
            "decode_s": self.decode_s,
            "layers_used": dict(self.layers_used),
        }


_STATS = Stats()
_STATS_LOCK = threading.Lock()


def stats() -> dict[str, Any]:
    """Snapshot of the counters (images round-tripped, encodes, cache hits, seconds)."""
    with _STATS_LOCK:
        return _STATS.as_dict()


def reset_stats() -> None:
    global _STATS
    with _STATS_LOCK:
        _STATS = Stats()


# --------------------------------------------------------------------------------------------
# Stream cache


class StreamCache:
    """Encoded streams keyed by a hash of the image content and the preset, and, where a
    caller keeps them (``roundtrip_point(keep_points=...)``), the decoded pictures of latent
    points.

    Why: one encode yields every operating point, so a second epoch over the same image only
    needs a decode (of whatever layer count it samples). A latent point's decode runs the
    generator (0.1-0.2 s per 320x240 picture on this project's 2-core CPU, about what a
    detector's training spends per image there) and is deterministic, so its picture can be
    kept too: H x W x 3 bytes, about 8x its stream (coco128 at 320 px). ``directory=None``
    keeps streams in memory (LRU, ``max_bytes``) and pictures in an LRU of their own
    (``max_point_bytes``, so pictures never evict the streams they came from); a directory is
    shared by DataLoader worker processes and survives runs (``<key>.vcm`` and
    ``<key>.<point>.npy``). Files are written atomically, so concurrent workers never read
    half a file.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        max_bytes: int = 1 << 30,
        max_point_bytes: int = 1 << 30,
    ) -> None:
        for name, value in (("max_bytes", max_bytes), ("max_point_bytes", max_point_bytes)):
            if value < 0:
                raise VCMError(f"{name} must be >= 0, got {value}")
        self.directory = Path(directory) if directory is not None else None
        self.max_bytes = int(max_bytes)
        self.max_point_bytes = int(max_point_bytes)
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._mem_bytes = 0
        self._points: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._points_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise VCMError(f"cannot create the stream cache directory {directory}: {e}") from e

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory else "memory"
        return f"StreamCache({where!r}, hits={self.hits}, misses={self.misses})"

    def __len__(self) -> int:
        if self.directory is not None:
            return sum(1 for _ in self.directory.glob("*/*.vcm"))
        return len(self._mem)

    @staticmethod
    def key(img: np.ndarray, preset: str) -> str:
        """Content hash: the pixels, their shape and the preset (a stream is preset-specific)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{preset}|{img.shape}|{img.dtype}|".encode())
        h.update(np.ascontiguousarray(img).data)
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.vcm"

    def get(self, key: str) -> bytes | None:
        if self.directory is not None:
            try:
                blob = self._path(key).read_bytes()
            except OSError:
                blob = None
        else:
            with self._lock:
                blob = self._mem.get(key)
                if blob is not None:
                    self._mem.move_to_end(key)
        with self._lock:
            if blob is None:
                self.misses += 1
            else:
                self.hits += 1
        return blob

    def put(self, key: str, blob: bytes) -> None:
        if self.directory is not None:
            path = self._path(key)
            path.parent.mkdir(exist_ok=True)
            write_atomic(path, blob)
            return
        with self._lock:
            if key in self._mem or len(blob) > self.max_bytes:
                return
            self._mem[key] = blob
            self._mem_bytes += len(blob)
            while self._mem_bytes > self.max_bytes:
                _, old = self._mem.popitem(last=False)
                self._mem_bytes -= len(old)

    def _point_path(self, key: str, point: int) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.{point}.npy"

    def get_point(self, key: str, point: int) -> np.ndarray | None:
        """The picture of ``point`` decoded from the stream under ``key``, if kept."""
        if self.directory is not None:
            try:
                return np.load(self._point_path(key, point), allow_pickle=False)
            except (OSError, ValueError, EOFError):
                return None  # not kept (or unreadable: decoded again and rewritten)
        with self._lock:
            pixels = self._points.get((key, point))
            if pixels is None:
                return None
            self._points.move_to_end((key, point))
        return pixels.copy()  # the caller's augmentations may write into it

    def put_point(self, key: str, point: int, pixels: np.ndarray) -> None:
        if self.directory is not None:
            path = self._point_path(key, point)
            path.parent.mkdir(exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, pixels, allow_pickle=False)
            write_atomic(path, buf.getvalue())
            return
        with self._lock:
            if (key, point) in self._points or pixels.nbytes > self.max_point_bytes:
                return
            self._points[(key, point)] = pixels.copy()
            self._points_bytes += pixels.nbytes
            while self._points_bytes > self.max_point_bytes:
                _, old = self._points.popitem(last=False)
                self._points_bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()
            self._mem_bytes = 0
            self._points.clear()
            self._points_bytes = 0
        if self.directory is not None:
            for pattern in ("*/*.vcm", "*/*.npy"):
                for f in self.directory.glob(pattern):
                    f.unlink(missing_ok=True)


_CACHES: dict[str, StreamCache] = {}
_CACHES_LOCK = threading.Lock()

CacheSpec = bool | str | os.PathLike[str] | StreamCache | None


def check_cache(cache: Any) -> CacheSpec:
    """A cache option must be serialisable in configs: False/None, True (memory) or a path."""
    if cache is None or isinstance(cache, (bool, str, os.PathLike, StreamCache)):
        if isinstance(cache, str) and not cache:
            raise VCMError("cache must be True, False or a directory path, got ''")
        return cache
    raise VCMError(f"cache must be True, False or a directory path, got {cache!r}")


def resolve_cache(cache: CacheSpec) -> StreamCache | None:
    """Map a config-friendly cache spec to a process-wide cache object.

    Why process-wide: frameworks rebuild transforms (ultralytics re-creates Albumentations
    transforms from dicts; ``close_mosaic`` rebuilds the pipeline), and a cache that lived in
    one transform instance would be thrown away with it.
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, StreamCache):
        return cache
    key = "memory" if cache is True else str(Path(cache).expanduser().resolve())
    with _CACHES_LOCK:
        obj = _CACHES.get(key)
        if obj is None:
            obj = StreamCache(None if cache is True else key)
            _CACHES[key] = obj
        return obj


# --------------------------------------------------------------------------------------------
# The round trip


def to_uint8_rgb(img: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """Bring what frameworks hand us (gray, BGR, float in [0, 1]) to the codec's HxWx3 uint8;
    the shape rule is the codec's own (``as_rgb``: gray replicated, RGBA refused)."""
    if not isinstance(img, np.ndarray):
        raise VCMError(f"expected a numpy image, got {type(img).__name__}")
    if img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.floating):
            raise VCMError(f"expected uint8 or float images in [0, 1], got dtype {img.dtype}")
        img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    img = as_rgb(img)
    if channel_order == "bgr":
        img = img[..., ::-1]
    return np.ascontiguousarray(img)


def from_uint8_rgb(out: np.ndarray, like: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """Give the framework back the layout and dtype it handed us."""
    if channel_order == "bgr":
        out = out[..., ::-1]
    if like.ndim == 2 or (like.ndim == 3 and like.shape[2] == 1):
        gray = out.mean(axis=2)
        out = np.rint(gray).astype(np.uint8)
        if like.ndim == 3:
            out = out[..., None]
    if like.dtype != np.uint8:
        out = out.astype(like.dtype) / 255.0
        out = out.astype(like.dtype)
    return np.ascontiguousarray(out)


def encode_cached(
    rgb: np.ndarray, preset: str, cache: StreamCache | None, key: str = ""
) -> tuple[bytes, bool]:
    """Encode, or fetch the stream a previous epoch encoded from the same pixels (``key``:
    their ``StreamCache.key``, when the caller has it); ``(stream, True)`` when it was just
    encoded."""
    if cache is not None:
        key = key or StreamCache.key(rgb, preset)
        blob = cache.get(key)
        if blob is not None:
            with _STATS_LOCK:
                _STATS.cache_hits += 1
            return blob, False
    t0 = time.perf_counter()
    blob = get_codec(preset).encode(rgb)
    dt = time.perf_counter() - t0
    with _STATS_LOCK:
        _STATS.encodes += 1
        _STATS.encode_s += dt
    if cache is not None:
        cache.put(key, blob)
    return blob, True


def decodable_points(blob: bytes, codec: Codec | None = None) -> list[int]:
    """Operating points whose layers are all in ``blob`` (none when the stream is cut short
    before its first point; a corrupt stream raises)."""
    try:
        return (codec or get_codec()).inspect(blob).decodable_points
    except TruncatedStream:
        return []


def num_layers(blob: bytes, codec: Codec | None = None) -> int:
    """Complete layers present in a stream (header and CRCs only, no pixel decoding)."""
    return (codec or get_codec()).inspect(blob).complete_layers


@dataclass(frozen=True)
class Decoded:
    """One decode of an operating point: the picture, the point decoded (``layers``), the
    stream's layer count and ``bytes``, what a receiver of that point was sent (the size of
    ``Codec.view``'s stream). What the transforms record per image (mmseg's ``vcm_layers`` /
    ``vcm_bytes``, face-alignment's ``last_decode``, Pillow's ``info``)."""

    image: np.ndarray
    layers: int
    num_layers: int
    bytes: int


def decode_layers(
    blob: bytes,
    layers: int | str | None,
    codec: Codec | None = None,
    info: StreamInfo | None = None,
) -> Decoded:
    """Decode operating point ``layers``, clamped to what the stream holds (a (1, 4) range on a
    3-layer preset simply tops out at 3). ``info``: the stream's ``Codec.inspect``, when the
    caller already has it."""
    codec = codec or get_codec()
    info = info or codec.inspect(blob)
    k = point_to_decode(blob, layers, info)
    out = _counted_decode(codec, blob, k)
    with _STATS_LOCK:
        _STATS.layers_used[k] = _STATS.layers_used.get(k, 0) + 1
    return Decoded(out, k, info.num_layers, info.point_bytes[k - 1])


def _counted_decode(codec: Codec, blob: bytes, k: int) -> np.ndarray:
    """``codec.decode`` of point ``k``, counted in the decodes and their seconds."""
    t0 = time.perf_counter()
    out = codec.decode(blob, layers=k)
    dt = time.perf_counter() - t0
    with _STATS_LOCK:
        _STATS.decodes += 1
        _STATS.decode_s += dt
    return out


def point_to_decode(blob: bytes, layers: int | str | None, info: StreamInfo) -> int:
    """The point ``decode_layers`` decodes for ``layers``: the highest decodable point at or
    below it."""
    points = info.decodable_points
    if isinstance(layers, str):  # "analytics": the one rule, resolve_point's
        layers = resolve_point(
            layers, container.parse_header(blob, container.NO_PIXEL_LIMIT), points
        )
    below = [p for p in points if layers is None or p <= layers]
    return below[-1] if below else layers


class CompressOptions:
    """Mixin for the framework transforms (Albumentations, torchvision-style, mmseg): the
    options every one takes, checked once when the transform is built (a typo or an unknown
    preset fails then, not mid-epoch), and the round trip they configure. The options stay
    plain attributes, as the frameworks serialise and print them."""

    layers: LayerSpec
    preset: str
    cache: CacheSpec
    channel_order: str

    def _set_options(
        self, layers: Any, preset: str, cache: Any, channel_order: str = "rgb"
    ) -> None:
        self.layers = parse_layers(layers)
        self.preset = preset
        self.cache = check_cache(os.fspath(cache) if isinstance(cache, os.PathLike) else cache)
        self.channel_order = check_channel_order(channel_order)
        get_codec(preset)

    def _roundtrip(self, img: np.ndarray, layers: int | str | None) -> Decoded:
        return roundtrip_point(
            img,
            layers,
            self.preset,
            channel_order=self.channel_order,
            cache=resolve_cache(self.cache),
        )


def roundtrip_point(
    img: np.ndarray,
    layers: int | str | None = ANALYTICS,
    preset: str = DEFAULT_PRESET,
    *,
    channel_order: str = "rgb",
    cache: StreamCache | None = None,
    keep_points: Collection[int] = (),
) -> Decoded:
    """Encode then decode operating point ``layers``: the decode (:class:`Decoded`) with its
    ``image`` in the input's shape, dtype and channel order.

    ``keep_points`` (with a ``cache``): the points whose pictures the cache keeps, of those
    that run the generator (``StreamInfo.latent_points``); a fresh encode decodes them all at
    once, so a later draw of any of them, in this epoch or the next, reads the picture instead
    of running the generator again (pixels identical: the decode is deterministic)."""
    rgb = to_uint8_rgb(img, channel_order)
    codec = get_codec(preset)
    key = StreamCache.key(rgb, preset) if cache is not None else ""
    blob, fresh = encode_cached(rgb, preset, cache, key)
    got = (
        _decode_kept(blob, layers, codec, cache, key, keep_points, fresh)
        if cache is not None and keep_points
        else decode_layers(blob, layers, codec)
    )
    if got.image.shape != rgb.shape:
        raise VCMError(f"codec returned shape {got.image.shape} for an input of shape {rgb.shape}")
    with _STATS_LOCK:
        _STATS.images += 1
    return dataclasses.replace(got, image=from_uint8_rgb(got.image, img, channel_order))


def _decode_kept(
    blob: bytes,
    layers: int | str | None,
    codec: Codec,
    cache: StreamCache,
    key: str,
    keep_points: Collection[int],
    fresh: bool,
) -> Decoded:
    """``decode_layers`` through the cache's kept pictures (``roundtrip_point``)."""
    info = codec.inspect(blob)
    kept = [k for k in info.latent_points if k in keep_points]
    k = point_to_decode(blob, layers, info)
    for other in kept if fresh else ():  # a new stream: keep every latent point now
        if other != k:
            cache.put_point(key, other, _counted_decode(codec, blob, other))
    if k not in kept:
        return decode_layers(blob, layers, codec, info)
    if not fresh:
        pixels = cache.get_point(key, k)
        if pixels is not None:
            with _STATS_LOCK:
                _STATS.point_hits += 1
                _STATS.layers_used[k] = _STATS.layers_used.get(k, 0) + 1
            return Decoded(pixels, k, info.num_layers, info.point_bytes[k - 1])
    got = decode_layers(blob, k, codec, info)
    cache.put_point(key, k, got.image)
    return got


def spec_points(layers: LayerSpec, preset: str) -> tuple[int, ...]:
    """The operating points a parsed layer spec can draw on streams of ``preset`` (what
    ``roundtrip_point``'s ``keep_points`` takes for a transform's ``layers``)."""
    p = get_preset(preset)
    if isinstance(layers, tuple):
        return tuple(range(layers[0], layers[1] + 1))
    if layers == ANALYTICS:
        return (p.analytics_point,)
    return (p.num_layers if layers is None else int(layers),)


def roundtrip(
    img: np.ndarray,
    layers: int | str | None = ANALYTICS,
    preset: str = DEFAULT_PRESET,
    *,
    channel_order: str = "rgb",
    cache: StreamCache | None = None,
) -> np.ndarray:
    """Encode then decode operating point ``layers``; same shape, dtype and channel order as
    the input (:func:`roundtrip_point` also says which point and how many bytes)."""
    return roundtrip_point(img, layers, preset, channel_order=channel_order, cache=cache).image


# --------------------------------------------------------------------------------------------
# Streams from files: read only the bytes of the layers you will decode.


def read_prefix(
    f: BinaryIO, layers: int | str | None, probe: container.HeaderRead | None = None
) -> bytes:
    """Read just the bytes operating point ``layers`` needs (all if None) from a file object.

    Returns a valid stream of that point: the first k layers, or (a version-3 point that is
    not a prefix, such as a texture point) the header plus the layers it reads, every other
    layer absent (``Codec.view``). A file cut short returns what is there, and decoding it
    yields the complete layers it holds (the codec's truncated-stream rule). ``probe``: the
    header already read from ``f`` (``container.read_header``), with ``f`` positioned after it.
    """
    head, header = probe if probe is not None else read_header(f)
    k = resolve_point(layers, header)
    needed = header.point_layers(k)
    if layers is None or needed == list(range(k)):  # None: the whole stream
        end = header.prefix_end(k)
        blob = head[:end] + f.read(max(0, end - len(head)))
        if len(blob) < end or k == header.num_layers:
            return blob
        # rewrite the header so the prefix is a complete, valid k-layer stream
        return container.truncate(blob, header, k)
    sparse = bytearray(header.prefix_end(k))
    sparse[: len(head)] = head[: len(sparse)]
    for i in needed:  # seek to each layer the point reads; skip the rest
        start, length = header.offsets[i], header.lengths[i]
        f.seek(start)
        data = f.read(length)
        if len(data) < length:  # cut short: the prefix up to the cut, as for a prefix point
            f.seek(len(head))
            return head + f.read(max(0, header.prefix_end(k) - len(head)))
        sparse[start : start + length] = data
    return container.view(bytes(sparse), header, k)


def read_stream(
    source: bytes | bytearray | memoryview | str | os.PathLike[str], layers: int | str | None = None
) -> bytes:
    """The bytes needed to decode operating point ``layers`` of a stream given as bytes or a
    path.

    Why: the container's layer table says where each layer ends, so a reader that wants the
    semantic layer reads the header and layer 0 and never touches the texture layers (the same
    byte range an HTTP client would request). ``layers=None`` keeps the whole stream.
    """
    layers = fixed_layers(layers, "read_stream")
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
        if layers is None:
            return blob
        k = resolve_point(layers, read_header(io.BytesIO(blob)).header)
        return blob if k >= num_layers(blob) else get_codec().view(blob, layers=k)
    if not isinstance(source, (str, os.PathLike)):
        raise VCMError(f"expected bytes or a path to a .vcm file, got {type(source).__name__}")
    path = Path(source)
    try:
        with path.open("rb") as f:
            return read_prefix(f, layers)
    except OSError as e:
        raise VCMError(f"cannot read {path}: {e}") from e
    except VCMError as e:
        raise VCMError(f"{path}: {e}") from e
