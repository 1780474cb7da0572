"""Bjøntegaard delta rate (BD-rate) between two rate–metric curves.

Why this module exists: the harness steers the project by one number per baseline, so the
computation must be reproducible from the curves in ``summary.json`` alone. Method (the
modern, monotone variant used by JVET/AOM tools instead of Bjøntegaard's original cubic fit):

1. Each curve is reduced to its Pareto front: points sorted by rate, keeping only points
   that improve the metric over every cheaper point (a costlier point that is not better is
   dominated and would make the interpolant non-monotone). For lower-is-better metrics the
   metric is negated first.
2. log10(rate) is interpolated as a function of the metric with a piecewise cubic Hermite
   interpolant (PCHIP, monotone-preserving) through the front.
3. Both interpolants are integrated exactly over the overlapping metric interval
   ``[max(min_a, min_b), min(max_a, max_b)]``; the mean log-rate difference ``d`` gives
   ``BD-rate = (10**d - 1) * 100`` per cent: negative means the test curve needs fewer bits
   than the anchor at the same metric.

With two points a curve is interpolated linearly (PCHIP with two knots is linear). Fewer than
two front points, or no overlap, gives ``None`` ("not computable").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["bd_rate", "bd_rate_note", "pareto_front"]


def pareto_front(
    rates: Sequence[float], metrics: Sequence[float], higher_is_better: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Return (rates, metrics) of the non-dominated points, sorted by increasing rate.

    Metrics are returned in their original sign. Non-finite or non-positive rates and
    non-finite metrics are dropped (log-rate is undefined for them).
    """
    r = np.asarray(rates, dtype=float)
    m = np.asarray(metrics, dtype=float)
    if r.shape != m.shape:
        raise ValueError("rates and metrics must have the same length")
    ok = np.isfinite(r) & np.isfinite(m) & (r > 0)
    r, m = r[ok], m[ok]
    s = m if higher_is_better else -m
    order = np.lexsort((-s, r))  # by rate, ties: best metric first
    keep_r: list[float] = []
    keep_m: list[float] = []
    best = -np.inf
    for i in order:
        if s[i] > best:
            keep_r.append(r[i])
            keep_m.append(m[i])
            best = s[i]
    return np.asarray(keep_r), np.asarray(keep_m)


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_metrics: Sequence[float],
    test_rates: Sequence[float],
    test_metrics: Sequence[float],
    higher_is_better: bool = True,
) -> float | None:
    """BD-rate (%) of the *test* curve against the *anchor* curve.

    Returns ``None`` when either front has fewer than two points or the metric ranges do not
    overlap on an interval of positive length.
    """
    ra, ma = pareto_front(anchor_rates, anchor_metrics, higher_is_better)
    rt, mt = pareto_front(test_rates, test_metrics, higher_is_better)
    if len(ra) < 2 or len(rt) < 2:
        return None
    sa = ma if higher_is_better else -ma
    st = mt if higher_is_better else -mt
    lo = max(sa.min(), st.min())
    hi = min(sa.max(), st.max())
    if not hi > lo:
        return None
    fa = PchipInterpolator(sa, np.log10(ra), extrapolate=False)
    ft = PchipInterpolator(st, np.log10(rt), extrapolate=False)
    diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float((10.0**diff - 1.0) * 100.0)


def bd_rate_note(
    anchor_rates: Sequence[float],
    anchor_metrics: Sequence[float],
    test_rates: Sequence[float],
    test_metrics: Sequence[float],
    higher_is_better: bool = True,
) -> str | None:
    """Why :func:`bd_rate` gives ``None`` for these curves (``None`` if it does not)."""
    ra, ma = pareto_front(anchor_rates, anchor_metrics, higher_is_better)
    rt, mt = pareto_front(test_rates, test_metrics, higher_is_better)
    for who, r in (("anchor", ra), ("test", rt)):
        if len(r) < 2:
            return (
                f"{who} curve has {len(r)} Pareto point(s): its metric does not improve "
                "with rate, so no rate difference can be read off it"
            )
    sa = ma if higher_is_better else -ma
    st = mt if higher_is_better else -mt
    if not min(sa.max(), st.max()) > max(sa.min(), st.min()):
        return "the metric ranges of the two curves do not overlap"
    return None
