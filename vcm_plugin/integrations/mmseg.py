"""OpenMMLab (mmengine / mmcv / mmsegmentation) integration: ``dict(type='VCMCompress', ...)``.

Importing this module (directly or through a config's ``custom_imports``) does two things:

1. Where mmcv's compiled ops are missing (``mmcv-lite``), installs a small ``mmcv.ops`` import
   shim so that ``mmseg.models`` / ``mmseg.apis`` import at all: the real, pure-PyTorch
   ``point_sample`` family from ``mmcv/ops/point_sample.py`` plus placeholders that raise a clear
   error when a compiled op is *used*. With a full ``mmcv`` build nothing is touched.
2. Registers ``VCMCompress`` in mmengine's root ``TRANSFORMS`` registry, which every
   downstream registry (``mmseg.registry.TRANSFORMS`` …) falls back to, so the type resolves
   inside any OpenMMLab scope.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["VCMCompress", "ensure_mmcv_ops"]

_SHIM_FLAG = "__vcm_plugin_shim__"
# Names mmcv.ops exports in 2.1.0; used only if its __init__.py cannot be parsed.
_FALLBACK_OPS = (
    "sigmoid_focal_loss", "softmax_focal_loss", "SigmoidFocalLoss", "SoftmaxFocalLoss",
    "CrissCrossAttention", "PSAMask", "DeformConv2d", "ModulatedDeformConv2d", "SyncBatchNorm",
    "nms", "batched_nms", "roi_align", "RoIAlign", "MultiScaleDeformableAttention",
    "get_compiler_version", "get_compiling_cuda_version",
)
_PURE_MODULE = "point_sample"  # pure PyTorch, needs no compiled extension


def _ops_names(ops_dir: Path) -> list[str]:
    try:
        tree = ast.parse((ops_dir / "__init__.py").read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "__all__"):
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

    return type(name, (), {"__new__": _raise, "__module__": "mmcv.ops",
                           "__doc__": f"Placeholder for the compiled op mmcv.ops.{name}."})


def ensure_mmcv_ops() -> bool:
    """Install the ``mmcv.ops`` shim if, and only if, mmcv's compiled extension is missing.

    Returns True when the shim is (now) in place, False when the real ops are used or mmcv is
    not installed. Idempotent; call it before importing ``mmseg.models`` if you do not import
    this module first.
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
    shim = types.ModuleType("mmcv.ops", "mmcv.ops import shim installed by vcm_plugin "
                            "(mmcv-lite has no compiled ops).")
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


ensure_mmcv_ops()

import numpy as np  # noqa: E402
from mmcv.transforms import BaseTransform  # noqa: E402
from mmcv.transforms.utils import cache_randomness  # noqa: E402
from mmengine.registry import TRANSFORMS  # noqa: E402

from vcm_plugin.codec.presets import DEFAULT_PRESET  # noqa: E402
from vcm_plugin.integrations._core import (  # noqa: E402
    ANALYTICS,
    LayerSpec,
    check_cache,
    check_channel_order,
    check_layers,
    check_p,
    get_codec,
    layers_repr,
    resolve_cache,
    roundtrip,
)


@TRANSFORMS.register_module()
class VCMCompress(BaseTransform):
    """Replace ``results['img']`` by its VCM decode at a chosen or sampled operating point.

    Pixels only: ``gt_seg_map`` (and every other key) is left exactly as it was, so put it
    anywhere in a pipeline — after ``LoadImageFromFile`` to model a stored/sent picture.

    Required keys: ``img``. Modified keys: ``img``. Added keys: ``vcm_layers`` (layers decoded,
    ``None`` when skipped by ``p``) and ``vcm_bytes`` (bytes a receiver of that operating point
    is sent: for rate-accuracy bookkeeping).

    Args:
        layers: "analytics" (default) = the preset's analytics point; 1 = semantic layer only;
            k; None = all; ``(low, high)`` (a tuple or list from a
            config) = drawn per sample, clamped to the layers the stream holds.
        preset: codec preset.
        p: probability of applying the transform.
        cache: False, True (in-memory) or a directory: encoded streams keyed by image content,
            so later epochs decode without re-encoding.
        channel_order: ``'bgr'`` (what ``LoadImageFromFile`` produces) or ``'rgb'``.
    """

    def __init__(self, layers: LayerSpec = ANALYTICS, preset: str = DEFAULT_PRESET, p: float = 1.0,
                 cache: bool | str = False, channel_order: str = "bgr") -> None:
        super().__init__()
        self.layers = check_layers(layers)
        self.preset = preset
        self.prob = check_p(p)
        self.cache = check_cache(cache)
        self.channel_order = check_channel_order(channel_order)
        get_codec(preset)  # a bad preset fails when the pipeline is built

    @cache_randomness
    def _random_layers(self) -> tuple[bool, int | None]:
        apply = self.prob >= 1.0 or bool(np.random.rand() < self.prob)
        layers = self.layers
        if isinstance(layers, tuple):
            layers = int(np.random.randint(layers[0], layers[1] + 1))
        return apply, layers

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        apply, layers = self._random_layers()
        if not apply:
            results["vcm_layers"], results["vcm_bytes"] = None, None
            return results
        details: dict[str, Any] = {}
        results["img"] = roundtrip(results["img"], layers, self.preset,
                                   channel_order=self.channel_order,
                                   cache=resolve_cache(self.cache), details=details)
        results["vcm_layers"] = details["layers"]
        results["vcm_bytes"] = details["bytes"]
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(layers={layers_repr(self.layers)}, "
                f"preset={self.preset!r}, p={self.prob}, cache={self.cache!r}, "
                f"channel_order={self.channel_order!r})")
