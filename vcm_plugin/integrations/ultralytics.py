"""Ultralytics YOLO integration: train on what the edge sends, predict on the semantic layer.

Three hooks, one per idiom ultralytics users already know:

* ``VCMCompression`` — an Albumentations transform: ``model.train(..., augmentations=[...])``.
* ``VCMTrainer`` — ``model.train(..., trainer=VCMTrainer, vcm_layers=(1, 4))``: every training
  image (optionally every validation image) goes through encode → decode; options come from the
  train call (``vcm_*`` keys), from a small YAML (``vcm="vcm.yaml"``) or from
  ``VCMTrainer.with_options(...)``.
* ``VCMDetectionPredictor`` / ``add_vcm_callback`` / ``predict_streams`` — inference on the
  semantic layer, from images or directly from ``.vcm`` streams.

ultralytics hands images around as OpenCV BGR uint8; everything here converts for the codec.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ultralytics.data.augment import Compose, Format
from ultralytics.models.yolo.detect import DetectionPredictor, DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, YAML

from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.errors import VCMError
from vcm_plugin.integrations._core import (
    LayerSpec,
    check_cache,
    check_layers,
    check_p,
    decode_layers,
    get_codec,
    layers_repr,
    read_stream,
    resolve_cache,
    roundtrip,
    sample_layers,
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
    "install_vcm",
    "predict_streams",
]

_STAGES = ("load", "final")


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class VCMOptions:
    """What ``VCMTrainer`` does to each image.

    Attributes:
        layers: 1 = semantic layer only; k; None = all; (low, high) sampled per image.
        preset: codec preset.
        p: probability that an image is round-tripped.
        val: also round-trip validation images (evaluate on what the edge sends).
        cache: False, True (memory) or a directory: encoded streams keyed by image content.
        stage: ``"load"`` — each image as loaded (resized to ``imgsz``), before mosaic and the
            other augmentations, like a stored/sent picture; with ``cache`` every epoch after
            the first only decodes. ``"final"`` — the augmented network input, inserted just
            before ``Format`` (re-inserted when ``close_mosaic()`` rebuilds the pipeline);
            never repeats, so the cache cannot help there.
    """

    layers: LayerSpec = 1
    preset: str = DEFAULT_PRESET
    p: float = 1.0
    val: bool = False
    cache: bool | str = False
    stage: str = "load"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", check_layers(self.layers))
        object.__setattr__(self, "p", check_p(self.p))
        cache = os.fspath(self.cache) if isinstance(self.cache, os.PathLike) else self.cache
        object.__setattr__(self, "cache", check_cache(cache))
        if not isinstance(self.val, bool):
            raise VCMError(f"val must be True or False, got {self.val!r}")
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
    return roundtrip(img, sample_layers(o.layers), o.preset, channel_order="bgr",
                     cache=resolve_cache(o.cache))


class _VCMLoadImage:
    """Wraps ``dataset.load_image``: the stored picture as the receiver decodes it."""

    def __init__(self, load_image: Callable[..., Any], options: VCMOptions) -> None:
        self.load_image = load_image
        self.options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        im, hw0, hw = self.load_image(*args, **kwargs)
        return _roundtrip_bgr(im, self.options), hw0, hw


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
    index = next((i for i in range(len(items) - 1, -1, -1) if isinstance(items[i], Format)),
                 len(items))
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
    ``vcm_val``, ``vcm_cache``, ``vcm_stage`` (see ``VCMOptions``). The options used are written
    to ``<save_dir>/vcm.yaml`` beside ``args.yaml``.
    """

    vcm_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None,
                 _callbacks: dict[str, list[Callable[..., Any]]] | None = None) -> None:
        overrides = dict(overrides or {})
        self.vcm = _pop_options(overrides, self.vcm_defaults)
        super().__init__(cfg, overrides, _callbacks)
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

    vcm_layers: ClassVar[int | None] = 1
    vcm_preset: ClassVar[str] = DEFAULT_PRESET

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None,
                 _callbacks: dict[str, list[Callable[..., Any]]] | None = None) -> None:
        overrides = dict(overrides or {})
        layers = check_layers(overrides.pop("vcm_layers", self.vcm_layers))
        if isinstance(layers, tuple):
            raise VCMError("prediction decodes a fixed layer count, not a range")
        self.vcm_layers = layers
        self.vcm_preset = overrides.pop("vcm_preset", self.vcm_preset)
        get_codec(self.vcm_preset)
        super().__init__(cfg, overrides, _callbacks)  # type: ignore[call-arg]

    @classmethod
    def with_options(cls, layers: int | None = 1, preset: str = DEFAULT_PRESET) -> type[Any]:
        """``model.predict(src, predictor=VCMDetectionPredictor.with_options(layers=2))``.

        Returns the same class for the same options, so ultralytics keeps reusing its predictor.
        """
        if isinstance(check_layers(layers), tuple):
            raise VCMError("prediction decodes a fixed layer count, not a range")
        get_codec(preset)
        return _predictor_class(cls, layers, preset)

    def preprocess(self, im: Any) -> Any:
        if isinstance(im, list):
            im[:] = [roundtrip(x, self.vcm_layers, self.vcm_preset, channel_order="bgr")
                     for x in im]
        else:  # torch tensor source: N x 3 x H x W, RGB, float in [0, 1]
            import torch

            arrs = [roundtrip(x.permute(1, 2, 0).cpu().numpy(), self.vcm_layers,
                              self.vcm_preset) for x in im]
            im = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).to(im.device, im.dtype)
        return super().preprocess(im)  # type: ignore[misc]


@cache
def _predictor_class(base: type[Any], layers: int | None, preset: str) -> type[Any]:
    return type(base.__name__, (base,), {
        "vcm_layers": layers, "vcm_preset": preset, "__module__": base.__module__})


class VCMDetectionPredictor(VCMPredictorMixin, DetectionPredictor):
    """``model.predict(source, predictor=VCMDetectionPredictor)`` runs on the semantic layer."""


def add_vcm_callback(model: Any, layers: int | None = 1, preset: str = DEFAULT_PRESET) -> Any:
    """Any-task alternative to the predictor subclass: an ``on_predict_batch_start`` callback
    that replaces each batch image by its decode. Returns the model (chainable)."""
    if isinstance(check_layers(layers), tuple):
        raise VCMError("prediction decodes a fixed layer count, not a range")
    get_codec(preset)

    def on_predict_batch_start(predictor: Any) -> None:
        images = predictor.batch[1]
        if isinstance(images, list):
            images[:] = [roundtrip(x, layers, preset, channel_order="bgr") for x in images]

    model.add_callback("on_predict_batch_start", on_predict_batch_start)
    return model


def decode_stream_bgr(source: bytes | str | os.PathLike[str],
                      layers: int | None = 1) -> np.ndarray:
    """Decode the first ``layers`` layers of a ``.vcm`` stream to an OpenCV BGR array; from a
    file only those layers' bytes are read."""
    blob = read_stream(source, layers)
    rgb = decode_layers(blob, layers)  # a Codec decodes streams of every preset
    return np.ascontiguousarray(rgb[..., ::-1])


def predict_streams(model: Any, streams: Iterable[bytes | str | os.PathLike[str]],
                    layers: int | None = 1, **predict_kwargs: Any) -> list[Any]:
    """``model.predict`` straight from ``.vcm`` streams (bytes or paths), decoding only the
    layers it needs (default: the semantic layer). Returns the ultralytics ``Results`` list,
    with ``path`` set to the stream's file name where one was given."""
    if isinstance(check_layers(layers), tuple):
        raise VCMError("prediction decodes a fixed layer count, not a range")
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
