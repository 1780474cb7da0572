"""TAEF2: the tiny autoencoder for the FLUX.2 latent (MIT, Ollin Boer Bohan), as plain modules.

The module tree mirrors the published state dicts key for key, so ``load_state_dict`` with
``strict=True`` checks the architecture against the weight files.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus skip, then ReLU; low-resolution blocks add a normed branch."""

    def __init__(self, channels: int = 64, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(channels, channels),
            nn.ReLU(),
            _conv(channels, channels),
            nn.ReLU(),
            _conv(channels, channels),
        )
        self.pool = (
            nn.Sequential(
                nn.Conv2d(channels, 256, 1, bias=False),
                nn.GroupNorm(4, 256),
                nn.ReLU(),
                nn.Conv2d(256, channels, 1, bias=False),
            )
            if pooled
            else None
        )
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def build_encoder(latent_channels: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, 64), _Block()]
    for stage in range(3):
        layers.append(_conv(64, 64, stride=2, bias=False))
        layers += [_Block(pooled=stage == 2) for _ in range(3)]
    layers.append(_conv(64, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, 64), nn.ReLU()]
    for stage in range(3):
        layers += [_Block(pooled=stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]
    layers += [_Block(), _conv(64, 3)]
    return nn.Sequential(*layers)
