"""Beam search over the semantic-ID prefix tree (qbert4rec_lib.experiments.retrieval): exactness at full width, valid items
at small widths, the evaluator's protocol, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate
from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig
from qbert4rec_lib.experiments.retrieval import PrefixTrie, beam_search, evaluate_beam, full_topk

CFG = dict(hidden=16, layers=1, heads=2, dropout=0.0, max_len=10)
HEADS = {"token_mlp": dict(item_head="token_mlp"), "level_sum": dict(item_head="level_sum"),
         "token_mlp_bias": dict(item_head="token_mlp", item_bias=True)}


def random_ids(n: int = 240, vocab: int = 6, seed: int = 0) -> np.ndarray:
    """[n, 3]: two random levels + a disambiguation index (every tuple unique)."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, vocab, size=(n, 2))
    last, counts = np.zeros(n, dtype=np.int64), {}
    for k, p in enumerate(map(tuple, prefix)):
        last[k] = counts.get(p, 0)
        counts[p] = last[k] + 1
    return np.concatenate([prefix, last[:, None]], axis=1)


def make_model(head: str, ids=None, seed: int = 0) -> QBert4Rec:
    torch.manual_seed(seed)
    model = QBert4Rec(random_ids() if ids is None else ids, config=QBertConfig(**CFG, **HEADS[head]))
    with torch.no_grad():  # spread the scores (a fresh model scores almost every item alike)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def histories(n_users: int = 40, num_items: int = 240, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(1, 9)), replace=False) for _ in range(n_users)]


def test_trie_holds_exactly_the_catalog_prefixes():
    ids = np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0], [0, 0, 0], [2, 0, 1]])
    trie = PrefixTrie(ids)
    assert trie.level_sizes() == [2, 3, 5, 5]
    assert trie.token[0].tolist() == [0, 2]
    assert trie.child_count[1].tolist() == [2, 1]  # root children (0,) -> (0,0), (0,1); (2,) -> (2,0)
    assert sorted(trie.item_of_leaf_slot.tolist()) == [1, 2, 3, 4, 5]
    for level in range(3):  # each item's node at each level spells its prefix
        for item in range(5):
            node = trie.node_of_item[level][item]
            assert trie.token[level][node] == ids[item, level]
    with pytest.raises(ValueError, match="non-empty int"):
        PrefixTrie(np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        PrefixTrie(np.array([[-1, 0]]))


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("exclude", [True, False])
def test_full_width_beam_is_exactly_full_ranking(head, exclude):
    model = make_model(head)
    hist = histories()
    exact = full_topk(model, hist, k=15, exclude_history=exclude)
    beam = beam_search(model, hist, k=15, beam_width=240, exclude_history=exclude)
    assert torch.equal(beam.items, exact.items)
    torch.testing.assert_close(beam.scores, exact.scores, atol=1e-5, rtol=1e-5)
    # the reference itself is the top of score_all, best first
    with torch.no_grad():
        scores = model.score_all(torch.as_tensor(np.stack([np.pad(h, (8 - len(h), 0)) for h in hist])))
    if not exclude:
        assert torch.equal(exact.items[:, 0], scores.argmax(dim=1))


@pytest.mark.parametrize("head", ["token_mlp", "level_sum"])
@pytest.mark.parametrize("width", [1, 3, 10])
def test_small_beams_return_valid_unseen_distinct_items(head, width):
    model = make_model(head)
    hist = histories()
    out = beam_search(model, hist, k=10, beam_width=width)
    for row, h in zip(out.items.tolist(), hist):
        real = [i for i in row if i != 0]
        assert all(1 <= i <= 240 for i in real)
        assert not set(real) & set(h.tolist())
        assert len(set(real)) == len(real)
    assert torch.isfinite(out.scores[out.items > 0]).all()
    assert (out.scores[out.items == 0] == -np.inf).all()
    # scores are each item's full score (score_all), in descending order
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()


def test_level_sum_prefix_scores_bound_the_items_below():
    """level_sum: log-probs are <= 0, so a wider beam can only find items that score higher or equal."""
    model = make_model("level_sum")
    hist = histories()
    narrow = beam_search(model, hist, k=1, beam_width=1, exclude_history=False)
    exact = full_topk(model, hist, k=1, exclude_history=False)
    assert (exact.scores >= narrow.scores - 1e-6).all()


@pytest.mark.parametrize("head", ["token_mlp", "level_sum"])
def test_evaluate_beam_at_full_width_matches_the_evaluator(head):
    model = make_model(head)
    hist = histories(60)
    rng = np.random.default_rng(5)
    targets = rng.integers(1, 241, size=len(hist))
    hist[0] = np.append(hist[0], targets[0])  # a re-purchase: the target keeps its own score
    full = evaluate(model, hist, targets, 240, EvalConfig(), max_len=10)
    beam = evaluate_beam(model, hist, targets, 240, EvalConfig(), beam_width=240)
    np.testing.assert_array_equal(beam.ranks, full.ranks)
    assert beam.metrics == full.metrics
    assert "beam search of width 240" in beam.protocol and "miss" in beam.protocol


def test_evaluate_beam_counts_unretrieved_targets_as_misses():
    model = make_model("level_sum")
    hist = histories(60)
    targets = np.random.default_rng(6).integers(1, 241, size=len(hist))
    narrow = evaluate_beam(model, hist, targets, 240, beam_width=2)
    full = evaluate(model, hist, targets, 240, EvalConfig(), max_len=10)
    missed = narrow.ranks == 241
    assert missed.any()
    # a retrieved target is ranked among fewer items, so never worse than in full ranking
    assert (narrow.ranks[~missed] <= full.ranks[~missed]).all()


def test_bad_inputs_are_named():
    model = make_model("token_mlp")
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, histories(2), beam_width=0)
    with pytest.raises(ValueError, match="k must"):
        beam_search(model, histories(2), k=0)
    with pytest.raises(TypeError, match="QBert4Rec"):
        beam_search(torch.nn.Linear(2, 2), histories(2))
    with pytest.raises(ValueError, match="targets"):
        evaluate_beam(model, histories(2), [0, 1], 240)
    with pytest.raises(ValueError, match="pessimistic"):
        evaluate_beam(model, histories(2), [1, 1], 240, EvalConfig(tie_break="random"))
