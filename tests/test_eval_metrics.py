"""Hand-checkable cases for the harness's numbers: BD-rate, IoU, NME, mAP, settings choice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import trapezoid
from scipy.interpolate import PchipInterpolator

from vcm_eval.bd_rate import bd_rate, pareto_front
from vcm_eval.rate_accuracy import choose_settings
from vcm_eval.tasks.detection import box_iou, coco_map
from vcm_eval.tasks.landmarks import box_from_points, nme
from vcm_eval.tasks.segmentation import confusion, iou_from_confusion

RATES = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
PSNR = np.array([26.0, 28.5, 31.0, 33.0, 35.5])


# ------------------------------------------------------------------ BD-rate
@pytest.mark.parametrize("factor, expected", [(0.8, -20.0), (1.0, 0.0), (1.25, 25.0), (0.5, -50.0)])
def test_bd_rate_constant_rate_factor(factor: float, expected: float) -> None:
    assert bd_rate(RATES, PSNR, RATES * factor, PSNR) == pytest.approx(expected, abs=1e-9)


def test_bd_rate_lower_is_better_metric() -> None:
    nme_vals = np.array([9.0, 7.0, 5.5, 4.6, 4.3])  # falls as the rate grows
    assert bd_rate(RATES, nme_vals, RATES * 0.8, nme_vals, higher_is_better=False) == pytest.approx(
        -20.0, abs=1e-9
    )


def test_bd_rate_only_overlap_counts() -> None:
    # log-rate linear in the metric (PCHIP reproduces lines exactly); the test curve covers
    # only the upper part of the anchor's metric range and is 0.8x there.
    rates, metric = 0.05 * 2.0 ** np.arange(6), 26.0 + 2.5 * np.arange(6)
    assert bd_rate(rates, metric, rates[3:] * 0.8, metric[3:]) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(rates[:3], metric[:3], rates * 0.8, metric) == pytest.approx(-20.0, abs=1e-9)


def test_bd_rate_matches_independent_numeric_integration() -> None:
    rng = np.random.default_rng(0)
    test_rates = RATES * np.exp(rng.normal(0, 0.15, RATES.size))
    test_metric = PSNR + rng.normal(0, 0.3, PSNR.size)
    test_metric.sort()
    test_rates.sort()
    lo, hi = max(PSNR.min(), test_metric.min()), min(PSNR.max(), test_metric.max())
    grid = np.linspace(lo, hi, 200001)
    fa = PchipInterpolator(PSNR, np.log(RATES))(grid)
    ft = PchipInterpolator(test_metric, np.log(test_rates))(grid)
    expected = (np.exp(trapezoid(ft - fa, grid) / (hi - lo)) - 1) * 100
    assert bd_rate(RATES, PSNR, test_rates, test_metric) == pytest.approx(expected, abs=1e-6)


def test_bd_rate_none_without_overlap_or_points() -> None:
    assert bd_rate(RATES, PSNR, RATES, PSNR + 20) is None
    assert bd_rate(RATES, PSNR, [0.1], [30.0]) is None


def test_pareto_front_drops_dominated_points() -> None:
    r, m = pareto_front([0.1, 0.2, 0.3, 0.4], [0.30, 0.29, 0.35, 0.35])
    assert r.tolist() == [0.1, 0.3] and m.tolist() == [0.30, 0.35]
    r, m = pareto_front([0.1, 0.2, 0.3], [5.0, 6.0, 4.0], higher_is_better=False)
    assert r.tolist() == [0.1, 0.3] and m.tolist() == [5.0, 4.0]


# ------------------------------------------------------------------ settings choice
def test_choose_settings_keeps_lowest_and_reaches_top() -> None:
    cands = list(range(0, 100, 5))
    bpp = [0.05 * 1.25**i for i in range(len(cands))]
    s = choose_settings(cands, bpp, lo=0.1, hi=1.0, n=8)
    assert s[0] == 0 and len(s) == 8 and s == sorted(s)
    assert bpp[cands.index(s[-1])] >= 1.25 and bpp[cands.index(s[-2])] < 1.25
    short = choose_settings(cands[:4], bpp[:4], lo=0.1, hi=10.0, n=8)
    assert short == cands[:4]
    assert len(choose_settings(cands, bpp, lo=0.0, hi=0.01, n=8)) == 6  # minimum of six


# ------------------------------------------------------------------ IoU
def test_person_iou_and_confusion_by_hand() -> None:
    gt = np.array([[1, 1, 0, 255], [1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 1], [1, 1, 0, 0]])
    cm = confusion(pred, gt, num=2, ignore=255)
    # valid pixels: 7; person gt 4, predicted person (valid) 4, intersection 3, union 5
    assert cm.tolist() == [[2, 1], [1, 3]]
    iou = iou_from_confusion(cm)
    assert iou[1] == pytest.approx(3 / 5) and iou[0] == pytest.approx(2 / 4)


def test_iou_nan_for_absent_class() -> None:
    cm = confusion(np.zeros((2, 2), int), np.zeros((2, 2), int), num=3, ignore=255)
    iou = iou_from_confusion(cm)
    assert iou[0] == 1.0 and np.isnan(iou[1]) and np.isnan(iou[2])


# ------------------------------------------------------------------ NME
def test_nme_by_hand() -> None:
    gt = np.zeros((68, 2))
    gt[36] = [0.0, 0.0]
    gt[45] = [100.0, 0.0]
    pred = gt + np.array([3.0, 4.0])  # every point off by 5 px; eye distance 100 px
    assert nme(pred, gt) == pytest.approx(5.0)
    assert box_from_points(np.array([[1.0, 2.0], [5.0, 9.0]])) == (1.0, 2.0, 5.0, 9.0)


# ------------------------------------------------------------------ mAP
def _gt(boxes: list[list[float]], cls: list[int]) -> dict:
    return {"boxes": np.asarray(boxes, float), "cls": np.asarray(cls), "width": 200, "height": 200}


def _det(boxes: list[list[float]], cls: list[int], scores: list[float]) -> dict:
    return {
        "boxes": np.asarray(boxes, float).reshape(-1, 4),
        "cls": np.asarray(cls),
        "scores": np.asarray(scores),
    }


def test_box_iou_by_hand() -> None:
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)


def test_map_perfect_and_missing() -> None:
    box = [[20.0, 20.0, 120.0, 120.0]]
    m = coco_map([_gt(box, [0])], [_det(box, [0], [0.9])])
    assert m == {"mAP50-95": pytest.approx(1.0), "mAP50": pytest.approx(1.0)}
    assert coco_map([_gt(box, [0])], [_det([], [], [])]) == {"mAP50-95": 0.0, "mAP50": 0.0}
    assert coco_map([_gt(box, [0])], [_det(box, [1], [0.9])])["mAP50-95"] == 0.0  # wrong class


def test_map_iou_between_thresholds() -> None:
    # A 100x100 gt and a detection shifted by 24 px: IoU = 76*100 / (2*10000 - 7600) = 0.6129,
    # a true positive at IoU thresholds 0.50, 0.55, 0.60 only: mAP50 = 1, mAP50-95 = 3/10.
    gt = [[20.0, 20.0, 120.0, 120.0]]
    det = [[44.0, 20.0, 144.0, 120.0]]
    m = coco_map([_gt(gt, [0])], [_det(det, [0], [0.9])])
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP50-95"] == pytest.approx(0.3)


def test_map_half_recall() -> None:
    # Two gt boxes, one found exactly (score 0.9) and a false positive ranked below it:
    # precision stays 1 up to recall 0.5 and there is no more recall: AP = 0.5 (101-pt COCO
    # interpolation gives 51/101 since recall 0.5 itself is one of the sampled points).
    gt = [[0.0, 0.0, 50.0, 50.0], [100.0, 100.0, 150.0, 150.0]]
    det = [[0.0, 0.0, 50.0, 50.0], [60.0, 0.0, 90.0, 30.0]]
    m = coco_map([_gt(gt, [0, 0])], [_det(det, [0, 0], [0.9, 0.5])])
    assert m["mAP50"] == pytest.approx(51 / 101) and m["mAP50-95"] == pytest.approx(51 / 101)


def test_bd_rate_note_says_why() -> None:
    from vcm_eval.bd_rate import bd_rate_note

    assert bd_rate_note(RATES, PSNR, RATES, PSNR) is None
    assert "do not overlap" in bd_rate_note(RATES, PSNR, RATES, PSNR + 20)
    flat = bd_rate_note(RATES, PSNR, RATES, PSNR[::-1])  # best at the lowest rate
    assert flat.startswith("test curve has 1 Pareto point")


def test_every_codec_is_an_eval_codec() -> None:
    """One contract for the harness's codecs: vcm and the baselines alike."""
    from vcm_eval.codecs import CODEC_NAMES, EvalCodec, make_codec

    for name in CODEC_NAMES:
        codec = make_codec(name, "fast")
        assert isinstance(codec, EvalCodec) and codec.name == name
    assert make_codec("vcm", "fast").settings is None
    assert make_codec("jpeg").settings == list(make_codec("jpeg").candidates)
