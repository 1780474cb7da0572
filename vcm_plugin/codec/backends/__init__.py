"""Latent backends by name; each has an id written into every stream it encodes.

Registered like presets (:func:`register`): a backend is a name, a stream id and a factory
``device -> LatentBackend``. The built-in factories import their module only when called, so
``import vcm_plugin`` does not load torch models. A stream's id must keep naming one backend,
so an id or a name already taken by another backend is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vcm_plugin.codec.backends.base import LatentBackend
from vcm_plugin.errors import VCMError


@dataclass(frozen=True)
class Backend:
    """A registered backend: ``name`` (what presets name), ``backend_id`` (in the stream)
    and ``factory`` (builds it on a device)."""

    name: str
    backend_id: int
    factory: Callable[[str], LatentBackend]


def _dct(device: str) -> LatentBackend:
    from vcm_plugin.codec.backends.dct import DCTBackend

    return DCTBackend(device=device)


def _tae(device: str) -> LatentBackend:
    from vcm_plugin.codec.backends.tae import TAEBackend

    return TAEBackend(device=device)


BACKENDS: dict[str, Backend] = {}
#: name -> the id written into streams (every registered backend)
BACKEND_IDS: dict[str, int] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend``; the same one again is a no-op, a clash of name or id raises."""
    for taken in BACKENDS.values():
        same_name, same_id = taken.name == backend.name, taken.backend_id == backend.backend_id
        if (same_name or same_id) and taken != backend:
            raise VCMError(
                f"backend {backend.name!r} (id {backend.backend_id}) clashes with the "
                f"registered backend {taken.name!r} (id {taken.backend_id})"
            )
    BACKENDS[backend.name] = backend
    BACKEND_IDS[backend.name] = backend.backend_id
    return backend


register(Backend("dct", 1, _dct))
register(Backend("tae", 2, _tae))


def create(name: str, device: str = "cpu") -> LatentBackend:
    """The backend ``name`` built on ``device``."""
    backend = BACKENDS.get(name)
    if backend is None:
        raise VCMError(f"unknown backend '{name}'; known: {', '.join(BACKENDS)}")
    return backend.factory(device)
