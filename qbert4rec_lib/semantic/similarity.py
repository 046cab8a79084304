"""Neighbour analytics over one modality's item vectors (what notebooks 02-04 show): an item's nearest items,
neighbour purity (the share of an item's ``k`` nearest neighbours with its label) and the neighbour overlap of two
modalities.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .features import ModalityFeatures, pooled

__all__ = ["nearest_items", "neighbour_purity", "neighbour_overlap"]


def nearest_items(features: ModalityFeatures, item_id: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` items (id, cosine) nearest to ``item_id`` among items that have this modality."""
    if not features.present[item_id - 1]:
        return []
    vecs = pooled(features)
    sims = vecs @ vecs[item_id - 1]  # [N]
    sims[~features.present] = -np.inf
    sims[item_id - 1] = -np.inf
    top = np.argsort(-sims, kind="stable")[:k]
    return [(int(i + 1), float(sims[i])) for i in top if np.isfinite(sims[i])]


def _neighbours(features: ModalityFeatures, queries: np.ndarray, among: np.ndarray, k: int) -> np.ndarray:
    """Row indices (into ``among``) of the ``k`` nearest items to each query, oneself excluded. [Q, k]"""
    vecs = pooled(features)
    sims = vecs[queries] @ vecs[among].T  # [Q, M]
    own = np.searchsorted(among, queries)
    hit = own < len(among)
    hit[hit] = among[own[hit]] == queries[hit]
    sims[np.flatnonzero(hit), own[hit]] = -np.inf  # not oneself
    return np.argpartition(-sims, k, axis=1)[:, :k]


def _queries(present: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    idx = np.flatnonzero(present)
    return np.sort(np.random.default_rng(seed).choice(idx, size=min(max_items, len(idx)), replace=False))


def neighbour_purity(features: ModalityFeatures, labels: Sequence, k: int = 10, max_items: int = 2000,
                     seed: int = 0) -> float:
    """Mean share of an item's ``k`` nearest neighbours with its label (over up to ``max_items`` items)."""
    idx, labels = np.flatnonzero(features.present), np.asarray(labels)
    if len(idx) <= k:
        return float("nan")
    queries = _queries(features.present, max_items, seed)
    top = _neighbours(features, queries, idx, k)  # [Q, k]
    return float((labels[idx][top] == labels[queries][:, None]).mean())


def neighbour_overlap(a: ModalityFeatures, b: ModalityFeatures, k: int = 10, max_items: int = 2000,
                      seed: int = 0) -> float:
    """Mean share of an item's ``k`` nearest neighbours that two modalities agree on (items in both)."""
    both = a.present & b.present
    idx = np.flatnonzero(both)
    if len(idx) <= k:
        return float("nan")
    queries = _queries(both, max_items, seed)
    top_a, top_b = idx[_neighbours(a, queries, idx, k)], idx[_neighbours(b, queries, idx, k)]  # [Q, k] each
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b)]))
