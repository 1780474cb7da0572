"""Rate at fixed accuracy, and the per-metric analysis of a run's curves.

Why: a BD-rate averages the rate difference over the whole overlapping metric range, so a codec
that wins at low accuracy can show a negative BD-rate and still need more bits than a baseline
at the accuracy a user accepts. The question a user asks is "how many bits do I need to stay
within 5 % of the uncompressed model?"; :func:`rate_at_level` answers it for one curve.

A level ``L`` of the uncompressed metric ``m0`` is reached when the metric is ``>= L * m0``
(higher is better) or ``<= m0 / L`` (lower is better, e.g. NME).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vcm_eval.bd_rate import bd_rate, bd_rate_note, pareto_front

__all__ = [
    "LEVELS",
    "MetricReport",
    "analyse_metric",
    "level_key",
    "level_target",
    "rate_at_level",
    "rate_ratio",
]

LEVELS = (0.8, 0.9, 0.95)


def level_key(level: float) -> str:
    """The JSON key of a level (``"0.8"``, ``"0.95"``)."""
    return repr(float(level))


def level_target(m0: float, level: float, higher_is_better: bool = True) -> float:
    """The metric value a codec must reach to be within ``level`` of the uncompressed ``m0``."""
    return level * m0 if higher_is_better else m0 / level


def rate_at_level(
    rates: Sequence[float], metrics: Sequence[float], target: float, higher_is_better: bool = True
) -> float | None:
    """The first rate at which a curve reaches ``target``; ``None`` if it never does.

    The curve is reduced to its Pareto front (the running-best envelope, as for the BD-rate);
    between the last front point short of the target and the first one reaching it, log(rate) is
    interpolated linearly in the metric. If the cheapest point already reaches it, its rate.
    """
    r, m = pareto_front(rates, metrics, higher_is_better)
    s = m if higher_is_better else -m
    t = target if higher_is_better else -target
    reached = [i for i in range(len(s)) if s[i] >= t]
    if not reached:
        return None
    k = reached[0]
    if k == 0:
        return float(r[0])
    frac = (t - s[k - 1]) / (s[k] - s[k - 1])
    return float(math.exp(math.log(r[k - 1]) + frac * (math.log(r[k]) - math.log(r[k - 1]))))


def rate_ratio(test: float | None, anchor: float | None) -> float | None:
    """``test / anchor`` bpp (below 1: the test codec needs fewer bits); ``None`` if either is."""
    if test is None or anchor is None or anchor <= 0:
        return None
    return test / anchor


@dataclass
class MetricReport:
    """Everything the harness says about one metric of a run: BD-rates and rates at levels.

    ``targets`` is empty (and the rates ``None``) when the metric has no uncompressed ceiling
    to take a fraction of (PSNR: the original against itself is infinite); ``levels_note`` says so.
    """

    metric: str
    higher_is_better: bool
    original: float
    bd_rate_vs: dict[str, float | None] = field(default_factory=dict)
    bd_rate_notes: dict[str, str] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    rate_at_accuracy: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rate_ratio_vs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    levels_note: str | None = None


def _xy(points: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    return [p["bpp"] for p in points], [p[key] for p in points]


def analyse_metric(
    curves: dict[str, list[dict[str, Any]]],
    metric: str,
    key: str,
    higher_is_better: bool,
    original: float,
    levels_note: str | None = None,
) -> MetricReport:
    """BD-rate of vcm vs each baseline and every codec's rate at each level, for the metric
    stored under ``key`` in the curves' points (``"metric"`` for the primary one).
    ``levels_note``: the metric has no relative levels, and why."""
    rep = MetricReport(metric, higher_is_better, float(original), levels_note=levels_note)
    vcm = curves.get("vcm")
    for name, pts in curves.items():
        if vcm is None or name == "vcm":
            continue
        r = bd_rate(*_xy(pts, key), *_xy(vcm, key), higher_is_better=higher_is_better)
        rep.bd_rate_vs[name] = None if r is None else round(r, 3)
        note = bd_rate_note(*_xy(pts, key), *_xy(vcm, key), higher_is_better)
        if note:
            rep.bd_rate_notes[name] = note.replace("anchor", name).replace("test", "vcm")
    if levels_note is not None or not math.isfinite(original):
        rep.levels_note = levels_note or "the uncompressed metric is not finite"
        return rep
    rep.targets = {level_key(lv): level_target(original, lv, higher_is_better) for lv in LEVELS}
    for name, pts in curves.items():
        rep.rate_at_accuracy[name] = {
            k: rate_at_level(*_xy(pts, key), t, higher_is_better) for k, t in rep.targets.items()
        }
    if vcm is not None:
        mine = rep.rate_at_accuracy["vcm"]
        for name in curves:
            if name != "vcm":
                rep.rate_ratio_vs[name] = {
                    k: rate_ratio(mine[k], rep.rate_at_accuracy[name][k]) for k in rep.targets
                }
    return rep
