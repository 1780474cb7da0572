"""Human-view quality of the decoded image against the original: HaarPSI, MS-SSIM,
SSIMULACRA2, PSNR.

All four are computed (piq on RGB in [0, 1]; SSIMULACRA2 by the ``ssimulacra2`` package, a
numpy port of libjxl's tool) and each gets its own curve, BD-rates and rates at accuracy
levels in ``summary.json`` → ``by_metric``; ``--metric`` picks the primary one (default
``haarpsi``). The set's number is the mean over images (PSNR: mean of per-image dB, the
CompressAI/Kodak convention). PSNR has no accuracy levels: the original against itself is
infinite (100 dB here by convention), so "95 % of uncompressed" means nothing. LPIPS and
DISTS need VGG16 and their own weights in ``$TORCH_HOME/hub/checkpoints`` (piq would download
them, which is not possible here); they are computed when those files are present and skipped
with a message otherwise. MS-SSIM needs images of at least 161 px per side; smaller images get NaN.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.datasets import Item, read_quality
from vcm_eval.tasks.base import Task
from vcm_plugin import VCMError
from vcm_plugin.codec.measure import psnr

__all__ = ["QualityTask", "psnr", "ssimulacra2", "LEARNED_WEIGHTS"]

METRICS = ("haarpsi", "ms-ssim", "ssimulacra2", "psnr", "lpips", "dists")
# file names piq's load_state_dict_from_url / torchvision would look for in hub/checkpoints
LEARNED_WEIGHTS = {
    "lpips": ("vgg16-397923af.pth", "lpips_weights.pt"),
    "dists": ("vgg16-397923af.pth", "dists_weights.pt"),
}
_HIGHER = {
    "haarpsi": True,
    "ms-ssim": True,
    "ssimulacra2": True,
    "psnr": True,
    "lpips": False,
    "dists": False,
}
_NO_LEVELS = {
    "psnr": "PSNR of the original against itself is infinite (100 dB by "
    "convention): no fraction of it is an accuracy level",
    "lpips": "a distance (0 for the original): no fraction of it is a level",
    "dists": "a distance (0 for the original): no fraction of it is a level",
}


def ssimulacra2(a: np.ndarray, b: np.ndarray) -> float:
    """SSIMULACRA2 score of ``b`` against the reference ``a`` (uint8 RGB; 100 = identical)."""
    import io

    from PIL import Image
    from ssimulacra2 import compute_ssimulacra2

    def ppm(x: np.ndarray) -> io.BytesIO:  # the package reads files; PPM costs no coding
        f = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(x), "RGB").save(f, format="PPM")
        f.seek(0)
        return f

    return float(compute_ssimulacra2(ppm(a), ppm(b)))


def _learned_available(name: str) -> tuple[bool, list[Path]]:
    import torch

    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    files = [ckpt / f for f in LEARNED_WEIGHTS[name]]
    return all(f.is_file() for f in files), files


class QualityTask(Task):
    """Full-reference quality of decoded images (a folder of images, no ground truth)."""

    name = "quality"
    vcm_points = "viewer"  # what a person looks at: the viewer points, not the analytics ones

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        m = (self.options.get("metric") or "haarpsi").lower()
        if m not in METRICS:
            raise VCMError(f"unknown quality metric {m!r}; choose from {', '.join(METRICS)}")
        self.metric = m
        self.higher_is_better = _HIGHER[m]
        self.learned: list[str] = []
        for name in ("lpips", "dists"):
            ok, files = _learned_available(name)
            if ok:
                self.learned.append(name)
            elif not self.options.get("_quiet"):
                print(
                    f"[quality] {name.upper()} skipped: weights not found "
                    f"({', '.join(str(f) for f in files)})",
                    file=sys.stderr,
                )
        if m in ("lpips", "dists") and m not in self.learned:
            raise VCMError(
                f"--metric {m}: its weights are not present "
                f"({', '.join(map(str, _learned_available(m)[1]))})"
            )
        self.options["_quiet"] = True  # workers re-create the task: say it once

    def items(self, data: Path, limit: int | None) -> list[Item]:
        return read_quality(data, limit)

    def describe(self) -> str:
        extra = f" + {', '.join(self.learned)}" if self.learned else ""
        return (
            f"piq PSNR / MS-SSIM / HaarPSI, ssimulacra2 {_version('ssimulacra2')}{extra}; "
            f"primary: {self.metric}"
        )

    def secondary_metrics(self) -> dict[str, bool]:
        return {
            m: _HIGHER[m]
            for m in ("haarpsi", "ms-ssim", "ssimulacra2", "psnr", *self.learned)
            if m != self.metric
        }

    def levels_note(self, metric: str) -> str | None:
        return _NO_LEVELS.get(metric)

    def setup(self) -> None:
        import piq
        import torch

        self._torch = torch
        self._piq = piq
        self._nets = {}
        if "lpips" in self.learned:
            self._nets["lpips"] = piq.LPIPS()
        if "dists" in self.learned:
            self._nets["dists"] = piq.DISTS()
        self._cache: tuple[str, Any] | None = None

    def _ref(self, item: Item) -> np.ndarray:
        from vcm_eval.datasets import load_rgb

        if self._cache is None or self._cache[0] != item.id:
            self._cache = (item.id, load_rgb(item.path))
        return self._cache[1]

    def score(self, item: Item, img: np.ndarray) -> dict[str, Any]:
        ref = self._ref(item)
        if ref.shape != img.shape:
            raise VCMError(f"{item.id}: decoded size {img.shape} != original {ref.shape}")
        t = self._torch
        x = t.from_numpy(np.array(ref)).permute(2, 0, 1)[None].float() / 255
        y = t.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
        out: dict[str, Any] = {"psnr": psnr(ref, img), "ssimulacra2": ssimulacra2(ref, img)}
        with t.inference_mode():
            out["haarpsi"] = float(self._piq.haarpsi(x, y, data_range=1.0))
            if min(ref.shape[:2]) > 160:
                out["ms-ssim"] = float(self._piq.multi_scale_ssim(x, y, data_range=1.0))
            else:
                out["ms-ssim"] = float("nan")
            for name, net in self._nets.items():
                out[name] = float(net(x, y))
        return out

    def aggregate(self, items: list[Item], results: list[dict[str, Any]]) -> dict[str, float]:
        keys = ["haarpsi", "ms-ssim", "ssimulacra2", "psnr", *self.learned]
        return {
            k: float(np.nanmean([r[k] for r in results])) if results else float("nan") for k in keys
        }
