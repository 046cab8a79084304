"""Chunked (exact) and sampled (logQ-corrected) item losses (qbert4rec_lib.models.itemloss) in every model."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from qbert4rec_lib.models.baselines import BERT4RecConfig, BERT4RecID, SASRec, SASRecConfig
from qbert4rec_lib.cache import _key_view, stable_hash
from qbert4rec_lib.config import ConfigError
from qbert4rec_lib.models.masking import MaskConfig
from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig
from qbert4rec_lib.models.base import pad_left

N = 37


def ids(n: int = N) -> np.ndarray:
    return np.stack([np.arange(n) % 5, np.arange(n) // 5, np.zeros(n, dtype=np.int64)], axis=1)


def build(kind: str):
    torch.manual_seed(0)
    if kind == "sasrec":
        return SASRec(N, SASRecConfig(hidden_size=16, n_heads=1, inner_size=32, max_len=8))
    if kind == "bert4rec":
        return BERT4RecID(N, BERT4RecConfig(hidden_size=16, n_heads=2, inner_size=32, max_len=8))
    head = {"token_mlp": "token_mlp", "token_mlp_bias": "token_mlp", "level_sum": "level_sum"}[kind]
    model = QBert4Rec(ids(), config=QBertConfig(hidden=16, layers=1, heads=2, max_len=8, item_head=head,
                                                item_bias=kind == "token_mlp_bias"))
    model.masking = MaskConfig()
    return model


def config_of(model):
    return model.config if isinstance(model, QBert4Rec) else model.cfg


def set_config(model, **changes):
    if isinstance(model, QBert4Rec):
        model.config = replace(model.config, **changes)
    else:
        model.cfg = replace(model.cfg, **changes)


def batch(seed: int = 0, users: int = 12) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return pad_left([rng.integers(1, N + 1, size=int(rng.integers(2, 9))) for _ in range(users)], 8)


def loss_and_grads(model, x, seed: int = 3):
    model.zero_grad(set_to_none=True)
    out = model.loss(x, torch.Generator().manual_seed(seed))
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


KINDS = ["sasrec", "bert4rec", "token_mlp", "token_mlp_bias", "level_sum"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cold", [False, True])
def test_chunked_loss_and_gradients_equal_the_full_softmax(kind, cold):
    model = build(kind).eval()  # eval: no dropout, so both passes see the same network
    if cold:  # cold-start items are neither targets nor negatives; keep the batch's items known
        mask = torch.ones(N + 1, dtype=torch.bool)
        mask[[0, 30, 31, 36]] = False
        model.train_item_mask = mask
        x = batch().clamp(max=29)
    else:
        x = batch()
    full, full_grads = loss_and_grads(model, x)
    set_config(model, item_loss="chunked", loss_chunk=7)  # 37 items -> 6 chunks, the last one short
    chunked, chunked_grads = loss_and_grads(model, x)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)
    assert chunked_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_sampled_loss_with_every_item_sampled_is_the_full_softmax(kind):
    model = build(kind).eval()
    x = batch(1)
    # the mask draws come first from the same generator state in both runs; sampling draws after them
    full, full_grads = loss_and_grads(model, x)
    set_config(model, item_loss="sampled", loss_negatives=10_000, loss_sampler="uniform")
    sampled, sampled_grads = loss_and_grads(model, x)
    torch.testing.assert_close(sampled, full, atol=1e-5, rtol=0)
    for name in full_grads:
        torch.testing.assert_close(sampled_grads[name], full_grads[name], atol=1e-5, rtol=0, msg=name)


def test_sampled_loss_uses_fewer_candidates_and_is_reproducible():
    model = build("sasrec").eval()
    set_config(model, item_loss="sampled", loss_negatives=5)
    x = batch(2)
    a, _ = loss_and_grads(model, x, seed=1)
    b, _ = loss_and_grads(model, x, seed=1)
    c, _ = loss_and_grads(model, x, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    set_config(model, loss_sampler="popularity")
    with pytest.raises(ValueError, match="item_sampling_counts"):
        model.loss(x, torch.Generator().manual_seed(0))
    model.item_sampling_counts = torch.arange(N + 1)
    assert torch.isfinite(model.loss(x, torch.Generator().manual_seed(0)).loss)


def cyclic_sequences(users: int, seed: int) -> list[np.ndarray]:
    """Item k is always followed by item k + 1 (mod N): a next-item task a model can solve exactly."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(users):
        start, n = int(rng.integers(N)), int(rng.integers(4, 9))
        out.append((start + np.arange(n)) % N + 1)
    return out


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_sampled_training_still_learns(sampler):
    torch.manual_seed(0)
    model = SASRec(N, SASRecConfig(hidden_size=32, n_heads=1, inner_size=64, max_len=8, dropout=0.0, attn_dropout=0.0,
                                   item_loss="sampled", loss_negatives=6, loss_sampler=sampler))
    seqs = cyclic_sequences(300, 0)
    model.item_sampling_counts = torch.as_tensor(np.bincount(np.concatenate(seqs), minlength=N + 1))
    x = pad_left(seqs, 8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(150):
        rows = torch.randint(0, len(x), (64,), generator=gen)
        out = model.loss(x[rows], gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    test = cyclic_sequences(100, 1)
    with torch.no_grad():
        scores = model.score_all(pad_left([s[:-1] for s in test], 8))
    hits = (scores.argmax(dim=1).numpy() == np.array([s[-1] for s in test])).mean()
    assert hits > 0.8, hits  # chance is 1 / 37


def test_item_loss_fields_are_key_neutral_and_validated():
    for cfg in (SASRecConfig(), BERT4RecConfig(), QBertConfig()):
        view = _key_view(cfg)
        assert not {"item_loss", "loss_chunk", "loss_negatives", "loss_sampler"} & set(view)
        assert "item_loss" in _key_view(replace(cfg, item_loss="chunked"))
    assert stable_hash(SASRecConfig()) != stable_hash(SASRecConfig(item_loss="sampled"))
    with pytest.raises(ConfigError, match="item_loss"):
        SASRecConfig(item_loss="approx")
    with pytest.raises(ConfigError, match="loss_sampler"):
        QBertConfig(loss_sampler="zipf")
    with pytest.raises(ConfigError, match="loss_chunk"):
        BERT4RecConfig(loss_chunk=0)
