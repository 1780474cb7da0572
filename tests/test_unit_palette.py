"""Unit tests of the palette chain (``vcm_plugin.codec.palette``) on synthetic latents.

The chain is hierarchical: the fine state refines the coarse one (every fine entry has one
coarse parent, children contiguous), the forward Ward merges replay to the same grouping,
indices stay in range, and the whole build is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from vcm_plugin.codec.palette import (
    allocate_entries,
    build_chain,
    fine_palette,
    smooth_index,
    ward_chain,
)

SHAPE = (12, 16)


def _latents(seed: int, channels: int = 4, regions: int = 6, noise: float = 0.3):
    """Piecewise-constant latents (vertical stripes of random means) plus noise, and a
    content class per position (the stripe index modulo 3)."""
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    stripe = np.minimum(np.arange(w) * regions // w, regions - 1)
    region = np.broadcast_to(stripe, (h, w)).ravel()
    centres = rng.normal(0, 3, (regions, channels))
    vectors = centres[region] + rng.normal(0, noise, (h * w, channels))
    return vectors, region % 3


def _sse(vectors: np.ndarray, index: np.ndarray) -> float:
    means = np.zeros((index.max() + 1, vectors.shape[1]))
    np.add.at(means, index, vectors)
    means /= np.maximum(np.bincount(index), 1)[:, None]
    return float(((vectors - means[index]) ** 2).sum())


# -- allocation and the fine state -------------------------------------------------------------


@pytest.mark.parametrize("total", [3, 8, 32, 500])
def test_allocate_entries_respects_the_budget_and_class_sizes(total):
    vectors, classes = _latents(0)
    alloc = allocate_entries(classes, vectors, total)
    counts = np.bincount(classes)
    assert alloc.shape == (3,)
    assert np.all(alloc >= 1)  # every class with members gets an entry
    assert np.all(alloc <= counts)  # never more entries than positions
    assert alloc.sum() == min(max(total, 3), counts.sum())


def test_allocate_entries_favours_busy_classes():
    rng = np.random.default_rng(1)
    classes = np.repeat([0, 1], 100)
    vectors = np.concatenate([rng.normal(0, 0.1, (100, 4)), rng.normal(0, 5.0, (100, 4))])
    alloc = allocate_entries(classes, vectors, 20)
    assert alloc[1] > alloc[0] and alloc.sum() == 20


def test_a_class_without_members_gets_no_entries():
    vectors, _ = _latents(2)
    classes = np.where(np.arange(len(vectors)) % 2, 0, 2)  # class 1 is empty
    assert allocate_entries(classes, vectors, 10)[1] == 0


def test_fine_palette_indices_are_in_range_and_stay_within_a_class():
    vectors, classes = _latents(3)
    means, index = fine_palette(vectors, classes, 16)
    assert means.shape[1] == vectors.shape[1] and len(means) <= 16
    assert index.min() >= 0 and index.max() < len(means)
    for entry in np.unique(index):
        assert len(np.unique(classes[index == entry])) == 1  # K-means runs inside a class


# -- the forward chain ---------------------------------------------------------------------------


def _replay(merges, k: int) -> np.ndarray:
    group = np.arange(k)
    for a, b in merges:
        group[group == b] = a
    return group


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_ward_chain_merges_the_closest_pairs_first():
    means = np.array([[0.0], [0.1], [10.0], [10.2], [30.0]])
    coarse, merges = ward_chain(means, np.ones(5), 3)
    assert merges == [(0, 1), (2, 3)]
    assert coarse.tolist() == [0, 0, 1, 1, 2]


def test_ward_chain_weighs_by_counts():
    # 1 sits midway; the heavy entry 0 makes merging into it costlier than into light 2
    means = np.array([[0.0], [1.0], [2.0]])
    coarse, merges = ward_chain(means, np.array([100.0, 1.0, 1.0]), 2)
    assert merges == [(1, 2)] and coarse.tolist() == [0, 1, 1]


@pytest.mark.parametrize(("k", "coarse"), [(10, 1), (10, 4), (10, 10), (3, 8)])
def test_ward_chain_grouping_and_merges_agree(k, coarse):
    rng = np.random.default_rng(k * 10 + coarse)
    means, counts = rng.normal(0, 1, (k, 3)), rng.integers(1, 20, k)
    groups, merges = ward_chain(means, counts, coarse)
    assert len(merges) == max(0, k - coarse)
    assert sorted(set(groups.tolist())) == list(range(min(k, coarse)))
    assert all(a != b for a, b in merges)
    assert _same_partition(_replay(merges, k), groups)


# -- the whole chain ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("fine", "coarse"), [(32, 8), (12, 4), (6, 6), (4, 9)])
def test_build_chain_is_hierarchical(seed, fine, coarse):
    vectors, classes = _latents(seed)
    chain = build_chain(vectors, classes, SHAPE, fine, coarse, penalty=0.5)
    k1 = len(chain.fine_means)
    n = len(vectors)
    # indices in range, every entry used
    assert chain.fine_index.shape == (n,) and chain.fine_index.min() == 0
    assert sorted(set(chain.fine_index.tolist())) == list(range(k1))
    assert chain.coarse_count == min(coarse, k1)
    assert sorted(set(chain.fine_parent.tolist())) == list(range(chain.coarse_count))
    # children of each coarse entry are contiguous
    assert np.all(np.diff(chain.fine_parent) >= 0)
    # the coarse index is the fine one read through the parents: positions sharing a fine
    # entry share its coarse entry, so the fine state refines the coarse one
    np.testing.assert_array_equal(chain.coarse_index, chain.fine_parent[chain.fine_index])
    # the forward merges (ids into the fine state) replay to the same grouping
    assert len(chain.merges) == k1 - chain.coarse_count
    assert _same_partition(_replay(chain.merges, k1), chain.fine_parent)


def test_fine_means_are_the_means_of_their_positions_and_coarse_means_of_theirs():
    vectors, classes = _latents(4)
    chain = build_chain(vectors, classes, SHAPE, 16, 4, penalty=0.0)
    for e in range(len(chain.fine_means)):
        np.testing.assert_allclose(chain.fine_means[e], vectors[chain.fine_index == e].mean(0))
    coarse = chain.coarse_means()
    assert coarse.shape == (chain.coarse_count, vectors.shape[1])
    for c in range(chain.coarse_count):
        np.testing.assert_allclose(coarse[c], vectors[chain.coarse_index == c].mean(0))


def test_refining_lowers_the_distortion():
    vectors, classes = _latents(5, regions=8, noise=0.5)
    chain = build_chain(vectors, classes, SHAPE, 32, 4, penalty=0.0)
    assert _sse(vectors, chain.fine_index) < _sse(vectors, chain.coarse_index)


def test_build_chain_is_deterministic():
    vectors, classes = _latents(6)
    a = build_chain(vectors, classes, SHAPE, 24, 6, penalty=0.5)
    b = build_chain(vectors.copy(), classes.copy(), SHAPE, 24, 6, penalty=0.5)
    np.testing.assert_array_equal(a.fine_means, b.fine_means)
    np.testing.assert_array_equal(a.fine_index, b.fine_index)
    np.testing.assert_array_equal(a.fine_parent, b.fine_parent)
    assert a.merges == b.merges


def test_a_single_position_builds_a_one_entry_chain():
    chain = build_chain(np.ones((1, 4)), np.zeros(1, dtype=np.int64), (1, 1), 8, 4, 0.5)
    assert chain.coarse_count == 1 and len(chain.fine_means) == 1 and chain.merges == []


# -- rate-aware smoothing ----------------------------------------------------------------------


def _disagreements(index: np.ndarray) -> int:
    idx = index.reshape(SHAPE)
    return int((idx[1:] != idx[:-1]).sum() + (idx[:, 1:] != idx[:, :-1]).sum())


def test_smooth_index_without_penalty_is_the_identity():
    vectors, classes = _latents(7)
    means, index = fine_palette(vectors, classes, 16)
    assert smooth_index(vectors, means, index, SHAPE, 0.0) is index


@pytest.mark.parametrize("seed", [8, 9])
@pytest.mark.parametrize("noise", [0.3, 1.5])
def test_smoothing_makes_maps_more_coherent(seed, noise):
    vectors, classes = _latents(seed, noise=noise)
    means, index = fine_palette(vectors, classes, 24)
    for penalty in (0.5, 5.0, 50.0):
        out = smooth_index(vectors, means, index, SHAPE, penalty)
        assert out.shape == index.shape
        assert set(out.tolist()) <= set(index.tolist())  # only neighbours' entries
        assert _disagreements(out) < _disagreements(index)
