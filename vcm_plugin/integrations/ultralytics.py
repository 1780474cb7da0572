"""Ultralytics YOLO integration: train on what the edge sends, predict on the semantic layer.

Three hooks, one per idiom ultralytics users already know:

* ``VCMCompression`` — an Albumentations transform: ``model.train(..., augmentations=[...])``.
* ``VCMTrainer`` — ``model.train(..., trainer=VCMTrainer, vcm_layers=(1, 4))``: every training
  image (optionally every validation image) goes through encode → decode; options come from the
  train call (``vcm_*`` keys), from a small YAML (``vcm="vcm.yaml"``) or from
  ``VCMTrainer.with_options(...)``.
* ``VCMDetectionPredictor`` / ``add_vcm_callback`` / ``predict_streams`` — inference on the
  semantic layer, from images or directly from ``.vcm`` streams.
* ``enable_vcm_files()`` — ``.vcm`` files wherever ultralytics reads image files (``predict``
  on a file, folder or glob; ``train`` / ``val`` data sets of ``.vcm`` images).

ultralytics hands images around as OpenCV BGR uint8; everything here converts for the codec.
"""

from __future__ import annotations

import importlib
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from ultralytics.data.augment import Compose, Format
from ultralytics.models.yolo.detect import DetectionPredictor, DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, YAML

from vcm_plugin.codec.layerspec import draw_layers, fixed_layers, parse_layers
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.errors import VCMError
from vcm_plugin.integrations._core import (
    ANALYTICS,
    LayerSpec,
    check_cache,
    check_p,
    decode_layers,
    get_codec,
    layers_repr,
    read_stream,
    resolve_cache,
    roundtrip,
    roundtrip_point,
    spec_points,
    stats,
)
from vcm_plugin.integrations.albumentations import VCMCompression

__all__ = [
    "VCMCompression",
    "VCMDetectionPredictor",
    "VCMOptions",
    "VCMPredictorMixin",
    "VCMTrainer",
    "add_vcm_callback",
    "decode_stream_bgr",
    "disable_vcm_files",
    "enable_vcm_files",
    "install_vcm",
    "predict_streams",
]

_STAGES = ("load", "final")


#: prediction and file reading decode one layer count per image, not a sampled range
_ONE_POINT = "prediction and file reading"


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class VCMOptions:
    """What ``VCMTrainer`` does to each image.

    Attributes:
        layers: "analytics" = the preset's analytics point (default); 1 = semantic layer
            only; k; None = all; (low, high) sampled per image.
        preset: codec preset.
        p: probability that an image is round-tripped.
        val: also round-trip validation images (evaluate on what the edge sends).
        cache: False, True (memory) or a directory: encoded streams keyed by image content.
        cache_points: with ``cache``, also keep the decoded pictures of the points in
            ``layers`` that run the generator (``tae``'s latent points 1-3): the first round
            trip of an image decodes them all, and every later draw reads the picture, so
            epochs after the first run neither the encoder nor the generator. Costs
            H x W x 3 bytes per kept point (memory: an LRU of 1 GiB per process; a directory:
            one ``.npy`` file each, about 8x the stream at 320 px).
        stage: ``"load"`` — each image as loaded (resized to ``imgsz``), before mosaic and the
            other augmentations, like a stored/sent picture; with ``cache`` every epoch after
            the first only decodes. ``"final"`` — the augmented network input, inserted just
            before ``Format`` (re-inserted when ``close_mosaic()`` rebuilds the pipeline);
            never repeats, so the cache cannot help there.
    """

    layers: LayerSpec = ANALYTICS
    preset: str = DEFAULT_PRESET
    p: float = 1.0
    val: bool = False
    cache: bool | str = False
    cache_points: bool = False
    stage: str = "load"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        object.__setattr__(self, "p", check_p(self.p))
        cache = os.fspath(self.cache) if isinstance(self.cache, os.PathLike) else self.cache
        object.__setattr__(self, "cache", check_cache(cache))
        for name in ("val", "cache_points"):
            if not isinstance(getattr(self, name), bool):
                raise VCMError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.cache_points and not self.cache:
            raise VCMError("cache_points keeps pictures in the stream cache: set cache too")
        if self.stage not in _STAGES:
            raise VCMError(f"stage must be one of {_STAGES}, got {self.stage!r}")
        get_codec(self.preset)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "VCM options") -> VCMOptions:
        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise VCMError(f"unknown {where}: {unknown}; valid keys are {list(cls.names())}")
        return cls(**dict(data))

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | Mapping[str, Any] | VCMOptions) -> VCMOptions:
        """From a YAML file (a small config of the keys above), a dict or another VCMOptions."""
        if isinstance(spec, VCMOptions):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_mapping(spec)
        path = Path(spec)
        if not path.is_file():
            raise VCMError(f"VCM options file not found: {path}")
        data = YAML.load(path) or {}
        if not isinstance(data, Mapping):
            raise VCMError(f"{path} must hold a mapping of VCM options, got {type(data).__name__}")
        return cls.from_mapping(data, where=f"VCM options in {path}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["layers"], tuple):
            d["layers"] = list(d["layers"])
        return d


def _pop_options(overrides: dict[str, Any], base: Mapping[str, Any]) -> VCMOptions:
    """Take ``vcm`` / ``vcm_*`` keys out of the ultralytics overrides (ultralytics rejects keys
    it does not know) and merge them over ``base``: class defaults < ``vcm=`` file < ``vcm_*``."""
    merged: dict[str, Any] = dict(base)
    spec = overrides.pop("vcm", None)
    if spec is not None:
        merged.update(VCMOptions.load(spec).as_dict())
    for key in [k for k in overrides if k.startswith("vcm_")]:
        name = key[4:]
        if name not in VCMOptions.names():
            valid = ", ".join(f"vcm_{n}" for n in VCMOptions.names())
            raise VCMError(f"unknown VCM training option {key!r}; valid: vcm, {valid}")
        merged[name] = overrides.pop(key)
    return VCMOptions.from_mapping(merged)


# --------------------------------------------------------------------------------------------
# Dataset hooks (picklable objects, so DataLoader workers can receive them)


class _VCMLabels:
    """``labels -> labels`` step for an ultralytics ``Compose``: round-trips ``labels['img']``
    (BGR). Pixels only: boxes, segments and keypoints are untouched."""

    def __init__(self, options: VCMOptions) -> None:
        self.options = options

    def __repr__(self) -> str:
        o = self.options
        return f"VCMRoundTrip(layers={layers_repr(o.layers)}, preset={o.preset!r}, p={o.p})"

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        labels["img"] = _roundtrip_bgr(labels["img"], self.options)
        return labels


def _roundtrip_bgr(img: np.ndarray, o: VCMOptions) -> np.ndarray:
    if o.p < 1.0 and random.random() >= o.p:
        return img
    return roundtrip_point(
        img,
        draw_layers(o.layers),
        o.preset,
        channel_order="bgr",
        cache=resolve_cache(o.cache),
        keep_points=spec_points(o.layers, o.preset) if o.cache_points else (),
    ).image


class _VCMLoadImage:
    """Wraps ``dataset.load_image``: the stored picture as the receiver decodes it. A ``.vcm``
    file is decoded at the sampled layer count directly (re-encoding a decode would compress
    it twice)."""

    def __init__(self, load_image: Callable[..., Any], options: VCMOptions) -> None:
        self.load_image = load_image
        self.options = options

    def __call__(self, i: int, *args: Any, **kwargs: Any) -> Any:
        o = self.options
        if self.load_image.__self__.im_files[i].lower().endswith(VCM_SUFFIX):
            if o.p < 1.0 and random.random() >= o.p:
                return self.load_image(i, *args, **kwargs)
            with _reading_layers(draw_layers(o.layers)):
                return self.load_image(i, *args, **kwargs)
        im, hw0, hw = self.load_image(i, *args, **kwargs)
        return _roundtrip_bgr(im, o), hw0, hw


class _VCMBuildTransforms:
    """Wraps ``dataset.build_transforms`` so the step is re-inserted whenever ultralytics
    rebuilds the pipeline (``close_mosaic()`` does)."""

    def __init__(self, build: Callable[..., Compose], step: _VCMLabels) -> None:
        self.build = build
        self.step = step

    def __call__(self, *args: Any, **kwargs: Any) -> Compose:
        return _insert_before_format(self.build(*args, **kwargs), self.step)


def _insert_before_format(transforms: Compose, step: _VCMLabels) -> Compose:
    items = transforms.transforms
    if any(isinstance(t, _VCMLabels) for t in items):
        return transforms
    index = next(
        (i for i in range(len(items) - 1, -1, -1) if isinstance(items[i], Format)), len(items)
    )
    transforms.insert(index, step)
    return transforms


def install_vcm(dataset: Any, options: VCMOptions) -> Any:
    """Attach the round trip to an ultralytics dataset in place (what ``VCMTrainer`` does).

    Works with any ``BaseDataset`` subclass; returns the dataset.
    """
    if options.stage == "load":
        if not isinstance(dataset.load_image, _VCMLoadImage):
            dataset.load_image = _VCMLoadImage(dataset.load_image, options)
    else:
        step = _VCMLabels(options)
        dataset.transforms = _insert_before_format(dataset.transforms, step)
        if not isinstance(dataset.build_transforms, _VCMBuildTransforms):
            dataset.build_transforms = _VCMBuildTransforms(dataset.build_transforms, step)
    dataset.vcm_options = options
    return dataset


# --------------------------------------------------------------------------------------------
# Trainer


class VCMTrainer(DetectionTrainer):
    """``DetectionTrainer`` that trains on VCM-decoded images.

    ``model.train(data=..., trainer=VCMTrainer, vcm_layers=(1, 4), vcm_cache=True)``; keys:
    ``vcm`` (a YAML file or dict of options), ``vcm_layers``, ``vcm_preset``, ``vcm_p``,
    ``vcm_val``, ``vcm_cache``, ``vcm_cache_points``, ``vcm_stage`` (see ``VCMOptions``). The
    options used are written to ``<save_dir>/vcm.yaml`` beside ``args.yaml``. Data sets of
    ``.vcm`` images work as they are (it calls ``enable_vcm_files()`` unless already enabled);
    with ``stage="load"`` each ``.vcm`` image is decoded at the sampled layer count instead of
    being round-tripped.
    """

    vcm_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        overrides = dict(overrides or {})
        self.vcm = _pop_options(overrides, self.vcm_defaults)
        super().__init__(cfg, overrides, _callbacks)
        _ensure_vcm_files()
        if RANK in {-1, 0}:
            YAML.save(Path(self.save_dir) / "vcm.yaml", self.vcm.as_dict())
        self.add_callback("on_train_epoch_end", _log_vcm_stats)

    @classmethod
    def with_options(cls, **options: Any) -> type[VCMTrainer]:
        """A subclass with other defaults: ``trainer=VCMTrainer.with_options(layers=2)``."""
        merged = VCMOptions.from_mapping({**cls.vcm_defaults, **options}).as_dict()
        return type(cls.__name__, (cls,), {"vcm_defaults": merged, "__module__": cls.__module__})

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode=mode, batch=batch)
        if mode == "train" or self.vcm.val:
            install_vcm(dataset, self.vcm)
        return dataset


def _log_vcm_stats(trainer: Any) -> None:
    s = stats()
    if s["images"]:
        LOGGER.info(
            f"VCM: {s['images']} images round-tripped so far ({s['encodes']} encodes, "
            f"{s['cache_hits']} cache hits, {s['encode_s'] + s['decode_s']:.1f} s codec time)"
        )


# --------------------------------------------------------------------------------------------
# Predict side


class VCMPredictorMixin:
    """Round-trips each input through the codec before the usual pre-processing.

    The decoded image replaces the original in the batch, so ``Results.orig_img`` (and any
    saved or plotted output) shows exactly what the model saw.
    """

    vcm_layers: ClassVar[int | str | None] = ANALYTICS
    vcm_preset: ClassVar[str] = DEFAULT_PRESET

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        overrides = dict(overrides or {})
        self.vcm_layers = fixed_layers(overrides.pop("vcm_layers", self.vcm_layers), _ONE_POINT)
        self.vcm_preset = overrides.pop("vcm_preset", self.vcm_preset)
        get_codec(self.vcm_preset)
        super().__init__(cfg, overrides, _callbacks)  # type: ignore[call-arg]
        _ensure_vcm_files()

    @classmethod
    def with_options(
        cls, layers: int | str | None = ANALYTICS, preset: str = DEFAULT_PRESET
    ) -> type[Any]:
        """``model.predict(src, predictor=VCMDetectionPredictor.with_options(layers=2))``.

        Returns the same class for the same options, so ultralytics keeps reusing its predictor.
        """
        fixed_layers(layers, _ONE_POINT)
        get_codec(preset)
        return _predictor_class(cls, layers, preset)

    def preprocess(self, im: Any) -> Any:
        if isinstance(im, list):
            paths = self.batch[0] if getattr(self, "batch", None) else [""] * len(im)
            im[:] = [self._vcm_image(x, os.fspath(p)) for x, p in zip(im, paths, strict=True)]
        else:  # torch tensor source: N x 3 x H x W, RGB, float in [0, 1]
            import torch

            arrs = [
                roundtrip(x.permute(1, 2, 0).cpu().numpy(), self.vcm_layers, self.vcm_preset)
                for x in im
            ]
            im = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).to(im.device, im.dtype)
        return super().preprocess(im)  # type: ignore[misc]

    def _vcm_image(self, img: np.ndarray, path: str) -> np.ndarray:
        """A ``.vcm`` file is already a decode: read it again at this predictor's layer count
        if the file reader used another; any other image is round-tripped."""
        if not path.lower().endswith(VCM_SUFFIX):
            return roundtrip(img, self.vcm_layers, self.vcm_preset, channel_order="bgr")
        reader = _reader()
        if reader is not None and reader.layers == self.vcm_layers:
            return img
        return decode_stream_bgr(path, self.vcm_layers, gray=img.shape[2] == 1)


@cache
def _predictor_class(base: type[Any], layers: int | str | None, preset: str) -> type[Any]:
    return type(
        base.__name__,
        (base,),
        {"vcm_layers": layers, "vcm_preset": preset, "__module__": base.__module__},
    )


class VCMDetectionPredictor(VCMPredictorMixin, DetectionPredictor):
    """``model.predict(source, predictor=VCMDetectionPredictor)`` runs on the analytics point;
    ``.vcm`` sources (files, folders, globs) are decoded at that layer count, not re-encoded."""


def add_vcm_callback(
    model: Any, layers: int | str | None = ANALYTICS, preset: str = DEFAULT_PRESET
) -> Any:
    """Any-task alternative to the predictor subclass: an ``on_predict_batch_start`` callback
    that replaces each batch image by its decode. Returns the model (chainable)."""
    fixed_layers(layers, _ONE_POINT)
    get_codec(preset)

    def on_predict_batch_start(predictor: Any) -> None:
        images = predictor.batch[1]
        if isinstance(images, list):
            images[:] = [roundtrip(x, layers, preset, channel_order="bgr") for x in images]

    model.add_callback("on_predict_batch_start", on_predict_batch_start)
    return model


def decode_stream_bgr(
    source: bytes | str | os.PathLike[str], layers: int | str | None = ANALYTICS, gray: bool = False
) -> np.ndarray:
    """Decode the first ``layers`` layers of a ``.vcm`` stream to an OpenCV BGR array (HxWx1
    if ``gray``), as ultralytics' ``imread`` returns images; from a file only those layers'
    bytes are read, and errors name the file."""
    blob = read_stream(source, layers)
    try:
        rgb = decode_layers(blob, layers).image  # a Codec decodes streams of every preset
    except VCMError as e:
        if isinstance(source, (str, os.PathLike)):
            raise VCMError(f"{os.fspath(source)}: {e}") from e
        raise
    if gray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    return np.ascontiguousarray(rgb[..., ::-1])


def predict_streams(
    model: Any,
    streams: Iterable[bytes | str | os.PathLike[str]],
    layers: int | str | None = ANALYTICS,
    **predict_kwargs: Any,
) -> list[Any]:
    """``model.predict`` straight from ``.vcm`` streams (bytes or paths), decoding only the
    layers it needs (default: the semantic layer). Returns the ultralytics ``Results`` list,
    with ``path`` set to the stream's file name where one was given."""
    fixed_layers(layers, _ONE_POINT)
    sources = list(streams)
    if not sources:
        return []
    images = [decode_stream_bgr(s, layers) for s in sources]
    if isinstance(getattr(model, "predictor", None), VCMPredictorMixin):
        # the cached predictor would round-trip the decoded images a second time
        predict_kwargs.setdefault("predictor", model.task_map[model.task]["predictor"])
    results = model.predict(images, **predict_kwargs)
    for r, s in zip(results, sources, strict=True):
        if isinstance(s, (str, os.PathLike)):
            r.path = os.fspath(s)
    return results


# --------------------------------------------------------------------------------------------
# .vcm files wherever ultralytics reads image files

#: The operating point ``.vcm`` files are decoded at when ``enable_vcm_files`` is given no
#: count: every layer present. Change it here once the codec names an analytics point.
DEFAULT_FILE_LAYERS: int | str | None = ANALYTICS

VCM_SUFFIX = ".vcm"
#: Modules that bind ultralytics' ``imread`` by name (8.4): the predict loaders, the data set
#: loads and checks, and the modules later imports take it from.
IMREAD_MODULES = (
    "ultralytics.utils.patches",
    "ultralytics.utils",
    "ultralytics.data.utils",
    "ultralytics.data.base",
    "ultralytics.data.loaders",
    "ultralytics.data.dataset",
)
_UNSET = object()
_OVERRIDE = threading.local()  # VCMTrainer's per-image layer count, in the loading thread


class _VCMImread:
    """ultralytics' ``imread`` that decodes ``.vcm`` files with the codec (BGR, as cv2 would)
    and hands every other file to the original unchanged."""

    def __init__(self, original: Callable[..., Any], layers: int | str | None) -> None:
        self.original = original
        self.layers = layers

    def __repr__(self) -> str:
        return f"VCMImread(layers={layers_repr(self.layers)})"

    def __call__(
        self, filename: str | os.PathLike[str], flags: int = cv2.IMREAD_COLOR
    ) -> np.ndarray | None:
        if not os.fspath(filename).lower().endswith(VCM_SUFFIX):
            return self.original(filename, flags)
        layers = getattr(_OVERRIDE, "layers", _UNSET)
        return decode_stream_bgr(
            filename,
            self.layers if layers is _UNSET else layers,
            gray=flags == cv2.IMREAD_GRAYSCALE,
        )


def _reader() -> _VCMImread | None:
    from ultralytics.utils import patches

    return patches.imread if isinstance(patches.imread, _VCMImread) else None


def enable_vcm_files(layers: int | str | None = DEFAULT_FILE_LAYERS) -> None:
    """Let ultralytics read ``.vcm`` files wherever it reads image files: ``predict`` on a
    file, a folder or a glob, ``train`` / ``val`` on data sets whose images are ``.vcm``.

    ``layers``: the operating point decoded (None: every layer present; the default,
    ``DEFAULT_FILE_LAYERS``, is the preset's analytics point). Calling it again changes the
    count. What it patches, process-wide until ``disable_vcm_files()``: adds ``"vcm"`` to
    ``ultralytics.data.utils.IMG_FORMATS`` (the set every loader filters file names with) and
    rebinds ``imread`` in
    ``IMREAD_MODULES`` to a reader that decodes ``.vcm`` files and calls the original for every
    other file; it also registers the Pillow plugin (ultralytics checks data set images with
    Pillow). Forked DataLoader workers inherit it.
    """
    layers = fixed_layers(layers, _ONE_POINT)
    from ultralytics.data.utils import IMG_FORMATS
    from ultralytics.utils import patches

    import vcm_plugin.integrations.pillow  # noqa: F401  (data set checks open images with PIL)

    original = patches.imread.original if isinstance(patches.imread, _VCMImread) else patches.imread
    reader = _VCMImread(original, layers)
    IMG_FORMATS.add(VCM_SUFFIX[1:])
    for name in IMREAD_MODULES:
        importlib.import_module(name).imread = reader


def disable_vcm_files() -> None:
    """Undo ``enable_vcm_files``: the original ``imread`` everywhere, ``"vcm"`` out of
    ``IMG_FORMATS`` (the Pillow plugin stays registered)."""
    reader = _reader()
    if reader is None:
        return
    from ultralytics.data.utils import IMG_FORMATS

    IMG_FORMATS.discard(VCM_SUFFIX[1:])
    for name in IMREAD_MODULES:
        importlib.import_module(name).imread = reader.original


def _ensure_vcm_files() -> None:
    """What the trainer and predictors call: enable at the default count unless enabled."""
    if _reader() is None:
        enable_vcm_files()


@contextmanager
def _reading_layers(layers: int | str | None) -> Any:
    """Decode ``.vcm`` files read in this thread at ``layers`` while the block runs."""
    _OVERRIDE.layers = layers
    try:
        yield
    finally:
        del _OVERRIDE.layers
