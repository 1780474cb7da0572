"""Load a legacy YOLOv5 checkpoint (``yolov5n.pt`` and friends) without the YOLOv5 code.

Why: the checkpoint is a pickle of ``models.yolo.Model`` / ``models.common.*`` objects, so
``torch.load`` needs YOLOv5's ``models``/``utils`` packages on ``sys.path``. The ``yolov5`` PyPI
package that vendors them pulls in tensorboard, boto3, sahi, roboflow, pandas, seaborn… for a
detector whose forward pass is ~60 lines. This module maps the pickled class names to
equivalent minimal modules (same attribute names, so every tensor in the checkpoint is used
as is) and reproduces YOLOv5 v6/v7's forward and anchor decoding exactly. :func:`head_scores`
turns the head's output into boxes and per-class confidences; callers bring NMS: the eval
harness uses ultralytics' NMS and pycocotools, the edge worker torchvision's.

Only the classes a detection checkpoint references are provided (Model/DetectionModel,
Detect, Conv, C3, Bottleneck, SPPF, SPP, Focus, Concat); anything else raises a clear
:class:`vcm_plugin.VCMError` instead of an obscure unpickling error.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vcm_plugin.errors import VCMError

__all__ = ["NotLegacyCheckpoint", "head_scores", "load_yolov5_checkpoint", "xywh_to_xyxy"]


class NotLegacyCheckpoint(VCMError):
    """The file is a loadable checkpoint, but not a legacy YOLOv5 one (e.g. ultralytics)."""


class Conv(nn.Module):
    """conv → BN → act (BN may be fused away in exported checkpoints)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = getattr(self, "bn", None)
        return self.act(bn(self.conv(x)) if bn is not None else self.conv(x))


class Bottleneck(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class SPP(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Focus(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(
            torch.cat(
                (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1
            )
        )


class Concat(nn.Module):
    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """Anchor-based YOLOv5 head: returns (B, N, 5 + nc) = xywh (pixels), obj, class probs."""

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.anchors[i]
        shape = 1, self.na, ny, nx, 2
        yv, xv = torch.meshgrid(
            torch.arange(ny, dtype=a.dtype), torch.arange(nx, dtype=a.dtype), indexing="ij"
        )
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (a * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        z = []
        for i in range(self.nl):
            p = self.m[i](x[i])
            bs, _, ny, nx = p.shape
            p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            grid, anchor_grid = self._make_grid(nx, ny, i)
            xy, wh, conf = p.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * self.stride[i]
            wh = (wh * 2) ** 2 * anchor_grid
            z.append(torch.cat((xy, wh, conf), 4).view(bs, -1, self.no))
        return torch.cat(z, 1)


class Model(nn.Module):
    """YOLOv5 ``Model``/``DetectionModel``: runs ``self.model`` with its ``f``/``save`` routing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: list[Any] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


def head_scores(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the :class:`Detect` head's output ``(..., 5 + nc)``: returns the xywh boxes
    ``(..., 4)`` (centre and size, pixels of the network input) and the per-class
    confidences ``(..., nc)`` (objectness × class probability)."""
    return pred[..., :4], pred[..., 5:] * pred[..., 4:5]


def xywh_to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes ``(..., 4)`` to corner boxes ``(..., 4)``."""
    xy, wh = xywh[..., :2], xywh[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


_CLASSES = {
    ("models.yolo", "Model"): Model,
    ("models.yolo", "DetectionModel"): Model,
    ("models.yolo", "Detect"): Detect,
    **{("models.common", c.__name__): c for c in (Conv, Bottleneck, C3, SPPF, SPP, Focus, Concat)},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CLASSES:
            return _CLASSES[(module, name)]
        if module.startswith(("models", "utils")):
            raise VCMError(
                f"legacy YOLOv5 checkpoint uses {module}.{name}, which this loader "
                "does not provide (only detection models are supported)"
            )
        if module.startswith("ultralytics"):
            raise NotLegacyCheckpoint(f"{module}.{name} belongs to an ultralytics checkpoint")
        return super().find_class(module, name)


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an Unpickler plus ``load``."""

    Unpickler = _Unpickler

    @staticmethod
    def load(f: Any, **kw: Any) -> Any:
        return _Unpickler(f, **kw).load()


def load_yolov5_checkpoint(path: str | Path) -> tuple[nn.Module, dict[int, str]]:
    """Return (float32 eval-mode model, class names) from a legacy YOLOv5 ``.pt`` file."""
    path = Path(path)
    if not path.is_file():
        raise VCMError(f"YOLOv5 checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PickleModule)
    except VCMError:
        raise
    except Exception as e:  # corrupt file, wrong format
        raise VCMError(f"cannot load legacy YOLOv5 checkpoint {path}: {e}") from e
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, Model):
        raise NotLegacyCheckpoint(f"{path} is not a legacy YOLOv5 detection checkpoint")
    model = model.float().eval()
    for m in model.modules():  # fold BN into the conv, as YOLOv5's val.py does (2x faster)
        if isinstance(m, Conv) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
            m.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(m.conv, m.bn)
            del m.bn
    for m in model.modules():  # attributes older releases did not pickle
        if isinstance(m, nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    return model, {int(k): str(v) for k, v in names.items()}
