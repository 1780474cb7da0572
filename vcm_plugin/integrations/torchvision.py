"""torchvision: ``VCMImageFolder``, an ``ImageFolder`` whose images are ``.vcm`` files.

Why a class: ``ImageFolder`` only lists the extensions it was written with (``.vcm`` is not
one, so it finds no files), and its ``default_loader`` decodes every layer. The same by hand:
``import vcm_plugin.integrations.pillow`` (registers the format), then
``DatasetFolder(root, loader=torchvision.datasets.folder.default_loader,
extensions=(".vcm",))``. Labels come from the class folder names either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from PIL import Image
from torchvision.datasets import DatasetFolder

from vcm_plugin.codec.layerspec import draw_layers, parse_layers
from vcm_plugin.integrations._core import (
    ANALYTICS,
    LayerSpec,
    layers_repr,
)
from vcm_plugin.integrations.pillow import EXTENSION, open_vcm

__all__ = ["VCMImageFolder", "VCMLoader"]


class VCMLoader:
    """``path -> PIL.Image`` (RGB) decoding ``layers``: None = every layer, k = operating point
    k, ``(low, high)`` = drawn per image. Reads only those layers' bytes. A plain object, so
    DataLoader workers (fork or spawn) receive it."""

    def __init__(self, layers: LayerSpec = ANALYTICS) -> None:
        self.layers = parse_layers(layers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={layers_repr(self.layers)})"

    def __call__(self, path: str | os.PathLike[str]) -> Image.Image:
        return open_vcm(path, layers=draw_layers(self.layers))


class VCMImageFolder(DatasetFolder):
    """``root/<class>/<name>.vcm`` → ``(image, class_index)``, like ``ImageFolder``.

    ``layers``: the operating point each image is decoded at (see ``VCMLoader``); the other
    arguments are ``ImageFolder``'s.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layers: LayerSpec = ANALYTICS,
        transform: Callable[..., Any] | None = None,
        target_transform: Callable[..., Any] | None = None,
        allow_empty: bool = False,
    ) -> None:
        super().__init__(
            root,
            loader=VCMLoader(layers),
            extensions=(EXTENSION,),
            transform=transform,
            target_transform=target_transform,
            allow_empty=allow_empty,
        )
        self.imgs = self.samples  # ImageFolder's alias
