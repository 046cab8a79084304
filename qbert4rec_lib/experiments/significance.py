"""Is a difference between two models more than noise? A paired bootstrap over the test users.

Two models evaluated on the same users under the same protocol give two per-user metric values for every user
(NDCG@10 of one relevant item: ``1 / log2(rank + 1)`` when ``rank <= 10``, else 0). Their difference of means is
the table's gap; how much that gap would move with another draw of users is what decides whether it is a result or a
coin flip. :func:`paired_difference` resamples the users with replacement (the same users for both models, which
removes the spread that comes from some users being easy for every model) and reports the percentile interval::

    from qbert4rec_lib.experiments.significance import paired_difference
    d = paired_difference(q_run.test.ranks, sasrec_run.test.ranks, "NDCG@10")
    print(d)  # NDCG@10 difference -0.0008, 95% interval [-0.0055, +0.0040] over 2,355 users: within noise

With several seeds, pass a list of rank arrays per model (one per seed, the same users in the same order): each
user's metric is averaged over the seeds first, so the interval covers the choice of users, not of seeds.

The interval is about *these* users drawn from *this* catalog; it does not say how the models would compare on
another dataset, and seeds add their own spread (the tables show it as ``± std``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .evaluate import per_user_metric

__all__ = ["PairedDifference", "per_user_metric", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``metric(a) - metric(b)`` over the users and its paired-bootstrap percentile interval."""

    metric: str
    difference: float  # mean over users of a - b (the table's gap)
    low: float  # lower end of the interval
    high: float  # upper end
    level: float  # e.g. 0.95
    users: int
    resamples: int
    share_a_ahead: float  # fraction of resamples in which a's mean is above b's

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 0: these users cannot tell the two models apart."""
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        verdict = "within noise" if self.within_noise else ("a ahead" if self.low > 0 else "b ahead")
        return (f"{self.metric} difference {self.difference:+.4f}, {self.level:.0%} interval "
                f"[{self.low:+.4f}, {self.high:+.4f}] over {self.users:,} users: {verdict}")


def _as_users(ranks: np.ndarray | Sequence[np.ndarray], metric: str) -> np.ndarray:
    runs = [ranks] if isinstance(ranks, np.ndarray) else list(ranks)
    if not runs:
        raise ValueError("paired_difference: no ranks given")
    values = [per_user_metric(r, metric) for r in runs]
    if len({len(v) for v in values}) != 1:
        raise ValueError(f"paired_difference: the seeds' rank arrays cover different numbers of users "
                         f"{sorted({len(v) for v in values})}")
    return np.mean(values, axis=0)  # [U]: each user's metric, averaged over seeds


def paired_difference(ranks_a: np.ndarray | Sequence[np.ndarray], ranks_b: np.ndarray | Sequence[np.ndarray],
                      metric: str = "NDCG@10", *, resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> PairedDifference:
    """Paired bootstrap of ``mean(metric(a)) - mean(metric(b))`` over the same users (seeded, deterministic).

    ``ranks_a`` / ``ranks_b``: 1-based test ranks ``[U]`` of the same users in the same order (``EvalResult.ranks``),
    or one such array per seed.
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"paired_difference: resamples must be >= 1 and 0 < level < 1, got {resamples}, {level}")
    a, b = _as_users(ranks_a, metric), _as_users(ranks_b, metric)
    if len(a) != len(b):
        raise ValueError(f"paired_difference: the models were ranked for different users ({len(a)} vs {len(b)})")
    diff = a - b  # [U]
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # [chunk, U] index draws at a time: bounded memory on big test sets
        n = min(256, resamples - start)
        means[start:start + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(metric, float(diff.mean()), float(low), float(high), level, len(diff), resamples,
                            float((means > 0).mean()))
