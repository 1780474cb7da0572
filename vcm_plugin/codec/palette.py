"""Markov palette diffusion over latent vectors (Guo et al., step d).

A per-image palette of latent vectors is built fine-first: content-adaptive K-means gives the
finest state (more entries for busy content classes). The forward chain merges the two
entries whose merge costs least (Ward's criterion) until the coarse state is reached; the
reverse chain is the same tree read backwards, each step splitting one entry. The codec
transmits the coarse state in the semantic layer and the splits in the next layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcm_plugin.codec.kmeans import kmeans


@dataclass
class PaletteChain:
    """Fine state and its grouping under the coarse state.

    Fine entries are numbered so that the children of coarse entry k are contiguous:
    ``fine_parent`` is non-decreasing.
    """

    fine_means: np.ndarray  # (K1, C)
    fine_index: np.ndarray  # (N,) fine entry per position
    fine_parent: np.ndarray  # (K1,) coarse entry of each fine entry
    merges: list[tuple[int, int]]  # forward chain, in merge order (ids into the fine state)

    @property
    def coarse_count(self) -> int:
        return int(self.fine_parent.max()) + 1

    @property
    def coarse_index(self) -> np.ndarray:
        return self.fine_parent[self.fine_index]

    def coarse_means(self) -> np.ndarray:
        counts = np.bincount(self.fine_index, minlength=len(self.fine_means)).astype(np.float64)
        out = np.zeros((self.coarse_count, self.fine_means.shape[1]))
        mass = np.zeros(self.coarse_count)
        np.add.at(out, self.fine_parent, self.fine_means * counts[:, None])
        np.add.at(mass, self.fine_parent, counts)
        return out / np.maximum(mass, 1)[:, None]


def allocate_entries(classes: np.ndarray, vectors: np.ndarray, total: int) -> np.ndarray:
    """Fine palette entries per content class: proportional to count x spread x busyness."""
    num = int(classes.max()) + 1
    weight = np.zeros(num)
    for c in range(num):
        members = vectors[classes == c]
        if len(members):
            spread = np.sqrt(members.var(axis=0).sum()) + 1e-3
            weight[c] = len(members) * spread * (1.0 + c / max(num - 1, 1))
    counts = np.bincount(classes, minlength=num)
    share = weight / weight.sum() * total
    alloc = np.minimum(np.maximum(np.floor(share), (counts > 0)), counts).astype(int)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for c in order:
        if alloc.sum() >= total:
            break
        if alloc[c] < counts[c]:
            alloc[c] += 1
    return alloc


def fine_palette(
    vectors: np.ndarray, classes: np.ndarray, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """K-means inside each content class with the allocated number of entries."""
    alloc = allocate_entries(classes, vectors, total)
    means, index = [], np.zeros(len(vectors), dtype=np.int64)
    for c, k in enumerate(alloc):
        members = np.flatnonzero(classes == c)
        if k == 0 or len(members) == 0:
            continue
        labels, centres = kmeans(vectors[members], int(k), seed=c)
        index[members] = labels + sum(len(m) for m in means)
        means.append(centres)
    return np.concatenate(means), index


def ward_chain(means: np.ndarray, counts: np.ndarray, coarse: int) -> tuple[np.ndarray, list]:
    """Forward chain: merge greedily by Ward cost down to ``coarse`` entries.

    Returns the coarse group of each fine entry and the list of merges.
    """
    k = len(means)
    group = np.arange(k)
    mu = means.astype(np.float64).copy()
    n = np.maximum(counts.astype(np.float64), 1e-9)
    alive = np.ones(k, dtype=bool)
    merges: list[tuple[int, int]] = []
    for _ in range(max(0, k - coarse)):
        ids = np.flatnonzero(alive)
        d = ((mu[ids, None, :] - mu[None, ids, :]) ** 2).sum(-1)
        cost = d * (n[ids, None] * n[None, ids]) / (n[ids, None] + n[None, ids])
        cost[np.diag_indices(len(ids))] = np.inf
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        a, b = int(ids[a]), int(ids[b])
        mu[a] = (mu[a] * n[a] + mu[b] * n[b]) / (n[a] + n[b])
        n[a] += n[b]
        alive[b] = False
        group[group == b] = a
        merges.append((a, b))
    _, coarse_id = np.unique(group, return_inverse=True)
    return coarse_id, merges


def smooth_index(
    vectors: np.ndarray,
    means: np.ndarray,
    index: np.ndarray,
    shape: tuple[int, int],
    penalty: float,
    sweeps: int = 2,
) -> np.ndarray:
    """Rate-aware relabelling: switch to a neighbour's entry when the distortion it adds is
    smaller than ``penalty`` per disagreeing neighbour saved (cheaper index maps)."""
    if penalty <= 0:
        return index
    h, w = shape
    idx = index.reshape(h, w).copy()
    v = vectors.reshape(h, w, -1)
    own = ((v - means[idx]) ** 2).sum(-1)
    for _ in range(sweeps):
        padded = np.pad(idx, 1, mode="edge")
        neighbours = np.stack(
            [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        best, best_cost = idx, own + penalty * (neighbours != idx).sum(0)
        for cand in neighbours:
            dist = ((v - means[cand]) ** 2).sum(-1)
            cost = dist + penalty * (neighbours != cand).sum(0)
            better = cost < best_cost
            best = np.where(better, cand, best)
            best_cost = np.where(better, cost, best_cost)
        idx = best
        own = ((v - means[idx]) ** 2).sum(-1)
    return idx.ravel()


def build_chain(
    vectors: np.ndarray,
    classes: np.ndarray,
    shape: tuple[int, int],
    fine: int,
    coarse: int,
    penalty: float,
) -> PaletteChain:
    """Fine state from content-adaptive K-means, coarse state from the forward Ward chain."""
    means, index = fine_palette(vectors, classes, fine)
    index = smooth_index(vectors, means, index, shape, penalty)
    used = np.unique(index)
    remap = np.full(len(means), -1)
    remap[used] = np.arange(len(used))
    index = remap[index]
    counts = np.bincount(index, minlength=len(used))
    means = np.zeros((len(used), vectors.shape[1]))
    np.add.at(means, index, vectors)
    means /= counts[:, None]
    parent, merges = ward_chain(means, counts, min(coarse, len(means)))
    order = np.argsort(parent, kind="stable")  # make children of each coarse entry contiguous
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    merges = [(int(rank[a]), int(rank[b])) for a, b in merges]
    return PaletteChain(means[order], rank[index], parent[order], merges)
