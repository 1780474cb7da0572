"""Rate at fixed accuracy on hand-made curves (exact bpp), the mask-fidelity metric on synthetic
masks, SSIMULACRA2's identity value, and the README table renderer's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcm_eval.levels import (
    LEVELS,
    analyse_metric,
    level_key,
    level_target,
    rate_at_level,
    rate_ratio,
)
from vcm_eval.report import results_table, versus_table
from vcm_eval.tasks.quality import ssimulacra2
from vcm_eval.tasks.segmentation import mask_fidelity, mean_fidelity


# ------------------------------------------------------------------ rate at a level
def test_rate_at_level_interpolates_log_rate_between_the_two_points_around_it() -> None:
    rates, metric = [0.1, 0.2, 0.4, 0.8], [0.5, 0.7, 0.9, 1.0]
    # 0.8 lies halfway between 0.7 (0.2 bpp) and 0.9 (0.4 bpp): the geometric mean of the rates
    assert rate_at_level(rates, metric, 0.8) == pytest.approx(math.sqrt(0.2 * 0.4), rel=1e-12)
    assert rate_at_level(rates, metric, 0.9) == pytest.approx(0.4, rel=1e-12)  # exactly a point
    assert rate_at_level(rates, metric, 0.3) == 0.1  # the cheapest point already reaches it
    assert rate_at_level(rates, metric, 1.01) is None  # never reached
    assert rate_at_level(rates[::-1], metric[::-1], 0.8) == pytest.approx(math.sqrt(0.08))


def test_rate_at_level_uses_the_monotone_hull() -> None:
    # 0.3 bpp is worse than 0.2 bpp (dominated): the hull goes 0.2 (0.9) -> 0.4 (0.95)
    rates, metric = [0.1, 0.2, 0.3, 0.4], [0.6, 0.9, 0.85, 0.95]
    assert rate_at_level(rates, metric, 0.92) == pytest.approx(0.2 * 2**0.4, rel=1e-12)
    # a noisy dip after the level was reached does not move the answer
    assert rate_at_level([0.1, 0.2, 0.3], [0.8, 0.95, 0.7], 0.9) == pytest.approx(
        0.1 * 2 ** (2 / 3), rel=1e-12
    )


def test_rate_at_level_lower_is_better() -> None:
    rates, nme = [0.1, 0.2, 0.4], [12.0, 10.0, 8.0]
    assert level_target(8.0, 0.8, higher_is_better=False) == pytest.approx(10.0)
    assert rate_at_level(rates, nme, 10.0, higher_is_better=False) == pytest.approx(0.2)
    t = level_target(8.0, 0.9, higher_is_better=False)  # 8 / 0.9 = 8.889
    frac = (10.0 - t) / 2.0
    assert rate_at_level(rates, nme, t, higher_is_better=False) == pytest.approx(
        0.2 * 2**frac, rel=1e-12
    )
    assert rate_at_level(rates, nme, 7.9, higher_is_better=False) is None


def test_levels_and_ratio() -> None:
    assert LEVELS == (0.8, 0.9, 0.95)
    assert [level_key(x) for x in LEVELS] == ["0.8", "0.9", "0.95"]
    assert level_target(0.36, 0.95) == pytest.approx(0.342)
    assert rate_ratio(0.42, 0.21) == pytest.approx(2.0)
    assert rate_ratio(None, 0.2) is None and rate_ratio(0.2, None) is None


def test_analyse_metric_keys_and_ratios() -> None:
    pts = lambda rs, ms: [{"bpp": r, "metric": m, "x": m} for r, m in zip(rs, ms, strict=True)]  # noqa: E731
    curves = {
        "vcm": pts([0.05, 0.1, 0.2], [0.6, 0.8, 0.9]),
        "avif": pts([0.1, 0.2, 0.4, 0.8], [0.6, 0.8, 0.9, 0.96]),
    }
    rep = analyse_metric(curves, "m", "x", True, 1.0)
    assert set(rep.targets) == {"0.8", "0.9", "0.95"}
    assert rep.rate_at_accuracy["vcm"] == {
        "0.8": pytest.approx(0.1),
        "0.9": pytest.approx(0.2),
        "0.95": None,
    }
    assert rep.rate_at_accuracy["avif"]["0.95"] == pytest.approx(0.4 * 2 ** (5 / 6))
    assert rep.rate_ratio_vs == {
        "avif": {"0.8": pytest.approx(0.5), "0.9": pytest.approx(0.5), "0.95": None}
    }
    assert -51 < rep.bd_rate_vs["avif"] < -49  # half the rate where they overlap (PCHIP shapes)
    none = analyse_metric(curves, "psnr", "x", True, 100.0, levels_note="no ceiling")
    assert none.targets == {} and none.rate_at_accuracy == {} and none.levels_note == "no ceiling"


def test_results_table_rechecks_stored_numbers() -> None:
    curves = {
        "vcm": [
            {"setting": "layers=1", "bpp": 0.1, "metric": 0.8},
            {"setting": "layers=2", "bpp": 0.4, "metric": 0.96},
        ],
        "avif": [
            {"setting": "q=0", "bpp": 0.2, "metric": 0.8},
            {"setting": "q=50", "bpp": 0.8, "metric": 0.96},
        ],
    }
    from dataclasses import asdict

    rep = asdict(analyse_metric(curves, "m", "metric", True, 1.0))
    s = {
        "task": "t",
        "metric": "m",
        "preset": "tae",
        "data": "/x/set",
        "num_images": 3,
        "curves": curves,
        "accuracy_levels": list(LEVELS),
        "by_metric": {"m": rep},
    }
    table = results_table([s])
    assert "| t, tae, set (3) | m ↑ (1) | -50.0 % |" in table
    assert "**0.50** (0.100 / 0.200)" in table
    rep["rate_at_accuracy"]["vcm"]["0.8"] = 0.11  # a hand-edited number is caught
    with pytest.raises(SystemExit, match="rate at 0.8"):
        results_table([s])


def test_versus_table_compares_any_two_curves() -> None:
    """An ablation curve (here ``vcm-machine``, half vcm's bits) against a baseline, with the
    run's own ``vcm`` left out of the comparison."""
    curves = {
        "vcm": [{"bpp": 0.1, "metric": 0.8}, {"bpp": 0.4, "metric": 0.96}],
        "vcm-machine": [{"bpp": 0.05, "metric": 0.8}, {"bpp": 0.2, "metric": 0.96}],
        "avif": [{"bpp": 0.2, "metric": 0.8}, {"bpp": 0.8, "metric": 0.96}],
    }
    s = {
        "task": "t",
        "metric": "m",
        "data": "/x/set",
        "num_images": 3,
        "higher_is_better": True,
        "original": {"metric": 1.0},
        "curves": curves,
        "accuracy_levels": list(LEVELS),
    }
    pairs = [("vcm-machine", "avif"), ("vcm", "avif"), ("jxl", "avif"), ("vcm-machine", "vcm")]
    table = versus_table([s], pairs)
    assert "| t, set (3) | vcm-machine vs avif | -75.0 % | **0.25** (0.050 / 0.200) |" in table
    assert "| vcm vs avif | -50.0 % | **0.50** (0.100 / 0.200) |" in table
    assert "jxl" not in table  # a pair the summary lacks is skipped
    assert "| vcm-machine vs vcm | -50.0 % | **0.50** (0.050 / 0.100) |" in table


# ------------------------------------------------------------------ segmentation fidelity
def test_mask_fidelity_on_a_synthetic_pair() -> None:
    ref = np.zeros((4, 4), bool)
    ref[1:3, 1:3] = True  # 4 pixels
    pred = ref.copy()
    pred[1, 1] = False  # 3 of them kept ...
    pred[0, 0] = True  # ... plus one false pixel: IoU 3 / 5
    assert mask_fidelity(pred, ref) == pytest.approx(0.6)
    assert mask_fidelity(ref, ref) == 1.0
    empty = np.zeros((4, 4), bool)
    assert mask_fidelity(empty, ref) == 0.0
    assert math.isnan(mask_fidelity(empty, empty))  # nothing to agree on: not counted
    assert mean_fidelity([0.6, float("nan"), 1.0]) == pytest.approx(0.8)
    assert mean_fidelity([float("nan")]) == 1.0


def test_ssimulacra2_identity_and_order() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert ssimulacra2(img, img) == pytest.approx(100.0)
    noisy = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    assert ssimulacra2(img, noisy) < 90
