"""The one layer-spec grammar (vcm_plugin.codec.layerspec): integrations and the shard reader."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vcm_plugin import VCMError
from vcm_plugin.codec.layerspec import draw_layers, fixed_layers, parse_layers


def test_parse_normalises_every_accepted_form():
    assert parse_layers(None) is None and parse_layers("analytics") == "analytics"
    assert parse_layers(3) == 3 and type(parse_layers(np.int64(2))) is int
    assert parse_layers((1, 4)) == (1, 4) and parse_layers([2, 2]) == (2, 2)  # configs: lists
    assert parse_layers({1, 3}, choices=True) == frozenset({1, 3})
    assert parse_layers([2], choices=True) == frozenset({2})
    assert parse_layers([1, 3, 5], choices=True) == frozenset({1, 3, 5})
    assert parse_layers(range(1, 3), choices=True) == frozenset({1, 2})
    assert parse_layers([1, 5], choices=True) == (1, 5)  # a pair stays a range


@pytest.mark.parametrize(
    "bad", [0, -1, True, 1.5, "two", (3, 1), (0, 2), (1, 2.0), [1, 2, 3], {1, 2}, (), b"1"]
)
def test_parse_refuses_with_the_option_name(bad):
    with pytest.raises(VCMError, match="vcm_layers"):
        parse_layers(bad, "vcm_layers")


@pytest.mark.parametrize("bad", [set(), [], {0, 2}, {1, "2"}, [True]])
def test_parse_refuses_bad_choices(bad):
    with pytest.raises(VCMError, match="layers"):
        parse_layers(bad, choices=True)


def test_fixed_layers_refuses_a_range_naming_the_caller():
    assert fixed_layers(2, "x") == 2 and fixed_layers(None, "x") is None
    with pytest.raises(VCMError, match=r"^im\.load: a fixed layer count is needed, not a range"):
        fixed_layers((1, 2), "im.load")


def test_draw_is_reproducible_and_in_bounds():
    assert draw_layers(3) == 3 and draw_layers(None) is None
    draws = [draw_layers((2, 4), random.Random(s)) for s in range(50)]
    assert set(draws) == {2, 3, 4}
    assert draws == [draw_layers((2, 4), random.Random(s)) for s in range(50)]
    assert {draw_layers(frozenset({1, 5}), random.Random(s)) for s in range(50)} == {1, 5}
