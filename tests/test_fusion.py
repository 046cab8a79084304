"""Stage 1 (fusion): alignment, gated depth, masks for missing modalities, the contrastive loss, caching."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qbert4rec_lib.semantic.features import FeatureSet, ModalityFeatures
from qbert4rec_lib.semantic.fusion import (
    FusionConfig,
    FusionModel,
    info_nce,
    multi_view_loss,
    run_fusion,
    train_fusion,
)


SMALL = FusionConfig(width=32, heads=2, max_depth=3, epochs=3, batch_size=64)


def clustered_features(n=240, k=6, seed=0, dims=(("text", 24), ("image", 12), ("structural", 8)), missing=0.25, j=1):
    """Items in k clusters; every modality sees the cluster plus noise; non-text modalities miss some items."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    mods = {}
    for i, (name, d) in enumerate(dims):
        centers = rng.normal(size=(k, d)) * 3
        vectors = centers[labels][:, None, :] + rng.normal(size=(n, j, d))
        present = rng.random(n) >= (missing if i else 0.0)
        vectors[~present] = 0.0
        mods[name] = ModalityFeatures(name=name, vectors=vectors.astype(np.float32), present=present, meta={"dim": d})
    return FeatureSet(dataset_fingerprint="fp", modalities=mods, absent={}), labels


def fake_dataset(n, name="toy"):
    return SimpleNamespace(name=name, num_items=n, fingerprint=lambda: f"{name}-{n}")


def _inputs(fs, names):
    feats = {m: torch.from_numpy(fs.modalities[m].vectors) for m in names}
    present = torch.stack([torch.from_numpy(fs.modalities[m].present) for m in names], 1)
    return feats, present


def test_train_fusion_outputs_are_well_formed():
    fs, _ = clustered_features()
    res = train_fusion(fs, SMALL, progress=False)
    n = 240
    assert res.embeddings.shape == (n, 32) and res.embeddings.dtype == np.float32
    assert np.isfinite(res.embeddings).all()
    assert res.modality_names == ("text", "image", "structural")
    assert res.exit_depth.shape == (n,) and res.exit_depth.min() >= 1 and res.exit_depth.max() <= 3
    assert res.modality_weights.shape == (n, 3)
    # attention shares: modalities + own ID token sum to one; a missing modality gets exactly zero
    np.testing.assert_allclose(res.modality_weights.sum(1) + res.id_attention, 1.0, atol=1e-5)
    assert (res.modality_weights[~res.modality_present] == 0).all()
    assert len(res.history) == 3 and {"loss", "contrastive", "mean_depth", "fused~text", "text~image"} <= set(res.history[0])
    summary = res.summary()
    assert summary["items"] == n and sum(summary["exit_depth_counts"].values()) == n


def test_fusion_learns_the_shared_cluster_structure():
    fs, labels = clustered_features(n=300, seed=1)
    res = train_fusion(fs, dataclasses.replace(SMALL, epochs=8), progress=False)
    assert res.history[-1]["contrastive"] < res.history[0]["contrastive"]
    emb = res.embeddings / np.linalg.norm(res.embeddings, axis=1, keepdims=True)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    nearest_same = (labels[sims.argmax(1)] == labels).mean()
    assert nearest_same > 0.8  # chance is ~1/6


def test_training_is_deterministic_given_the_seed():
    fs, _ = clustered_features(n=120)
    cfg = dataclasses.replace(SMALL, epochs=2)
    a = train_fusion(fs, cfg, progress=False)
    b = train_fusion(fs, cfg, progress=False)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    c = train_fusion(fs, dataclasses.replace(cfg, seed=1), progress=False)
    assert not np.allclose(a.embeddings, c.embeddings)


def test_alignment_is_a_softmax_over_an_items_vectors():
    fs, _ = clustered_features(n=16, j=3, dims=(("text", 10),), missing=0.0)
    cfg = dataclasses.replace(SMALL, tau=0.5)
    torch.manual_seed(0)
    model = FusionModel(16, {"text": 10}, cfg)
    rows = torch.arange(16)
    feats, _ = _inputs(fs, ("text",))
    aligned = model.align(rows, feats)  # [16, 1, 32]
    x = F.normalize(model.projections["text"](feats["text"]), dim=-1)  # [16, 3, 32]
    q = F.normalize(model.id_queries(rows), dim=-1)
    w = torch.softmax((x @ q.unsqueeze(-1)).squeeze(-1) / 0.5, dim=1)
    torch.testing.assert_close(aligned[:, 0], (w.unsqueeze(-1) * x).sum(1))
    # a tiny tau picks the single most similar vector
    model.cfg = dataclasses.replace(cfg, tau=1e-4)
    picked = x[torch.arange(16), (x @ q.unsqueeze(-1)).squeeze(-1).argmax(1)]
    torch.testing.assert_close(model.align(rows, feats)[:, 0], picked, atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias,expected", [(-20.0, 1), (20.0, 3)])
def test_hard_exit_follows_the_gate(bias, expected):
    fs, _ = clustered_features(n=32)
    cfg = dataclasses.replace(SMALL, gate_init_bias=bias)
    torch.manual_seed(0)
    model = FusionModel(32, {m: fs.modalities[m].vectors.shape[-1] for m in fs.modalities}, cfg)
    for gate in model.gates:  # make the gate a constant: only the bias speaks
        torch.nn.init.zeros_(gate[-1].weight)
    feats, present = _inputs(fs, tuple(fs.modalities))
    model.eval()
    rows = torch.arange(32)
    out = model(rows, feats, present, hard_exit=True)
    assert (out.exit_depth == expected).all()
    # the hard path with everyone exiting after block 1 equals running block 1 only
    if expected == 1:
        context_out = model.blocks[0](model.id_queries(rows), *_context(model, rows, feats, present))
        torch.testing.assert_close(out.fused, model.final_norm(context_out.hidden))
    # with saturated gates the soft (training) path equals the hard (inference) path
    soft = model(rows, feats, present, hard_exit=False)
    if expected == 3:
        torch.testing.assert_close(soft.fused, out.fused, atol=1e-5, rtol=0)
        torch.testing.assert_close(soft.expected_depth, torch.full((32,), 3.0), atol=1e-5, rtol=0)


def _context(model, rows, feats, present):
    aligned = model.align(rows, feats)
    context = torch.cat([model.id_queries(rows).unsqueeze(1), aligned], 1) + model.token_type.weight
    mask = torch.cat([torch.zeros_like(present[:, :1]), ~present], 1)
    return context, mask


def test_fixed_depth_ablation_runs_every_block():
    fs, _ = clustered_features(n=64)
    res = train_fusion(fs, dataclasses.replace(SMALL, gate="off", epochs=1), progress=False)
    assert (res.exit_depth == 3).all()
    assert res.history[0]["mean_depth"] == pytest.approx(3.0)


def test_item_without_any_modality_stays_finite():
    fs, _ = clustered_features(n=64)
    for mod in fs.modalities.values():
        mod.present[:5] = False
        mod.vectors[:5] = 0.0
    res = train_fusion(fs, dataclasses.replace(SMALL, epochs=1), progress=False)
    assert np.isfinite(res.embeddings).all()
    np.testing.assert_allclose(res.id_attention[:5], 1.0, atol=1e-6)


def test_missing_items_drop_out_of_their_contrastive_terms():
    torch.manual_seed(0)
    names = ("text", "image")
    b, d = 12, 16
    present = torch.ones(b, 2, dtype=torch.bool)
    present[:4, 1] = False  # the first four items have no image
    out = SimpleNamespace(projected=F.normalize(torch.randn(b, d), dim=-1), views=F.normalize(torch.randn(b, 2, d), dim=-1),
                          expected_depth=torch.full((b,), 3.0))
    cfg = FusionConfig()
    before = multi_view_loss(out, present, names, cfg)
    changed = SimpleNamespace(**vars(out))
    changed.views = out.views.clone()
    changed.views[:4, 1] = F.normalize(torch.randn(4, d), dim=-1)  # garbage in the missing image slots
    after = multi_view_loss(changed, present, names, cfg)
    assert before.terms == after.terms and set(before.terms) == {"fused~text", "fused~image", "text~image"}
    # depth penalty: a hinge above the free depth budget (budget 0 = plain linear penalty)
    assert float(before.loss) == pytest.approx(float(before.contrastive) + cfg.depth_penalty * (3.0 - cfg.depth_budget), rel=1e-6)
    linear = multi_view_loss(out, present, names, dataclasses.replace(cfg, depth_budget=0.0))
    assert float(linear.loss) == pytest.approx(float(linear.contrastive) + cfg.depth_penalty * 3.0, rel=1e-6)
    under_budget = multi_view_loss(out, present, names, dataclasses.replace(cfg, depth_budget=3.5))
    assert float(under_budget.loss) == pytest.approx(float(under_budget.contrastive), rel=1e-6)


def test_info_nce_is_low_for_matching_rows_and_symmetric():
    a = F.normalize(torch.randn(8, 16), dim=-1)
    assert float(info_nce(a, a, 0.05)) < 0.05
    b = F.normalize(torch.randn(8, 16), dim=-1)
    assert float(info_nce(a, b, 0.1)) == pytest.approx(float(info_nce(b, a, 0.1)), rel=1e-6)
    assert float(info_nce(a, b, 0.1)) > float(info_nce(a, a, 0.1))


def test_modality_subset_and_absent_modality_errors():
    fs, _ = clustered_features(n=64)
    res = train_fusion(fs, dataclasses.replace(SMALL, modalities=("text",), epochs=1), progress=False)
    assert res.modality_names == ("text",) and res.modality_weights.shape == (64, 1)
    del fs.modalities["image"]
    fs.absent["image"] = "dataset has no images"
    with pytest.raises(ValueError, match="dataset has no images"):
        train_fusion(fs, dataclasses.replace(SMALL, modalities=("text", "image")), progress=False)


def test_bad_config_and_bad_features_are_named():
    with pytest.raises(ValueError, match="gate"):
        FusionConfig(gate="sometimes")
    fs, _ = clustered_features(n=32)
    fs.modalities["image"].vectors[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image.*NaN"):
        train_fusion(fs, SMALL, progress=False)


def test_run_fusion_caches_by_content(tmp_path):
    fs, _ = clustered_features(n=80)
    ds = fake_dataset(80)
    cfg = dataclasses.replace(SMALL, epochs=1)
    first = run_fusion(ds, fs, cfg, cache_root=tmp_path, progress=False)
    second = run_fusion(ds, fs, cfg, cache_root=tmp_path, progress=False)
    assert not first.from_cache and second.from_cache and first.key == second.key
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.exit_depth, second.exit_depth)
    assert second.config == cfg and second.history == first.history
    other = run_fusion(ds, fs, dataclasses.replace(cfg, seed=3), cache_root=tmp_path, progress=False)
    assert other.key != first.key and not other.from_cache
    with pytest.raises(ValueError, match="80 rows"):
        run_fusion(fake_dataset(81), fs, cfg, cache_root=tmp_path, progress=False)


def test_modality_dropout_hides_tokens_from_attention_only():
    fs, _ = clustered_features(n=40, missing=0.0)
    names = tuple(fs.modalities)
    torch.manual_seed(0)
    model = FusionModel(40, {m: fs.modalities[m].vectors.shape[-1] for m in names}, SMALL).eval()
    feats, present = _inputs(fs, names)
    attend = present.clone()
    attend[:10, 1] = False  # hide the image token of the first ten items
    out = model(torch.arange(40), feats, present, hard_exit=True, attend=attend)
    assert (out.modality_weights[:10, 1] == 0).all() and (out.modality_weights[10:, 1] > 0).all()
    full = model(torch.arange(40), feats, present, hard_exit=True)
    torch.testing.assert_close(out.views, full.views)  # the image view is still there as a target
    torch.testing.assert_close(out.fused[10:], full.fused[10:])
    assert not torch.allclose(out.fused[:10], full.fused[:10])


# ---- ID dropout: the new-item query (cold start) ----------------------------------------------------------------


def test_id_dropout_fields_are_key_neutral_and_validated():
    from qbert4rec_lib.config import ConfigError
    from qbert4rec_lib.keys import _key_view, stable_hash

    assert not {"id_dropout", "id_consistency"} & set(_key_view(FusionConfig()))  # old cache keys stay valid
    assert stable_hash(FusionConfig()) != stable_hash(FusionConfig(id_dropout=0.5))
    with pytest.raises((ConfigError, ValueError), match="id_dropout"):
        FusionConfig(id_dropout=1.0)
    with pytest.raises(ValueError, match="id_consistency > 0 needs id_dropout"):
        FusionConfig(id_consistency=1.0)
    assert not hasattr(FusionModel(4, {"text": 3}, SMALL), "new_item_query")  # id_dropout = 0: no extra parameter


def test_new_item_path_ignores_the_items_own_query():
    cfg = dataclasses.replace(SMALL, id_dropout=0.5)
    model = FusionModel(8, {"text": 6}, cfg).eval()
    feats = {"text": torch.randn(1, 1, 6).expand(8, 1, 6).contiguous()}  # eight items with the same content
    present, rows = torch.ones(8, 1, dtype=torch.bool), torch.arange(8)
    own = model(rows, feats, present).fused
    new = model(rows, feats, present, new_item=torch.ones(8, dtype=torch.bool)).fused
    assert own.std(0).mean() > 1e-3  # their own (random) queries make them differ ...
    torch.testing.assert_close(new, new[:1].expand_as(new))  # ... q_new makes them identical
    mixed = model(rows, feats, present, new_item=torch.arange(8) % 2 == 0).fused
    torch.testing.assert_close(mixed[1::2], own[1::2])
    with pytest.raises(ValueError, match="without ID dropout"):
        FusionModel(8, {"text": 6}, SMALL)(rows, feats, present, new_item=torch.ones(8, dtype=torch.bool))


def test_id_dropout_trains_the_new_item_query_and_consistency_pulls_new_items_home():
    fs, _ = clustered_features()
    feats, present = _inputs(fs, ("text", "image", "structural"))
    content_only = present.clone()
    content_only[:, 2] = False  # a new item has no structural modality
    agreement = {}
    for w in (0.0, 3.0):
        cfg = dataclasses.replace(SMALL, epochs=6, id_dropout=0.5, id_consistency=w)
        res = train_fusion(fs, cfg, progress=False)
        model = res.model.eval()
        torch.manual_seed(cfg.seed)  # train_fusion's initialisation, rebuilt
        init = FusionModel(240, {m: feats[m].shape[-1] for m in feats}, cfg).new_item_query
        assert not torch.allclose(model.new_item_query, init)  # q_new was trained
        with torch.no_grad():
            own = F.normalize(model(torch.arange(240), feats, present).fused, dim=-1)
            new = F.normalize(model(torch.arange(240), feats, content_only,
                                    new_item=torch.ones(240, dtype=torch.bool)).fused, dim=-1)
        agreement[w] = float((new @ own.T).argmax(1).eq(torch.arange(240)).float().mean())  # new-item path finds itself
    assert agreement[3.0] > agreement[0.0] + 0.1, agreement


def test_new_item_path_needs_id_dropout():
    from qbert4rec_lib.experiments.coldstart_ids import NEW_ITEM_PATH, QUERY_PATHS, cold_semantic_ids, query_paths
    from qbert4rec_lib.experiments.presets import preset

    cfg = preset("smoke")
    assert query_paths(cfg) == QUERY_PATHS
    on = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, id_dropout=0.5))
    assert query_paths(on) == QUERY_PATHS + (NEW_ITEM_PATH,)
    with pytest.raises(ValueError, match="fusion.id_dropout > 0"):  # checked before any data is read
        cold_semantic_ids(None, None, cfg, "fused", paths=[NEW_ITEM_PATH])


def test_sparse_query_optimizer_moves_only_the_batch_rows_and_still_learns():
    from qbert4rec_lib.keys import _key_view
    from qbert4rec_lib.semantic.epochs import EpochLoop

    assert "query_optimizer" not in _key_view(FusionConfig())  # "adamw" is the old behaviour: old keys stay valid
    cfg = dataclasses.replace(SMALL, query_optimizer="sparse_adam")
    fs, labels = clustered_features()
    feats, present = _inputs(fs, ("text", "image", "structural"))
    model = FusionModel(240, {m: feats[m].shape[-1] for m in feats}, cfg)
    loop = EpochLoop(model, cfg, 240, desc="t", progress=False)
    assert loop.sparse_optimizer is not None and all(p is not model.id_queries.weight
                                                      for g in loop.optimizer.param_groups for p in g["params"])
    before, rows = model.id_queries.weight.detach().clone(), torch.arange(10, 40)
    out = model(rows, {m: v[rows] for m, v in feats.items()}, present[rows], hard_exit=False)
    loop.step(multi_view_loss(out, present[rows], model.modality_names, cfg).loss)
    moved = (model.id_queries.weight.detach() != before).any(1)
    assert moved[rows].all() and not moved[:10].any() and not moved[40:].any()  # AdamW would decay every row
    res = train_fusion(fs, dataclasses.replace(cfg, epochs=8), progress=False)
    emb = F.normalize(torch.from_numpy(res.embeddings), dim=-1)
    sims = emb @ emb.T
    sims.fill_diagonal_(-2)
    assert (labels[sims.argmax(1).numpy()] == labels).mean() > 0.8  # still finds the clusters (chance 1/6)
