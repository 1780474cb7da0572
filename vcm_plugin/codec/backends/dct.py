"""Training-free backend: low-frequency 8x8 block DCT of YCbCr, weighted like JPEG's tables.

It needs no weights, so ``Codec()`` works with nothing downloaded, and it is fast (two small
matrix products per block row). The 32 kept coefficients per block are the first 20 zig-zag
luma and 6 + 6 chroma coefficients, divided by JPEG quality-50 table values so that one unit
is a perceptually even step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 8
_LUMA_KEEP, _CHROMA_KEEP = 20, 6

_JPEG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=np.float64,
).reshape(8, 8)
_JPEG_CHROMA = np.array(
    [
        17,
        18,
        24,
        47,
        99,
        99,
        99,
        99,
        18,
        21,
        26,
        66,
        99,
        99,
        99,
        99,
        24,
        26,
        56,
        99,
        99,
        99,
        99,
        99,
        47,
        66,
        99,
        99,
        99,
        99,
        99,
        99,
    ]
    + [99] * 32,
    dtype=np.float64,
).reshape(8, 8)


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """Orthonormal DCT-II matrix (rows are basis functions)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def zigzag(n: int = BLOCK) -> list[tuple[int, int]]:
    order = sorted(
        ((i, j) for i in range(n) for j in range(n)),
        key=lambda ij: (ij[0] + ij[1], ij[0] if (ij[0] + ij[1]) % 2 else ij[1]),
    )
    return order


_RGB2YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def rgb_to_ycc(image: np.ndarray) -> np.ndarray:
    return image @ _RGB2YCC.T


def ycc_to_rgb(image: np.ndarray) -> np.ndarray:
    return image @ _YCC2RGB.T


def blockify(plane: np.ndarray) -> np.ndarray:
    """HxW -> (H/8, W/8, 8, 8)."""
    h, w = plane.shape
    return plane.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(0, 2, 1, 3)


def unblockify(blocks: np.ndarray) -> np.ndarray:
    bh, bw = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(bh * BLOCK, bw * BLOCK)


class DCTBackend:
    name = "dct"
    factor = BLOCK
    channels = _LUMA_KEEP + 2 * _CHROMA_KEEP

    def __init__(self, base_step: float = 2.0, device: str = "cpu") -> None:
        self.device = device  # numpy arithmetic: always the CPU, whatever the codec's device
        self._d = dct_matrix()
        zz = zigzag()
        self._keep = [zz[:_LUMA_KEEP], zz[:_CHROMA_KEEP], zz[:_CHROMA_KEEP]]
        tables = [_JPEG_LUMA, _JPEG_CHROMA, _JPEG_CHROMA]
        self._weights = [
            np.array([tables[c][i, j] for i, j in keep]) * base_step / 255.0
            for c, keep in enumerate(self._keep)
        ]
        self._base_step = base_step

    def identity(self) -> str:
        return f"dct-v1-{self._base_step}"

    def encode(self, image: np.ndarray) -> np.ndarray:
        ycc = rgb_to_ycc(image.astype(np.float64))
        ycc[..., 0] -= 0.5
        out = []
        for c in range(3):
            coeffs = self._d @ blockify(ycc[..., c]) @ self._d.T
            rows, cols = zip(*self._keep[c], strict=True)
            kept = coeffs[:, :, list(rows), list(cols)] / self._weights[c]
            out.append(kept.transpose(2, 0, 1))
        return np.concatenate(out).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        _, bh, bw = latent.shape
        planes = []
        start = 0
        for c in range(3):
            n = len(self._keep[c])
            coeffs = np.zeros((bh, bw, BLOCK, BLOCK))
            rows, cols = zip(*self._keep[c], strict=True)
            coeffs[:, :, list(rows), list(cols)] = (
                latent[start : start + n].astype(np.float64).transpose(1, 2, 0) * self._weights[c]
            )
            planes.append(unblockify(self._d.T @ coeffs @ self._d))
            start += n
        ycc = np.stack(planes, axis=-1)
        ycc[..., 0] += 0.5
        return np.clip(ycc_to_rgb(ycc), 0.0, 1.0).astype(np.float32)

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.encode(image) for image in images]

    def decode_batch(self, latents: Sequence[np.ndarray], exact: bool = True) -> list[np.ndarray]:
        """numpy float64 throughout: the same on any thread count, so ``exact`` changes
        nothing."""
        return [self.decode(latent) for latent in latents]
