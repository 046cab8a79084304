"""The evaluator: hand-worked ranks and metrics, tie-breaking, history exclusion, and a cross-check
against an independent implementation (torchmetrics' retrieval metrics)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qbert4rec_lib.experiments.evaluate import (
    EvalConfig,
    EvalResult,
    aggregate,
    evaluate,
    metric_names,
    metrics_from_ranks,
    protocol_text,
    rank_targets,
    results_table,
)
from qbert4rec_lib.models.base import SequentialRecommender, pad_left


# Three users, six items (ids 1..6); column 0 is padding and gets a huge score it must not use.
SCORES = np.array(
    [
        #  pad   1     2     3     4     5     6
        [9.0, 0.90, 0.80, 0.50, 0.70, 0.10, 0.50],  # user A: history {1, 2}, target 3 (tied with 6)
        [9.0, 0.20, 0.30, 0.95, 0.10, 0.60, 0.00],  # user B: history {3, 5}, target 5 (a re-purchase)
        [9.0, 0.10, 0.40, 0.30, 0.20, 0.15, 0.90],  # user C: history {6}, target 1
    ]
)
HISTORIES = [np.array([1, 2]), np.array([3, 5]), np.array([6])]
TARGETS = np.array([3, 5, 1])


def ranks_by_hand(exclude: bool, tie_break: str = "pessimistic", seed: int = 0) -> np.ndarray:
    scores = torch.tensor(SCORES, dtype=torch.float32)
    hist = torch.tensor([[1, 2], [3, 5], [0, 6]])
    gen = torch.Generator().manual_seed(seed)
    return rank_targets(scores, torch.tensor(TARGETS), hist if exclude else None, tie_break=tie_break, generator=gen).numpy()


def test_hand_worked_ranks_with_history_exclusion():
    # A: items 1, 2 excluded; 4 (0.7) beats the target 3 (0.5), item 6 ties it -> pessimistic rank 3.
    # B: item 3 (0.95) excluded; the target 5 is in the history but keeps its score -> rank 1.
    # C: item 6 excluded; items 2, 3, 4, 5 beat item 1 -> rank 5. The padding column never counts.
    assert ranks_by_hand(exclude=True).tolist() == [3, 1, 5]


def test_hand_worked_ranks_without_exclusion():
    # A: 1, 2, 4 higher, 6 tied -> 5.  B: 3 higher -> 2.  C: everything else higher -> 6.
    assert ranks_by_hand(exclude=False).tolist() == [5, 2, 6]


def test_hand_worked_metrics():
    cfg = EvalConfig(ks_hr=(1, 3, 5, 10), ks_ndcg=(3, 5))
    m = metrics_from_ranks(np.array([3, 1, 5]), cfg)
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["HR@5"] == pytest.approx(1.0)
    assert m["HR@10"] == pytest.approx(1.0)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 3)  # 0.5
    assert m["NDCG@5"] == pytest.approx((0.5 + 1.0 + 1 / math.log2(6)) / 3)  # 0.628951
    assert m["MRR"] == pytest.approx((1 / 3 + 1 + 1 / 5) / 3)  # 0.511111
    m = metrics_from_ranks(np.array([5, 2, 6]), cfg)
    assert m["HR@1"] == 0.0
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(6) + 1 / math.log2(3)) / 3)  # 0.339261
    assert m["MRR"] == pytest.approx((1 / 5 + 1 / 2 + 1 / 6) / 3)


class HandWorked(SequentialRecommender):
    """Returns the rows of SCORES; each user's history identifies it (A = {1,2}, B = {3,5}, C = {6})."""

    num_items = 6

    def score_all(self, histories):
        rows = [{(1, 2): 0, (3, 5): 1, (6,): 2}[tuple(int(x) for x in h if x)] for h in histories]
        return torch.tensor(SCORES[rows], dtype=torch.float32)


def test_evaluate_end_to_end_on_the_hand_worked_example():
    res = evaluate(HandWorked(), HISTORIES, TARGETS, 6, EvalConfig(), max_len=4)
    assert res.ranks.tolist() == [3, 1, 5]
    assert res.num_users == 3
    assert list(res.metrics) == ["HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR"]
    assert res.metrics["NDCG@5"] == pytest.approx(0.628951, abs=1e-6)
    assert res.metrics["MRR"] == pytest.approx(0.511111, abs=1e-6)
    assert res.protocol == (
        "leave-one-out, full ranking over all 6 items, user's history items excluded, pessimistic ties, test split"
    )
    kept = evaluate(HandWorked(), HISTORIES, TARGETS, 6, EvalConfig(exclude_history=False), max_len=4)
    assert kept.ranks.tolist() == [5, 2, 6]
    assert kept.metrics["NDCG@5"] == pytest.approx(0.339261, abs=1e-6)
    assert metric_names(EvalConfig()) == list(res.metrics)


def test_candidates_restrict_the_ranking_to_those_items():
    # items 2 and 4 hidden: A's target 3 is tied only with 6 now (1, 2 are history) -> 2; B unchanged -> 1;
    # C's target 1 is beaten by 3 and 5 only -> 3 (full ranking: 3, 1, 5)
    res = evaluate(HandWorked(), HISTORIES, TARGETS, 6, EvalConfig(), max_len=4, candidates=[1, 3, 5, 6])
    assert res.ranks.tolist() == [2, 1, 3]
    with pytest.raises(ValueError, match=r"target of user #2 \(1\) is not among the candidates"):
        evaluate(HandWorked(), HISTORIES, TARGETS, 6, EvalConfig(), max_len=4, candidates=[3, 5])


def test_random_tie_break_is_seeded_and_stays_within_the_ties():
    seen = {int(ranks_by_hand(True, "random", seed)[0]) for seed in range(20)}
    assert seen == {2, 3}  # user A: one item strictly higher, one tie
    assert ranks_by_hand(True, "random", 7).tolist() == ranks_by_hand(True, "random", 7).tolist()
    assert ranks_by_hand(True, "random", 0)[1:].tolist() == [1, 5]  # no ties: same as pessimistic


def test_constant_scores_rank_last_when_pessimistic():
    scores = torch.zeros(2, 11)
    ranks = rank_targets(scores, torch.tensor([4, 10]))
    assert ranks.tolist() == [10, 10]


def test_protocol_text_and_config_validation():
    assert protocol_text(EvalConfig(), "test", 12101) == (
        "leave-one-out, full ranking over all 12,101 items, user's history items excluded, pessimistic ties, test split"
    )
    assert "random ties (seed 3)" in protocol_text(EvalConfig(tie_break="random", seed=3), "valid", 5)
    assert "history items kept" in protocol_text(EvalConfig(exclude_history=False), "valid", 5)
    with pytest.raises(ValueError, match="tie_break"):
        EvalConfig(tie_break="optimistic")
    with pytest.raises(ValueError, match="ks_hr"):
        EvalConfig(ks_hr=(0,))


def test_evaluate_rejects_bad_inputs_and_restores_training_mode():
    class Wrong(SequentialRecommender):
        num_items = 6

        def score_all(self, histories):
            return torch.zeros(histories.shape[0], 6)  # forgot the padding column

    model = Wrong().train()
    with pytest.raises(ValueError, match=r"expected \(3, 7\)"):
        evaluate(model, HISTORIES, TARGETS, 6, max_len=4)
    assert model.training
    with pytest.raises(ValueError, match="outside item ids 1..6"):
        evaluate(model, HISTORIES, np.array([3, 7, 1]), 6, max_len=4)
    with pytest.raises(ValueError, match="2 histories but 3 targets"):
        evaluate(model, HISTORIES[:2], TARGETS, 6, max_len=4)


@pytest.mark.parametrize("exclude", [False, True])
def test_matches_torchmetrics_retrieval_metrics(exclude):
    tm = pytest.importorskip("torchmetrics.retrieval")
    rng = np.random.default_rng(0)
    users, items = 60, 40
    # continuous (no ties) and positive: torchmetrics' MRR treats a target scored <= 0 as a miss
    scores = rng.uniform(0.01, 1.0, size=(users, items + 1)).astype(np.float32)
    histories = [rng.choice(np.arange(1, items + 1), size=rng.integers(1, 8), replace=False) for _ in range(users)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(1, items + 1), h)) for h in histories])
    ranks = rank_targets(
        torch.tensor(scores), torch.tensor(targets),
        pad_left(histories, 8) if exclude else None,
    )
    ours = metrics_from_ranks(ranks.numpy(), EvalConfig())

    # the independent implementation sees items 1..N; excluded items are pushed below everything
    preds = torch.tensor(scores[:, 1:]).clone()
    if exclude:
        for u, h in enumerate(histories):
            preds[u, h - 1] = -1e9
    relevant = torch.zeros_like(preds, dtype=torch.bool)
    relevant[torch.arange(users), torch.tensor(targets) - 1] = True
    indexes = torch.arange(users).unsqueeze(1).expand_as(preds)
    flat = (preds.reshape(-1), relevant.reshape(-1), indexes.reshape(-1))
    for k in (1, 5, 10, 20):
        assert ours[f"HR@{k}"] == pytest.approx(float(tm.RetrievalHitRate(top_k=k)(*flat)), abs=1e-6)
    for k in (5, 10, 20):
        assert ours[f"NDCG@{k}"] == pytest.approx(float(tm.RetrievalNormalizedDCG(top_k=k)(*flat)), abs=1e-5)
    assert ours["MRR"] == pytest.approx(float(tm.RetrievalMRR()(*flat)), abs=1e-6)


def _result(ndcg: float, hr: float, protocol: str = "p") -> EvalResult:
    return EvalResult({"NDCG@10": ndcg, "HR@10": hr}, 10, protocol, 0.1)


def test_aggregate_and_results_table():
    runs = [_result(0.04, 0.07), _result(0.05, 0.08), _result(0.06, 0.09)]
    agg = aggregate(runs)
    assert agg["NDCG@10"].mean == pytest.approx(0.05)
    assert agg["NDCG@10"].std == pytest.approx(0.01)  # sample std (ddof=1)
    assert aggregate(runs[:1])["HR@10"].std == 0.0
    table = results_table({"SASRec-CE": runs, "Popularity": [_result(0.005, 0.01)]})
    assert "| SASRec-CE | 0.0500 ± 0.0100 | 0.0800 ± 0.0100 | 3 |" in table
    assert "| Popularity | 0.0050 | 0.0100 | 1 |" in table
    assert "Protocol: p." in table
    with pytest.raises(ValueError, match="different protocols"):
        aggregate([_result(0.1, 0.1, "a"), _result(0.1, 0.1, "b")])
    with pytest.raises(KeyError, match="MRR"):
        results_table({"x": runs}, metrics=("MRR",))


def test_length_sorted_batching_does_not_change_ranks():
    from qbert4rec_lib.models.baselines import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(hidden_size=16, max_len=8))
    rng = np.random.default_rng(1)
    histories = [rng.integers(1, 31, size=rng.integers(1, 12)) for _ in range(50)]
    targets = rng.integers(1, 31, size=50)
    a = evaluate(model, histories, targets, 30, EvalConfig(batch_size=7), max_len=8)
    b = evaluate(model, histories, targets, 30, EvalConfig(batch_size=50, length_sorted=False), max_len=8)
    assert a.ranks.tolist() == b.ranks.tolist()
    assert a.metrics == pytest.approx(b.metrics)
