"""Stage 2 (RQ-VAE): quantizer semantics (cross-checked against vector-quantize-pytorch), unique semantic
IDs, codebook health, purity, the ID table and caching."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qbert4rec_lib.semantic.code_health import category_purity, code_health, random_purity_baseline, usage_counts
from qbert4rec_lib.semantic.quantize import (
    RQVAE,
    ResidualQuantizer,
    RQVAEConfig,
    SemanticIDTable,
    _reseed_dead_codes,
    disambiguate,
    effective_codebook_size,
    run_quantize,
    train_rqvae,
)


def clustered(n=800, k=8, d=48, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    x = rng.normal(size=(k, d))[labels] * 3 + rng.normal(size=(n, d))
    if scale is not None:
        x = x * scale
    return x.astype(np.float32), labels


SMALL = RQVAEConfig(encoder_hidden=(64,), code_dim=16, epochs=12, batch_size=128)


# ---- the quantizer ----------------------------------------------------------------------------


def test_eval_quantized_is_the_sum_of_the_chosen_codes():
    torch.manual_seed(0)
    rq = ResidualQuantizer(levels=3, codebook_size=16, dim=8).eval()
    x = torch.randn(50, 8)
    out = rq(x)
    assert out.indices.shape == (50, 3) and out.residuals.shape == (50, 3, 8)
    chosen = torch.stack([rq.codebooks[level][out.indices[:, level]] for level in range(3)], 1)  # [50, 3, 8]
    torch.testing.assert_close(out.quantized, chosen.sum(1))
    # each level picked the nearest code to what the previous levels left over
    residual = x
    for level in range(3):
        torch.testing.assert_close(out.residuals[:, level], residual)
        brute = ((residual[:, None, :] - rq.codebooks[level][None]) ** 2).sum(-1).argmin(1)
        assert torch.equal(brute, out.indices[:, level])
        residual = residual - chosen[:, level]


def test_straight_through_gradient_and_losses():
    torch.manual_seed(0)
    rq = ResidualQuantizer(levels=2, codebook_size=8, dim=4)
    x = torch.randn(10, 4, requires_grad=True)
    out = rq(x)
    upstream = torch.randn(10, 4)
    (out.quantized * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # identity gradient through the quantizer
    assert rq.codebooks.grad is None  # codes move only through the codebook loss
    out = rq(x)
    assert float(out.codebook_loss.detach()) == pytest.approx(float(out.commit_loss.detach()))  # same value, different gradients
    out.codebook_loss.backward()
    used = torch.zeros(2, 8, dtype=torch.bool)
    for level in range(2):
        used[level, out.indices[:, level]] = True
    grad_norm = rq.codebooks.grad.norm(dim=-1)
    assert (grad_norm[~used] == 0).all() and (grad_norm[used] > 0).all()


def test_same_indices_as_vector_quantize_pytorch_residual_vq():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    ours = ResidualQuantizer(levels=4, codebook_size=32, dim=16).eval()
    ref = vqp.ResidualVQ(dim=16, num_quantizers=4, codebook_size=32).eval()
    with torch.no_grad():
        for level, layer in enumerate(ref.layers):
            layer._codebook.embed.copy_(ours.codebooks[level][None])
    x = torch.randn(300, 16)
    with torch.no_grad():
        ref_quantized, ref_indices, _ = ref(x[None])  # [1, 300, 16], [1, 300, 4]
        out = ours(x)
    assert torch.equal(ref_indices[0], out.indices)
    torch.testing.assert_close(ref_quantized[0], out.quantized, atol=1e-5, rtol=0)


# ---- semantic IDs and their table ----------------------------------------------------------------


def test_disambiguation_numbers_each_group_in_item_order():
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1], [1, 2], [0, 0]])
    np.testing.assert_array_equal(disambiguate(codes), [0, 0, 1, 0, 2, 1])
    health = code_health(codes, codebook_size=4)
    assert health["unique_before"] == pytest.approx(3 / 6)
    assert health["collision_rate"] == pytest.approx(5 / 6)
    assert health["largest_group"] == 3 and health["max_disambiguation"] == 2
    assert health["levels"][0]["used"] == 3 and health["levels"][0]["dead_codes"] == 1
    # perplexity of level 2 (codes 2,0,2,1,2,0 -> 3/6, 2/6, 1/6)
    p = np.array([3, 2, 1]) / 6
    assert health["levels"][1]["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_semantic_id_table_prefix_maps_and_round_trip(tmp_path):
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1], [1, 0]])
    table = SemanticIDTable(np.c_[codes, disambiguate(codes)], (4, 4, 2))
    assert table.tokens(3) == (1, 2, 1)
    np.testing.assert_array_equal(table.items_with_prefix((1,)), [1, 3, 5])
    np.testing.assert_array_equal(table.items_with_prefix((1, 2)), [1, 3])
    assert table.items_with_prefix((2,)).size == 0
    groups = table.prefix_groups(1)
    assert set(groups) == {(0,), (1,), (3,)}
    assert sorted(np.concatenate(list(groups.values()))) == [1, 2, 3, 4, 5]
    full = table.prefix_groups(3)
    assert all(len(v) == 1 for v in full.values()) and len(full) == 5
    table.save(tmp_path / "ids")
    back = SemanticIDTable.load(tmp_path / "ids")
    np.testing.assert_array_equal(back.ids, table.ids)
    assert back.vocab_sizes == (4, 4, 2)
    with pytest.raises(ValueError, match="outside"):
        SemanticIDTable(np.array([[5, 0, 0]]), (4, 4, 2))
    with pytest.raises(ValueError, match="level"):
        table.prefix_groups(0)


def test_effective_codebook_size_rule():
    cfg = RQVAEConfig()
    assert effective_codebook_size(cfg, 12_101) == 256  # Amazon Beauty keeps the full codebook
    assert effective_codebook_size(cfg, 2_000) == 64
    assert effective_codebook_size(cfg, 100) == 4
    assert effective_codebook_size(dataclasses.replace(cfg, adapt_codebook_size=False), 100) == 256


def test_usage_counts_and_purity():
    ids = np.array([[0, 1], [0, 2], [1, 1], [2, 0]])
    np.testing.assert_array_equal(usage_counts(ids, 1, 4), [2, 1, 1, 0])
    np.testing.assert_array_equal(usage_counts(ids, 2, 3), [1, 2, 1])
    labels = ["a", "a", "b", "b"]
    assert category_purity(ids[:, 0], labels) == pytest.approx((2 + 1 + 1) / 4)
    assert category_purity(ids[:, 1], labels) == pytest.approx((1 + 1 + 1) / 4)  # code 1 holds a and b
    assert category_purity(ids, labels) == 1.0  # a full prefix: every row is its own group
    assert category_purity(ids[:, 1], ["a", "x", "b", "b"], ignore="x") == pytest.approx(2 / 3)  # item 2 left out
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    assert category_purity(labels, labels) == 1.0
    baseline = random_purity_baseline(labels, labels, seeds=5)
    assert 0.15 < baseline < 0.3  # shuffled: about the largest class share
    assert random_purity_baseline(np.zeros(2000, int), labels) == pytest.approx(category_purity(np.zeros(2000, int), labels))


def test_reseeding_revives_every_dead_first_level_code():
    x, _ = clustered(n=200, d=16)
    torch.manual_seed(0)
    model = RQVAE(16, dataclasses.replace(SMALL, levels=2), codebook_size=16)
    with torch.no_grad():
        model.quantizer.codebooks[0, 1:] += 100.0  # every code but 0 is far away: dead
        out = model(torch.from_numpy(x))
    codes, residuals = out.rq.indices.numpy(), out.rq.residuals.detach().numpy()
    assert np.bincount(codes[:, 0], minlength=16)[1:].sum() == 0
    moved = _reseed_dead_codes(model, codes, residuals, np.random.default_rng(0))
    assert moved >= 15
    with torch.no_grad():
        after = model(torch.from_numpy(x)).rq.indices.numpy()
    assert (np.bincount(after[:, 0], minlength=16) > 0).all()


# ---- training --------------------------------------------------------------------------------------


def test_train_rqvae_gives_unique_ids_healthy_codebooks_and_pure_codes():
    x, labels = clustered(n=800, scale=50.0)  # badly scaled input: standardisation must handle it
    res = train_rqvae(x, SMALL, progress=False)
    k = effective_codebook_size(SMALL, 800)
    assert k == 32 and res.codebook_size == 32
    assert res.codes.shape == (800, 3) and res.semantic_ids.shape == (800, 4)
    assert len(np.unique(res.semantic_ids, axis=0)) == 800  # every item has its own ID
    np.testing.assert_array_equal(res.semantic_ids[:, :3], res.codes)
    np.testing.assert_array_equal(res.semantic_ids[:, 3], disambiguate(res.codes))
    assert res.table.vocab_sizes == (32, 32, 32, res.health["max_disambiguation"] + 1)
    assert res.health["levels"][0]["usage"] >= 0.9
    purity = category_purity(res.codes[:, 0], labels)
    assert purity > 0.9 and purity > random_purity_baseline(res.codes[:, 0], labels) + 0.5
    assert len(res.history) == 12 and len(res.history[0]["usage"]) == 3
    assert res.history[-1]["recon"] < res.history[0]["recon"]
    assert res.codebooks.shape == (3, 32, 16)
    summary = res.summary()
    assert summary["unique_after"] == 1.0 and summary["codebook_size"] == 32


def test_train_rqvae_is_deterministic_and_validates_input():
    x, _ = clustered(n=300)
    cfg = dataclasses.replace(SMALL, epochs=3)
    a, b = train_rqvae(x, cfg, progress=False), train_rqvae(x, cfg, progress=False)
    np.testing.assert_array_equal(a.semantic_ids, b.semantic_ids)
    with pytest.raises(ValueError, match="NaN"):
        train_rqvae(np.full((10, 4), np.nan, dtype=np.float32), cfg, progress=False)
    with pytest.raises(ValueError, match="codebook size"):
        train_rqvae(x[:20], dataclasses.replace(cfg, adapt_codebook_size=False), progress=False)


def test_run_quantize_caches_and_keys_on_the_source(tmp_path):
    x, _ = clustered(n=200)
    ds = SimpleNamespace(name="toy", num_items=200, fingerprint=lambda: "toy-fp")
    cfg = dataclasses.replace(SMALL, epochs=2)
    first = run_quantize(ds, x, cfg, cache_root=tmp_path, progress=False)
    second = run_quantize(ds, x, cfg, cache_root=tmp_path, progress=False)
    assert not first.from_cache and second.from_cache and first.key == second.key
    np.testing.assert_array_equal(first.semantic_ids, second.semantic_ids)
    assert second.table.vocab_sizes == first.table.vocab_sizes and second.config == cfg
    assert second.health == first.health and second.history == first.history
    fused = SimpleNamespace(embeddings=x, key="fusion-key-1")
    third = run_quantize(ds, fused, cfg, cache_root=tmp_path, progress=False)
    assert third.key != first.key  # keyed on the FusionResult's cache key
    with pytest.raises(ValueError, match="200 embedding rows"):
        run_quantize(SimpleNamespace(name="x", num_items=5, fingerprint=lambda: "x"), x, cfg, cache_root=tmp_path)


def test_stage_2_takes_its_thread_helper_from_config_not_from_stage_1():
    import subprocess
    import sys

    code = ("import sys, qbert4rec_lib.semantic.quantize as q, qbert4rec_lib.config as c; "
            "assert q.torch_threads is c.torch_threads; assert 'qbert4rec_lib.semantic.fusion' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
