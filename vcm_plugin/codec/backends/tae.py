"""Generator backend: the TAEF2 latent (32 channels at 1/8 resolution) with a fixed PCA basis.

The PCA basis (fitted on BSDS500 training photos by ``python -m vcm_plugin.codec.fit``) rotates
the weakly correlated channels so the energy sits in the leading ones; it is orthonormal, so a
quantiser step means the same error in either basis.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import torch

from vcm_plugin.codec import weights
from vcm_plugin.codec.backends.taef2 import build_decoder, build_encoder
from vcm_plugin.codec.threads import codec_threads


def load_pca() -> tuple[np.ndarray, np.ndarray]:
    """(mean [C], basis [C, C]) or identity when the asset is absent."""
    asset = resources.files("vcm_plugin.codec") / "assets" / "tae_pca.npz"
    if asset.is_file():
        with asset.open("rb") as fh:
            data = np.load(fh)
            return data["mean"].astype(np.float64), data["basis"].astype(np.float64)
    return np.zeros(32), np.eye(32)


class TAEBackend:
    name = "tae"
    factor = 8
    channels = 32

    def __init__(self) -> None:
        paths = weights.find("taef2")
        self._encoder = build_encoder(self.channels)
        self._decoder = build_decoder(self.channels)
        self._encoder.load_state_dict(
            torch.load(paths["taef2_encoder.pth"], weights_only=True, map_location="cpu"))
        self._decoder.load_state_dict(
            torch.load(paths["taef2_decoder.pth"], weights_only=True, map_location="cpu"))
        # channels-last convolutions: faster oneDNN kernels (eval.bench_speed)
        self._encoder.eval().to(memory_format=torch.channels_last)
        self._decoder.eval().to(memory_format=torch.channels_last)
        self._mean, self._basis = load_pca()
        digest = hashlib.blake2b(self._basis.tobytes() + self._mean.tobytes(), digest_size=6)
        self._identity = f"taef2-{digest.hexdigest()}"

    def identity(self) -> str:
        return self._identity

    def raw_latent(self, image: np.ndarray) -> np.ndarray:
        """Unrotated TAEF2 latent; used to fit the PCA basis."""
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
        with torch.inference_mode(), codec_threads():
            z = self._encoder(x.contiguous(memory_format=torch.channels_last))[0]
            return z.contiguous().numpy().astype(np.float64)

    def encode(self, image: np.ndarray) -> np.ndarray:
        z = self.raw_latent(image)
        c, h, w = z.shape
        u = (z.reshape(c, -1).T - self._mean) @ self._basis
        return u.T.reshape(c, h, w).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        c, h, w = latent.shape
        z = latent.reshape(c, -1).T.astype(np.float64) @ self._basis.T + self._mean
        z = torch.from_numpy(z.T.reshape(1, c, h, w).astype(np.float32))
        with torch.inference_mode(), codec_threads():
            y = self._decoder(z.contiguous(memory_format=torch.channels_last))[0]
        return y.clamp(0, 1).permute(1, 2, 0).contiguous().numpy().astype(np.float32)
