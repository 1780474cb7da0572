"""Fit the learned parts of the codec on BSDS500 *training* photos (never the eval sets).

Today that is the fixed PCA basis of the ``tae`` backend: the TAEF2 latent of each photo at
the codec's semantic scale, channel covariance, eigenvectors sorted by variance::

    python -m vcm_plugin.codec.fit --data ../shared/data/train-bsds500/train --count 60
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vcm_plugin.codec.backends.tae import TAEBackend
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.layers import Geometry, semantic_image
from vcm_plugin.codec.presets import get_preset


def fit_pca(paths: list[Path], scale: float) -> tuple[np.ndarray, np.ndarray]:
    backend = TAEBackend()
    vectors = []
    for path in tqdm(paths, desc="TAEF2 latents"):
        img = read_rgb(path).astype(np.float64)
        geometry = Geometry.of(img.shape[1], img.shape[0], scale, backend.factor)
        z = backend.raw_latent(semantic_image(img, geometry))
        vectors.append(z.reshape(z.shape[0], -1).T)
    data = np.concatenate(vectors)
    mean = data.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(data - mean, rowvar=False))
    order = np.argsort(eigval)[::-1]
    print("energy share of the top 4 components:", (eigval[order][:4] / eigval.sum()).round(3))
    basis = eigvec[:, order]
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    return mean, basis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "assets" / "tae_pca.npz"
    )
    args = parser.parse_args()
    paths = sorted(args.data.glob("*.jpg"))[: args.count]
    mean, basis = fit_pca(paths, get_preset("tae").semantic_scale)
    np.savez(args.out, mean=mean.astype(np.float32), basis=basis.astype(np.float32))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
