"""Small deterministic K-means (k-means++ seeding with a fixed seed, Lloyd iterations)."""

from __future__ import annotations

import numpy as np


def _sqdist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return (
        (x * x).sum(axis=1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None]
    )


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, iterations: int = 10, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and centres (k, D); k is clipped to the number of distinct points."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k = max(1, min(k, n))
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    centres = [x[int(np.argmax(w))]]
    closest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        p = closest * w
        total = p.sum()
        if total <= 0:
            break
        pick = int(np.searchsorted(np.cumsum(p), rng.random() * total))
        pick = min(pick, n - 1)
        centres.append(x[pick])
        closest = np.minimum(closest, ((x - x[pick]) ** 2).sum(axis=1))
    c = np.array(centres)
    labels = np.argmin(_sqdist(x, c), axis=1)
    for _ in range(iterations):
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x * w[:, None])
        mass = np.bincount(labels, weights=w, minlength=len(c))
        keep = mass > 0
        c = sums[keep] / mass[keep][:, None]
        new = np.argmin(_sqdist(x, c), axis=1)
        if np.array_equal(new, labels) and keep.all():
            break
        labels = new
    return labels, c
