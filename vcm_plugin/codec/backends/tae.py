"""Generator backend: the TAEF2 latent (32 channels at 1/8 resolution) with a fixed PCA basis.

The PCA basis (fitted on BSDS500 training photos by ``python -m vcm_plugin.codec.fit``) rotates
the weakly correlated channels so the energy sits in the leading ones; it is orthonormal, so a
quantiser step means the same error in either basis. The networks run on the CPU (the encoder, and
the decoder wherever a later layer is coded against its pixels, on one intra-op thread: see
``vcm_plugin.codec.threads``) or on a CUDA device; the PCA rotation, quantisation
and entropy coding always run on the CPU in float64, so the symbols a stream carries never
depend on where the networks ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources

import numpy as np
import torch

from vcm_plugin.codec import weights
from vcm_plugin.codec.backends.taef2 import build_decoder, build_encoder
from vcm_plugin.codec.threads import codec_threads

#: Largest batch sent through a network at once on a GPU (bounds device memory at 1280x720).
GPU_BATCH = 32


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

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        paths = weights.find("taef2")
        self._encoder = build_encoder(self.channels)
        self._decoder = build_decoder(self.channels)
        self._encoder.load_state_dict(
            torch.load(paths["taef2_encoder.pth"], weights_only=True, map_location="cpu")
        )
        self._decoder.load_state_dict(
            torch.load(paths["taef2_decoder.pth"], weights_only=True, map_location="cpu")
        )
        # channels-last convolutions: faster oneDNN and cuDNN kernels (vcm_eval.bench_speed)
        for net in (self._encoder, self._decoder):
            net.eval().to(self.device, memory_format=torch.channels_last)
        self._mean, self._basis = load_pca()
        digest = hashlib.blake2b(self._basis.tobytes() + self._mean.tobytes(), digest_size=6)
        self._identity = f"taef2-{digest.hexdigest()}"

    def identity(self) -> str:
        return self._identity

    @contextmanager
    def _arithmetic(self, exact: bool) -> Iterator[None]:
        """Full float32 arithmetic: no TF32 convolutions on a GPU. On the CPU one thread when
        ``exact`` (pixels that must not depend on the caller's thread count); otherwise the
        caller's threads: faster on two cores (README, Assumptions), and oneDNN's per-thread
        split of the sums moves a pixel by at most a level now and then
        (tests/test_determinism.py)."""
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.backends.cudnn.flags(
                    enabled=True, benchmark=False, deterministic=True, allow_tf32=False
                ):
                    yield
            elif exact:
                with codec_threads():
                    yield
            else:
                yield

    def _run(
        self, net: torch.nn.Module, arrays: Sequence[np.ndarray], exact: bool = True
    ) -> list[np.ndarray]:
        """``net`` over (C, H, W) float32 arrays. On the CPU one at a time (a batch could pick
        other kernels and change a sample's float sums); on a GPU in batches of equal shape."""
        out: list[np.ndarray | None] = [None] * len(arrays)
        batch = GPU_BATCH if self.device.type == "cuda" else 1
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape, []).append(i)
        with self._arithmetic(exact):
            for members in by_shape.values():
                for start in range(0, len(members), batch):
                    chunk = members[start : start + batch]
                    x = torch.from_numpy(np.stack([arrays[i] for i in chunk])).to(self.device)
                    y = net(x.contiguous(memory_format=torch.channels_last))
                    y = y.float().contiguous().cpu().numpy()
                    for j, i in enumerate(chunk):
                        out[i] = y[j]
        return out  # type: ignore[return-value]

    def raw_latents(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Unrotated TAEF2 latents of (H, W, 3) float images; used to fit the PCA basis."""
        inputs = [np.ascontiguousarray(im.transpose(2, 0, 1), dtype=np.float32) for im in images]
        return [z.astype(np.float64) for z in self._run(self._encoder, inputs)]

    def raw_latent(self, image: np.ndarray) -> np.ndarray:
        return self.raw_latents([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for z in self.raw_latents(images):
            c, h, w = z.shape
            u = (z.reshape(c, -1).T - self._mean) @ self._basis
            out.append(u.T.reshape(c, h, w).astype(np.float32))
        return out

    def decode_batch(self, latents: Sequence[np.ndarray], exact: bool = True) -> list[np.ndarray]:
        inputs = []
        for latent in latents:
            c, h, w = latent.shape
            z = latent.reshape(c, -1).T.astype(np.float64) @ self._basis.T + self._mean
            inputs.append(z.T.reshape(c, h, w).astype(np.float32))
        return [
            np.clip(y, 0, 1).transpose(1, 2, 0).astype(np.float32)
            for y in self._run(self._decoder, inputs, exact)
        ]

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encode_batch([image])[0]

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self.decode_batch([latent])[0]
