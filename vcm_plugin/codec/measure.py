"""Picture-quality measures shared by the CLI demo, the eval and the tests."""

from __future__ import annotations

import numpy as np

#: What :func:`psnr` reports for identical images: a finite ceiling (the eval's rule), so the
#: value stays a number in JSON reports, averages and rate-distortion curves.
PSNR_IDENTICAL_DB = 100.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images of one shape (peak 255, mean
    squared error over every sample); :data:`PSNR_IDENTICAL_DB` (100 dB) when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_IDENTICAL_DB if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
