"""The ``ray`` engine's session helpers, shared by ``vcm encode-dataset`` (the shard encoder,
:mod:`vcm_plugin.datasets.shards`) and the eval harness (``vcm_eval.rate_accuracy``).

Ray is an optional extra (``pip install 'vcm_plugin[ray]'``), imported only when a caller asks
for this engine. Errors are :class:`~vcm_plugin.errors.VCMError` in library terms (engines,
addresses); the command lines phrase them with their own flags.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from vcm_plugin.errors import VCMError

__all__ = ["ENGINES", "check_engine", "import_ray", "ray_results", "ray_session"]

#: ``local``: this process or a process pool; ``ray``: Ray tasks (a local instance or a cluster).
ENGINES = ("local", "ray")


def check_engine(engine: str, address: str | None = None) -> None:
    """Refuse an unknown engine, and a Ray address given to an engine other than ``ray``."""
    if engine not in ENGINES:
        raise VCMError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise VCMError(
            f"a Ray address ({address!r}) applies only to the ray engine, "
            f"not to the {engine!r} engine"
        )


def import_ray() -> Any:
    """``import ray`` with a clear message when it is missing (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise VCMError(
            "the ray engine needs Ray: pip install 'vcm_plugin[ray]' (or pip install ray)"
        ) from None
    return ray


class ray_session:  # noqa: N801 - used like a function: ``with ray_session(...) as ray:``
    """Use the running Ray instance, or start one: local (``num_cpus=workers``) when
    ``address`` is None, else connect (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
    Shuts down only what it started."""

    def __init__(self, address: str | None, workers: int | None) -> None:
        self.address, self.workers, self.started = address, workers, False

    def __enter__(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                else:
                    ray.init(
                        num_cpus=self.workers or os.cpu_count() or 1,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                    )
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "a local instance"
                raise VCMError(f"cannot start or reach Ray at {where}: {e}") from None
            self.started = True
        return ray

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            import_ray().shutdown()


def ray_results(ray: Any, refs: list[Any]) -> Iterator[tuple[Any, Any]]:
    """(ref, result) as tasks finish; a task's VCMError comes back as a VCMError, and the
    tasks still pending are cancelled when the caller stops early or fails."""
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, VCMError):
                        raise VCMError(str(cause)) from None
                    raise
                yield ref, result
    finally:
        for ref in pending:
            ray.cancel(ref)
