"""How healthy and how meaningful the semantic-ID codes are: per-level codebook usage, perplexity and dead codes,
collisions before disambiguation (:func:`code_health`, recorded with every trained RQ-VAE), and how well codes group
items by a label compared with a random assignment of the same group sizes (:func:`category_purity`,
:func:`random_purity_baseline`; notebook 04).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["code_health", "usage_counts", "category_purity", "random_purity_baseline"]


def usage_counts(ids: np.ndarray, level: int, codebook_size: int) -> np.ndarray:
    """How many items use each code of ``level`` (1-based column of ``ids``): ``[codebook_size]``."""
    if not 1 <= level <= np.asarray(ids).shape[1]:
        raise ValueError(f"level must be in 1..{np.asarray(ids).shape[1]}, got {level}")
    return np.bincount(np.asarray(ids)[:, level - 1], minlength=codebook_size)


def _level_health(counts: np.ndarray) -> dict:
    probs = counts / max(1, counts.sum())
    nonzero = probs[probs > 0]
    used = int((counts > 0).sum())
    return {"codebook_size": int(len(counts)), "used": used, "usage": used / len(counts),
            "perplexity": float(np.exp(-(nonzero * np.log(nonzero)).sum())), "dead_codes": int(len(counts) - used)}


def code_health(codes: np.ndarray, codebook_size: int) -> dict:
    """Per-level usage / perplexity / dead codes, and how unique the L-code tuples are before disambiguation."""
    codes = np.asarray(codes)
    levels = [{"level": level + 1} | _level_health(np.bincount(codes[:, level], minlength=codebook_size))
              for level in range(codes.shape[1])]
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "levels": levels,
        "unique_before": len(counts) / len(codes),  # distinct L-code tuples / items
        "collision_rate": float(counts[counts > 1].sum() / len(codes)),  # items sharing their tuple with another
        "largest_group": int(counts.max()),
        "max_disambiguation": int(counts.max() - 1),
    }


def _group_and_labels(codes, labels, ignore):
    codes = np.asarray(codes)
    codes = codes.reshape(len(codes), -1)
    labels = np.asarray(labels)
    if len(labels) != len(codes):
        raise ValueError(f"{len(codes)} code rows but {len(labels)} labels")
    keep = np.ones(len(codes), dtype=bool) if ignore is None else labels != ignore
    _, group = np.unique(codes[keep], axis=0, return_inverse=True)
    _, label = np.unique(labels[keep], return_inverse=True)
    return group.reshape(-1), label.reshape(-1)


def _purity(group: np.ndarray, label: np.ndarray) -> float:
    num_labels = label.max() + 1
    table = np.bincount(group * num_labels + label, minlength=(group.max() + 1) * num_labels)
    return float(table.reshape(-1, num_labels).max(axis=1).sum() / len(group))


def category_purity(codes: np.ndarray, labels: Sequence, *, ignore=None) -> float:
    """Item-weighted purity: share of items whose code (or code-prefix row) holds mostly their label.

    ``codes`` is ``[N]`` (one level) or ``[N, k]`` (a prefix: each distinct row is one group);
    items whose label equals ``ignore`` (e.g. ``"(none)"``) are left out.
    """
    group, label = _group_and_labels(codes, labels, ignore)
    return _purity(group, label) if len(group) else float("nan")


def random_purity_baseline(codes: np.ndarray, labels: Sequence, *, seeds: int = 10, ignore=None) -> float:
    """Purity of a random assignment with the same group sizes (codes shuffled across items), mean over seeds."""
    group, label = _group_and_labels(codes, labels, ignore)
    return float(np.mean([_purity(np.random.default_rng(s).permutation(group), label) for s in range(seeds)]))
