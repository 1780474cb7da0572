"""The ``mmcv.ops`` import shim that ``mmcv-lite`` needs before ``mmseg.models`` /
``mmseg.apis`` (or ``mmseg.datasets``) import at all.

``mmcv-lite`` ships mmcv without its compiled extension, and ``mmcv.ops`` imports that
extension at once. :func:`ensure_mmcv_ops` puts a small module in ``sys.modules["mmcv.ops"]``
instead: the real, pure-PyTorch ``point_sample`` family from ``mmcv/ops/point_sample.py`` plus
placeholders that raise a clear error when a compiled op is *used*. With a full ``mmcv`` build
nothing is touched.

Nothing happens on import of this module; call :func:`ensure_mmcv_ops` (idempotent) where it is
needed, before importing mmseg's models, or import a module through :func:`import_with_ops`.
:mod:`vcm_plugin.integrations.mmseg` calls it on import (a config's ``custom_imports`` is the
only hook that runs before a runner builds mmseg's models), and
:mod:`vcm_plugin.integrations.mmseg_shards` imports ``mmseg.datasets`` through
:func:`import_with_ops`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["ensure_mmcv_ops", "import_with_ops"]

_SHIM_FLAG = "__vcm_plugin_shim__"
# Names mmcv.ops exports in 2.1.0; used only if its __init__.py cannot be parsed.
_FALLBACK_OPS = (
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "CrissCrossAttention",
    "PSAMask",
    "DeformConv2d",
    "ModulatedDeformConv2d",
    "SyncBatchNorm",
    "nms",
    "batched_nms",
    "roi_align",
    "RoIAlign",
    "MultiScaleDeformableAttention",
    "get_compiler_version",
    "get_compiling_cuda_version",
)
_PURE_MODULE = "point_sample"  # pure PyTorch, needs no compiled extension


def _ops_names(ops_dir: Path) -> list[str]:
    try:
        tree = ast.parse((ops_dir / "__init__.py").read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "__all__"
            ):
                return [str(ast.literal_eval(e)) for e in node.value.elts]  # type: ignore[attr-defined]
    except (OSError, SyntaxError, ValueError):
        pass
    return list(_FALLBACK_OPS)


def _placeholder(name: str) -> type:
    """A stand-in class for a compiled op: importable (so module-level imports succeed and
    ``isinstance`` checks work), raising on use."""

    def _raise(cls: type, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"mmcv.ops.{name} needs mmcv's compiled ops, which this install lacks (mmcv-lite); "
            "vcm_plugin installed an import shim so the rest of mmseg works. Install a full "
            "'mmcv' built for your torch to use this op."
        )

    return type(
        name,
        (),
        {
            "__new__": _raise,
            "__module__": "mmcv.ops",
            "__doc__": f"Placeholder for the compiled op mmcv.ops.{name}.",
        },
    )


def ensure_mmcv_ops() -> bool:
    """Install the ``mmcv.ops`` shim if, and only if, mmcv's compiled extension is missing.

    Returns True when the shim is (now) in place, False when the real ops are used or mmcv is
    not installed. Idempotent; call it before importing ``mmseg.models`` / ``mmseg.apis``.
    """
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return bool(getattr(current, _SHIM_FLAG, False))
    try:
        import mmcv
    except ImportError:
        return False
    if importlib.util.find_spec("mmcv._ext") is not None:
        return False  # a full mmcv: leave it alone
    ops_dir = Path(mmcv.__file__).parent / "ops"
    shim = ModuleType(
        "mmcv.ops", "mmcv.ops import shim installed by vcm_plugin (mmcv-lite has no compiled ops)."
    )
    shim.__path__ = [str(ops_dir)] if ops_dir.is_dir() else []  # submodules import as usual
    shim.__package__ = "mmcv.ops"
    setattr(shim, _SHIM_FLAG, True)
    names = _ops_names(ops_dir)
    for name in names:
        setattr(shim, name, _placeholder(name))
    shim.get_compiler_version = lambda: "n/a (mmcv-lite)"  # type: ignore[attr-defined]
    shim.get_compiling_cuda_version = lambda: "n/a (mmcv-lite)"  # type: ignore[attr-defined]
    shim.__all__ = names  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = shim
    mmcv.ops = shim  # type: ignore[attr-defined]
    try:
        pure = importlib.import_module(f"mmcv.ops.{_PURE_MODULE}")
    except ImportError:
        pure = None
    if pure is not None:
        for name in names:
            if hasattr(pure, name):
                setattr(shim, name, getattr(pure, name))
    return True


def import_with_ops(name: str) -> ModuleType:
    """``importlib.import_module(name)`` after :func:`ensure_mmcv_ops`: for the mmseg modules
    that import ``mmcv.ops`` (``mmseg.datasets``, ``mmseg.models``, ``mmseg.apis``)."""
    ensure_mmcv_ops()
    return importlib.import_module(name)
