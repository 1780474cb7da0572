"""Latent backends by id; the id is written into every stream."""

from __future__ import annotations

from vcm_plugin.codec.backends.base import LatentBackend
from vcm_plugin.errors import VCMError

BACKEND_IDS = {"dct": 1, "tae": 2}


def create(name: str, device: str = "cpu") -> LatentBackend:
    if name == "dct":
        from vcm_plugin.codec.backends.dct import DCTBackend

        return DCTBackend(device=device)
    if name == "tae":
        from vcm_plugin.codec.backends.tae import TAEBackend

        return TAEBackend(device=device)
    raise VCMError(f"unknown backend '{name}'; known: {', '.join(BACKEND_IDS)}")
