"""The paired bootstrap that says whether a gap between two models is more than noise."""
import numpy as np
import pytest

from qbert4rec_lib.experiments.evaluate import metrics_from_ranks
from qbert4rec_lib.experiments.significance import paired_difference, per_user_metric


def test_per_user_metric_averages_to_the_evaluators_metrics():
    ranks = np.random.default_rng(0).integers(1, 60, size=500)
    expected = metrics_from_ranks(ranks)
    for metric in ("NDCG@10", "NDCG@5", "HR@10", "HR@1", "MRR"):
        assert per_user_metric(ranks, metric).mean() == pytest.approx(expected[metric], abs=1e-12)
    with pytest.raises(ValueError, match="NDCG@K"):
        per_user_metric(ranks, "Recall10")
    with pytest.raises(ValueError, match="1-based"):
        per_user_metric(np.array([0, 3]), "NDCG@10")


def test_a_model_against_itself_is_a_tie_and_a_far_better_one_is_not():
    rng = np.random.default_rng(1)
    ranks = rng.integers(1, 40, size=800)
    same = paired_difference(ranks, ranks.copy())
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0) and same.within_noise
    better = paired_difference(np.maximum(1, ranks - 5), ranks)  # every user's target moves up 5 places
    assert better.low > 0 and not better.within_noise and better.share_a_ahead == 1.0
    assert "a ahead" in str(better)
    assert "b ahead" in str(paired_difference(ranks, np.maximum(1, ranks - 5)))


def test_a_small_gap_on_few_users_is_within_noise_and_the_interval_is_seeded():
    rng = np.random.default_rng(2)
    a = rng.integers(1, 30, size=300)
    b = a.copy()
    flip = rng.choice(300, size=12, replace=False)
    b[flip[:7]] = 1  # b wins 7 users outright, a keeps the other 5 changed ones
    a[flip[7:]] = 1
    d = paired_difference(a, b, resamples=500, seed=3)
    assert d.low < d.difference < d.high and d.within_noise
    assert d == paired_difference(a, b, resamples=500, seed=3)  # deterministic
    assert d != paired_difference(a, b, resamples=500, seed=4)


def test_seeds_are_averaged_per_user_and_mismatched_users_are_refused():
    rng = np.random.default_rng(5)
    a0, a1, b = (rng.integers(1, 50, size=200) for _ in range(3))
    d = paired_difference([a0, a1], b, "HR@10")
    expected = (per_user_metric(a0, "HR@10") + per_user_metric(a1, "HR@10")) / 2 - per_user_metric(b, "HR@10")
    assert d.difference == pytest.approx(expected.mean())
    with pytest.raises(ValueError, match="different users"):
        paired_difference(a0, b[:150])
    with pytest.raises(ValueError, match="different numbers of users"):
        paired_difference([a0, a1[:100]], b)
