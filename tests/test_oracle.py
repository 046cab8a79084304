"""The generated catalog's ceiling: the generator's own next-item probabilities, replayed (data/oracle.py)."""
import hashlib

import numpy as np
import pytest

from qbert4rec_lib.data import synthetic as S
from qbert4rec_lib.data import synthetic_folder as SF
from qbert4rec_lib.data.dataset import DataFormatError
from qbert4rec_lib.data.oracle import generator_of, oracle_scores
from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate_scores, evaluate_split
from qbert4rec_lib.models.baselines import Popularity

SMALL = S.SyntheticConfig(num_items=300, num_users=500)


def _digest(cfg: S.SyntheticConfig) -> str:
    h = hashlib.sha256()
    for s in S.generate(cfg).sequences:
        h.update(s.tobytes() + b"|")
    return h.hexdigest()[:16]


def test_the_generators_draws_are_pinned():
    """Replaying the generator (the oracle) must not move its random streams: every cached artifact, record and
    pinned notebook figure of the kit was made from these sequences."""
    assert _digest(SMALL) == "4f4aabd0287b2ce2"
    assert _digest(S.SyntheticConfig(num_items=300, num_users=500, id_driven=0.5)) == "285a964664f3e825"


@pytest.mark.parametrize("id_driven", [0.0, 0.6])
def test_next_item_probabilities_are_what_the_generator_samples(id_driven):
    """For a fixed state, the replayed probabilities match the frequencies of many draws of the generator's own
    step function (the mixture of complement / brand / catalog pools, and the follow-ups when id_driven > 0)."""
    cfg = S.SyntheticConfig(num_items=300, num_users=500, id_driven=id_driven)
    world = S.generate(cfg).world
    user, seq = 7, [int(i) for i in world.raw_sequences[7][:3]]
    seen = np.zeros(cfg.num_items, dtype=bool)
    seen[seq] = True
    weight = world.user_weight(user)
    p = S.next_item_probabilities(world, cfg, weight, seq[-1], seen)
    assert p.sum() == pytest.approx(1.0) and (p[seen] == 0).all()
    rng, rng_id = np.random.default_rng(0), np.random.default_rng(1)
    draws = np.array([S._draw_next(world, cfg, rng, rng_id, weight, seq, seen) for _ in range(20000)])
    freq = np.bincount(draws, minlength=cfg.num_items) / len(draws)
    assert np.abs(freq - p).sum() < 0.08  # total variation of 20,000 draws from the right distribution: ~0.05
    assert np.corrcoef(freq, p)[0, 1] > 0.98


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = SF.generate_catalog(SMALL, tmp_path_factory.mktemp("oracle") / "small")
    from qbert4rec_lib.data.loaders import load_dataset

    return load_dataset(folder)


def test_the_oracle_is_a_ceiling_above_popularity_and_taste_adds_to_it(small):
    split = small.split(max_len=50)
    full = evaluate_scores(oracle_scores(small, "test"), split, "test")
    no_taste = evaluate_scores(oracle_scores(small, "test", taste=False), split, "test")
    popularity = evaluate_split(Popularity(split.train_item_counts()), split, "test")
    assert full.metrics["NDCG@10"] > no_taste.metrics["NDCG@10"] > popularity.metrics["NDCG@10"] + 0.02
    assert full.metrics["MRR"] > popularity.metrics["MRR"]
    scores = oracle_scores(small, "valid")
    assert scores.shape == (small.num_users, small.num_items + 1) and (scores[:, 0] == 0).all()
    mass = scores[:, 1:].sum(axis=1)  # 1 but for the items k-core filtering removed from the catalog
    assert (mass <= 1 + 1e-9).all() and mass.mean() > 0.8
    targets = split.valid_target
    assert (scores[np.arange(len(targets)), targets] > 0).all()  # the drawn item always had a chance
    for u in range(5):  # the user's earlier items have probability 0: items are not repeated
        assert (scores[u, split.valid_history[u]] == 0).all()


def test_evaluate_scores_ranks_as_the_evaluator_does(small):
    split = small.split(max_len=50)
    counts = split.train_item_counts().astype(np.float64)
    fixed = np.tile(counts, (small.num_users, 1))
    for cfg in (EvalConfig(), EvalConfig(exclude_history=False)):
        model_result = evaluate_split(Popularity(split.train_item_counts()), split, "test", cfg)
        score_result = evaluate_scores(fixed, split, "test", cfg)
        np.testing.assert_array_equal(score_result.ranks, model_result.ranks)
        assert score_result.protocol == model_result.protocol
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(fixed[:, 1:], split)


def test_a_dataset_the_generator_did_not_write_is_refused(small, tmp_path):
    other = small.__class__(**{**small.__dict__, "source": str(tmp_path)})
    with pytest.raises(DataFormatError, match="not a generated catalog"):
        generator_of(other)


def test_the_fitted_structure_recovers_the_generators_form_from_training_data(small):
    from qbert4rec_lib.data.oracle import fitted_structure_scores

    split = small.split(max_len=50)
    scores, params = fitted_structure_scores(small, "test")
    assert params["complement_prob"] == pytest.approx(SMALL.complement_prob, abs=0.1)
    assert params["same_brand_prob"] == pytest.approx(SMALL.same_brand_prob, abs=0.1)
    fitted = evaluate_scores(scores, split, "test").metrics["NDCG@10"]
    popularity = evaluate_split(Popularity(split.train_item_counts()), split, "test").metrics["NDCG@10"]
    ceiling = evaluate_scores(oracle_scores(small, "test"), split, "test").metrics["NDCG@10"]
    assert popularity + 0.02 < fitted < ceiling + 0.01
    bare = small.__class__(**{**small.__dict__, "ground_truth": None})
    with pytest.raises(DataFormatError, match="item attributes"):
        fitted_structure_scores(bare)


def test_an_oracle_that_does_not_know_some_items_popularity_gives_them_their_mean(small):
    """``unknown_popularity``: with every item's popularity unknown and the taste left out, an item's probability
    depends only on its pools (subcategory, brand), so items that share both score alike -- which the exact oracle
    (Zipf popularity per item) does not do."""
    cfg, catalog = generator_of(small)
    world = catalog.world
    row_of_raw = {rid: k for k, rid in enumerate(catalog.raw_ids)}
    raw = np.array([catalog.generator_index[row_of_raw[rid]] for rid in small.items.raw_ids])  # [N]
    key = world.subcategory[raw] * 10_000 + world.brand[raw]
    values, counts = np.unique(key, return_counts=True)
    twins = np.flatnonzero(key == values[counts.argmax()]) + 1  # item ids sharing subcategory and brand
    assert len(twins) >= 2
    everything = np.arange(1, small.num_items + 1)
    flat = oracle_scores(small, "test", taste=False, unknown_popularity=everything)[:, twins]  # [U, n]
    exact = oracle_scores(small, "test", taste=False)[:, twins]
    live = (flat > 0).all(axis=1)  # users who have not seen any of them
    assert live.sum() > 10
    assert np.allclose(flat[live], flat[live][:, :1])
    assert not np.allclose(exact[live], exact[live][:, :1])
    with pytest.raises(ValueError, match="outside"):
        oracle_scores(small, "test", unknown_popularity=np.array([0]))
