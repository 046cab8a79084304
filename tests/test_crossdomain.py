"""Cross-domain transfer through one shared semantic-ID vocabulary (two small generated catalogs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qbert4rec_lib.experiments.crossdomain import run_cross_domain, split_ids, union_dataset
from qbert4rec_lib.experiments import semantic_ids, smoke_config
from qbert4rec_lib.data.synthetic_folder import load_default

TINY = dict(num_items=260, num_users=380)


@pytest.fixture(scope="module")
def pair():
    return load_default(seed=21, **TINY), load_default(seed=22, num_top_categories=3, **TINY)


@pytest.fixture(scope="module")
def tiny_cfg():
    from dataclasses import replace

    # a few epochs per phase: the checks below are about the mechanics (shared vocabulary, which weights move, the
    # table), not about how well the tiny models learn; notebook 08 checks the converged numbers
    cfg = smoke_config(0.05, stage_epochs_scale=0.05)
    return replace(cfg, features=replace(cfg.features, image_fit_epochs=2))


def test_union_keeps_both_catalogs_apart(pair):
    src, tgt = pair
    union = union_dataset(src, tgt)
    assert union.num_items == src.num_items + tgt.num_items
    assert union.num_users == src.num_users + tgt.num_users
    assert union.num_interactions == src.num_interactions + tgt.num_interactions
    assert union.items.titles[src.num_items] == tgt.items.titles[0]
    # target sequences are shifted past the source items, source sequences are untouched
    assert np.array_equal(union.sequences[0], src.sequences[0])
    assert np.array_equal(union.sequences[src.num_users], tgt.sequences[0] + src.num_items)
    assert len(set(union.items.raw_ids)) == union.num_items  # prefixed raw ids never collide
    assert union.ground_truth is not None and len(union.ground_truth["top_category"]) == union.num_items


def test_union_refuses_mismatched_image_modality(pair):
    from dataclasses import replace

    from qbert4rec_lib.data.dataset import Modalities

    src, tgt = pair
    no_images = replace(tgt, modalities=Modalities(text=True, image=False))
    with pytest.raises(ValueError, match="image"):
        union_dataset(src, no_images)


def test_shared_vocabulary_and_transfer(pair, tiny_cfg):
    src, tgt = pair
    union = union_dataset(src, tgt)
    ids = semantic_ids(union, tiny_cfg, progress=False)
    s, t = split_ids(ids, src.num_items)
    assert s.table.vocab_sizes == t.table.vocab_sizes == ids.table.vocab_sizes
    assert len(s.table.ids) == src.num_items and len(t.table.ids) == tgt.num_items
    assert np.array_equal(np.vstack([s.table.ids, t.table.ids]), ids.table.ids)
    assert len({tuple(r) for r in t.table.ids}) == tgt.num_items  # still unique within the target

    result = run_cross_domain(src, tgt, tiny_cfg, seed=0, progress=False, log=None)
    assert set(result.test) == {"popularity", "zero-shot", "scratch", "transfer", "in-domain"}
    assert result.copied_weights > 0
    assert 0.0 <= result.token_overlap <= 1.0
    for res in result.test.values():
        assert res.metrics["HR@10"] >= res.metrics["NDCG@10"] >= 0
        assert "full ranking" in res.protocol
    assert "| transfer |" in result.table_md()
    # zero-shot uses only source training, so it differs from the untrained (random) model's ranking
    assert result.test["zero-shot"].metrics["NDCG@10"] != result.test["scratch"].metrics["NDCG@10"]


def test_union_ground_truth_is_recoded_by_name(pair):
    src, tgt = pair
    union = union_dataset(src, tgt)
    for attr in src.ground_truth:
        names = union.ground_truth_labels[attr]
        got = [names[c] for c in union.ground_truth[attr]]
        want = [src.ground_truth_labels[attr][c] for c in src.ground_truth[attr]] + \
               [tgt.ground_truth_labels[attr][c] for c in tgt.ground_truth[attr]]
        assert got == want
