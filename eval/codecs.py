"""Codecs the harness compares: the layered vcm codec and real-library baselines.

Why one tiny class per codec (the CompressAI ``utils/bench/codecs.py`` shape): adding a
baseline is a subclass that names its format and its quality grid, nothing else. Every codec
turns one RGB image into a list of operating points ``(setting, bytes, decoded image)``;
for the baselines a point is one quality, for vcm it is one layer count of a single encode.
:class:`EvalCodec` is that contract: the harness treats every codec through it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vcm_eval import machine_filter
from vcm_plugin import VCMError
from vcm_plugin.codec.streaminfo import StreamInfo

__all__ = [
    "AvifCodec",
    "AvifMachineCodec",
    "BaselineCodec",
    "CODEC_NAMES",
    "DEFAULT_CODECS",
    "EvalCodec",
    "JpegCodec",
    "JxlCodec",
    "PillowCodec",
    "Point",
    "VcmCodec",
    "VcmMachineCodec",
    "VcmObjectsCodec",
    "WebpCodec",
    "check_codec_name",
    "make_codec",
    "BASELINES",
]


@dataclass
class Point:
    """One operating point of one image: the setting label, stream size and decoded pixels."""

    setting: str
    nbytes: int
    image: np.ndarray


@runtime_checkable
class EvalCodec(Protocol):
    """What the harness asks of every codec it compares, the layered one and the baselines.

    ``settings``: what the harness chooses per run and hands to its workers with the codec's
    name — a baseline's qualities — or ``None`` for a codec whose points come from its own
    stream (vcm: one point per layer count of a single encode).
    """

    name: str
    settings: list[int] | None

    def points(self, img: np.ndarray) -> Iterator[Point]:
        """The operating points of one RGB image, in ascending rate."""
        ...


class BaselineCodec:
    """A single-layer codec evaluated at a list of quality settings.

    ``candidates`` is the dense grid (from the codec's lowest quality up) that the harness
    picks the evaluated ``settings`` from, so that the baseline spans the bpp range of vcm.
    """

    name: str = ""
    candidates: tuple[int, ...] = ()

    def __init__(self, settings: Sequence[int] | None = None) -> None:
        self.settings: list[int] = list(settings if settings is not None else self.candidates)

    def label(self, q: int) -> str:
        return f"q={q}"

    def encode(self, img: np.ndarray, q: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def points(self, img: np.ndarray) -> Iterator[Point]:
        for q in self.settings:
            data = self.encode(img, q)
            yield Point(self.label(q), len(data), self.decode(data))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(settings={self.settings})"


class PillowCodec(BaselineCodec):
    """A baseline encoded by a Pillow image plugin; subclasses set ``fmt`` (and options)."""

    fmt: str = ""
    options: dict = {}

    def encode(self, img: np.ndarray, q: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format=self.fmt, quality=int(q), **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


class JpegCodec(PillowCodec):
    """libjpeg(-turbo) through Pillow, 4:2:0, standard quantisation tables."""

    name = "jpeg"
    fmt = "JPEG"
    candidates = (1, 2, 3, 5, 8, 12, 18, 25, 35, 50, 65, 80, 90, 95)


class WebpCodec(PillowCodec):
    """libwebp lossy through Pillow (method 4, Pillow's default)."""

    name = "webp"
    fmt = "WEBP"
    candidates = (0, 2, 5, 10, 15, 20, 30, 40, 50, 65, 75, 85, 95)


class AvifCodec(PillowCodec):
    """libavif (AOM) through Pillow's built-in AVIF plugin, speed 6 (Pillow's default)."""

    name = "avif"
    fmt = "AVIF"
    candidates = (0, 3, 6, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90)


class JxlCodec(PillowCodec):
    """libjxl through pillow-jxl-plugin (effort 7). Quality 100 would need lossless mode."""

    name = "jxl"
    fmt = "JXL"
    candidates = (0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)

    def encode(self, img: np.ndarray, q: int) -> bytes:
        import pillow_jxl  # noqa: F401  (registers the JXL plugin with Pillow)

        return super().encode(img, q)


class AvifMachineCodec(AvifCodec):
    """AVIF, each picture through the machine filter: the filter on its own (an ablation)."""

    name = "avif-machine"

    def decode(self, data: bytes) -> np.ndarray:
        return machine_filter.for_machines(super().decode(data))


BASELINES: dict[str, type[BaselineCodec]] = {
    c.name: c for c in (JpegCodec, WebpCodec, AvifCodec, JxlCodec, AvifMachineCodec)
}


class VcmCodec:
    """The layered codec: one encode per image, every operating point is a point. Its bytes
    are what a reader fetches for it, ``Codec.view``: the header plus the layers the point
    needs (a prefix in version-2 streams; a texture layer alone in the generator preset's).

    ``points="viewer"`` keeps only the points meant for a person (``inspect().viewer_points``:
    the texture layers of the generator preset), which is what the quality task scores: a
    person's view is a viewer point, the latent and analytics points are for models.

    (The harness fills a missing ``layers=k`` of an image whose stream has fewer layers with
    its full stream, so every curve point covers every image.)
    """

    name = "vcm"
    settings: list[int] | None = None  # the points come from the stream, not from settings

    def __init__(self, preset: str = "default", points: str = "all") -> None:
        from vcm_plugin import Codec

        if points not in ("all", "viewer"):
            raise VCMError(f"points must be 'all' or 'viewer', got {points!r}")
        self.preset = preset
        self.which = points
        self.codec = Codec.from_preset(preset, device="cpu")

    def label(self, k: int) -> str:
        return f"layers={k}"

    def num_layers(self, blob: bytes) -> int:
        return self.codec.inspect(blob).num_layers

    def _ks(self, info: StreamInfo) -> list[int]:
        if self.which == "viewer" and info.viewer_points:
            return list(info.viewer_points)
        return list(range(1, info.num_layers + 1))

    def sizes(self, img: np.ndarray) -> list[int]:
        """Bytes of every evaluated operating point, ascending k (to place the baselines)."""
        info = self.codec.inspect(self.encode(img))
        return [info.point_bytes[k - 1] for k in self._ks(info)]

    def encode(self, img: np.ndarray) -> bytes:
        """The stream of one image."""
        return self.codec.encode(img)

    def points(self, img: np.ndarray) -> Iterator[Point]:
        blob = self.encode(img)
        for k in self._ks(self.codec.inspect(blob)):
            part = self.codec.view(blob, layers=k)
            yield Point(self.label(k), len(part), self.codec.decode(part, layers=k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.preset!r}, points={self.which!r})"


class VcmObjectsCodec(VcmCodec):
    """vcm with the objects a detector finds on the photo at encode (``Codec.encode``'s
    ``objects``: the analytics point spends its bits on them): YOLOv5n (``yolov5n.pt`` in the
    task-model weights) at letterbox 640 (``taskmodels.detect.object_finder``). What a camera
    or a data-set encode that runs a detector sends; the bytes counted are the stream's, the
    detector's work is not sent. (The eval task's detector is the same YOLOv5n: the
    ``--imgsz`` runs are the second opinion, README "Learned for machines".)"""

    name = "vcm-objects"

    def __init__(self, preset: str = "default", points: str = "all") -> None:
        super().__init__(preset, points)
        from vcm_plugin.taskmodels.detect import object_finder

        self.find = object_finder()

    def encode(self, img: np.ndarray) -> bytes:
        return self.codec.encode(img, objects=self.find(img))


class VcmMachineCodec(VcmCodec):
    """vcm, every point's picture through the machine filter (an ablation, issue 30)."""

    name = "vcm-machine"

    def points(self, img: np.ndarray) -> Iterator[Point]:
        for point in super().points(img):
            yield Point(point.setting, point.nbytes, machine_filter.for_machines(point.image))


#: Every codec name the harness knows: the layered codec first, then the baselines.
CODEC_NAMES = (VcmCodec.name, VcmObjectsCodec.name, VcmMachineCodec.name, *BASELINES)
#: What a run compares unless told otherwise (the ``*-machine`` ablations need fitted weights).
DEFAULT_CODECS = ("vcm", "jpeg", "webp", "avif", "jxl")


def check_codec_name(name: str) -> None:
    """VCMError listing the known codecs when ``name`` is not one of them."""
    if name not in CODEC_NAMES:
        raise VCMError(f"unknown codec {name!r}; known codecs: {', '.join(CODEC_NAMES)}")


def make_codec(name: str, preset: str = "default", vcm_points: str = "all") -> EvalCodec:
    """Build a codec by name; unknown names raise VCMError listing the known ones."""
    check_codec_name(name)
    if name in BASELINES:
        return BASELINES[name]()
    kinds = {c.name: c for c in (VcmCodec, VcmObjectsCodec, VcmMachineCodec)}
    return kinds[name](preset, vcm_points)
