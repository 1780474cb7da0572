"""Layer specs: how a caller names the operating point(s) to decode. One grammar for every
integration (Albumentations, torchvision, mmseg, ultralytics, face-alignment, Pillow) and the
shard reader, checked once, where the option is given, so a typo fails before training starts.

* ``None``: every layer the stream holds;
* ``"analytics"`` (``presets.ANALYTICS``): the stream's preset's analytics point;
* ``k`` (an int >= 1): operating point k, ``1`` = the semantic layer only;
* ``(low, high)``, a tuple or a two-item list (as configs write it): a count drawn uniformly
  from low..high, inclusive, per image;
* where a caller allows choices (the shard reader): a set, or a list of one or three and more
  counts, or a ``range``: a count drawn from those values.

Counts above what a stream holds are clamped to it by the readers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from vcm_plugin.codec.presets import ANALYTICS
from vcm_plugin.errors import VCMError

__all__ = ["LayerSpec", "draw_layers", "fixed_layers", "parse_layers", "parse_point"]

LayerSpec = int | tuple[int, int] | str | None
"""A parsed spec: ``None``, ``"analytics"``, ``k`` or an inclusive ``(low, high)`` range
(``parse_layers(..., choices=True)`` may also give a ``frozenset`` of counts)."""


def _count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def parse_layers(
    layers: Any, name: str = "layers", *, choices: bool = False
) -> LayerSpec | frozenset[int]:
    """Validate a layer spec (module docstring) and return it normalised: an int, a
    ``(low, high)`` tuple of ints, a ``frozenset`` of ints (``choices`` only), or ``None`` /
    ``"analytics"`` unchanged. Raises VCMError naming ``name``."""
    if layers is None or layers == ANALYTICS:
        return layers
    if _count(layers):
        if layers < 1:
            raise VCMError(f"{name} must be >= 1 (1 = semantic layer only), got {layers}")
        return int(layers)
    pair = isinstance(layers, (tuple, list)) and len(layers) == 2
    many = (
        choices
        and isinstance(layers, (tuple, list, set, frozenset, range))
        and len(layers) > 0
        and not pair
    )
    if pair or many:
        if not all(_count(v) for v in layers):
            raise VCMError(f"{name} {'range' if pair else 'choices'} must be ints, got {layers!r}")
        values = tuple(int(v) for v in layers)
        if min(values) < 1:
            raise VCMError(f"{name} must be counts >= 1 (1 = semantic layer only), got {layers!r}")
        if many:
            return frozenset(values)
        low, high = values
        if low > high:
            raise VCMError(f"{name} range must satisfy 1 <= low <= high, got ({low}, {high})")
        return (low, high)
    if isinstance(layers, Sequence) and not isinstance(layers, (str, bytes)) and not choices:
        raise VCMError(f"{name} range must be two ints (low, high), got {layers!r}")
    extra = ", a set of ints >= 1 to draw from" if choices else ""
    raise VCMError(
        f"{name} must be an int >= 1, a (low, high) pair{extra}, {ANALYTICS!r} or "
        f"None, got {layers!r}"
    )


def parse_point(text: str | int, name: str = "layers") -> int | str:
    """One operating point as a command line or a query string writes it: ``"analytics"`` or
    a layer count >= 1 (decimal digits; an int passes as it is)."""
    if text == ANALYTICS:
        return ANALYTICS
    if _count(text):
        value = int(text)
    elif isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 6:
        value = int(text)
    else:
        raise VCMError(f"{name} must be {ANALYTICS!r} or a layer count >= 1, got {text!r}")
    if value < 1:
        raise VCMError(f"{name} must be {ANALYTICS!r} or a layer count >= 1, got {text!r}")
    return value


def fixed_layers(layers: Any, who: str, name: str = "layers") -> int | str | None:
    """A spec that must name one operating point (``None``, ``"analytics"`` or ``k``): reading
    a stream, predicting, Pillow's ``im.layers``. A range is refused with a VCMError naming
    ``who`` needs the fixed count."""
    spec = parse_layers(layers, name)
    if isinstance(spec, tuple):
        raise VCMError(f"{who}: a fixed layer count is needed, not a range ({name}={layers!r})")
    return spec


def draw_layers(
    spec: LayerSpec | frozenset[int], rng: random.Random | None = None
) -> int | str | None:
    """The operating point for one image: a range or a set drawn with ``rng`` (the ``random``
    module when None), anything else as it is."""
    if isinstance(spec, tuple):
        return (rng or random).randint(spec[0], spec[1])
    if isinstance(spec, frozenset):
        return (rng or random).choice(sorted(spec))
    return spec
