"""Texture-semantic pseudo-labels: where in the image the palette budget should go.

Following Guo et al. (step b), each latent position gets a texture descriptor from the FFT
magnitude of its pixel patch (magnitudes ignore position and flips) plus backend features;
K-means over those features gives content classes, ordered from flat to busy. The classes are
encoder-side only: they decide how many palette entries each kind of content receives.
"""

from __future__ import annotations

import numpy as np

from vcm_plugin.codec.kmeans import kmeans

_BANDS = ((0.0, 0.2), (0.2, 0.45), (0.45, 1.0))


def texture_descriptor(gray: np.ndarray, patch: int) -> np.ndarray:
    """(h*w, 4): log energy in three radial FFT bands and the horizontal/vertical balance."""
    h, w = gray.shape[0] // patch, gray.shape[1] // patch
    blocks = gray[: h * patch, : w * patch].reshape(h, patch, w, patch).transpose(0, 2, 1, 3)
    blocks = blocks - blocks.mean(axis=(2, 3), keepdims=True)
    mag = np.abs(np.fft.fft2(blocks))
    fy = np.abs(np.fft.fftfreq(patch))[:, None] * 2
    fx = np.abs(np.fft.fftfreq(patch))[None, :] * 2
    radius = np.sqrt(fy**2 + fx**2) / np.sqrt(2)
    feats = []
    for lo, hi in _BANDS:
        mask = (radius > lo) & (radius <= hi)
        feats.append(np.log1p(mag[..., mask].sum(axis=-1)))
    horizontal = mag[..., (fx > fy)].sum(axis=-1)
    vertical = mag[..., (fy > fx)].sum(axis=-1)
    feats.append((horizontal - vertical) / (horizontal + vertical + 1e-6))
    return np.stack(feats, axis=-1).reshape(h * w, len(feats))


def content_classes(
    vectors: np.ndarray, gray: np.ndarray, patch: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels per position (0 = flattest class) and each class's texture energy."""
    texture = texture_descriptor(gray, patch)
    feats = np.concatenate([texture, vectors[:, :4]], axis=1)
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-6)
    num_classes = max(1, min(num_classes, len(vectors)))
    labels, _ = kmeans(feats, num_classes, seed=1)
    energy = np.array(
        [
            texture[labels == c, 1:3].sum(axis=1).mean() if np.any(labels == c) else -np.inf
            for c in range(num_classes)
        ]
    )
    order = np.argsort(energy, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(num_classes)
    return rank[labels], energy[order]
