"""Multi-mask strategies: padding never masked, >= 1 mask per row, shapes of each strategy, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qbert4rec_lib.models.masking import (
    FINETUNE_MASKS,
    STRATEGIES,
    MaskConfig,
    apply_mixture,
    cloze_mask,
    multi_region_mask,
    only,
    real_items,
    span_mask,
    tail_mask,
)
from qbert4rec_lib.models.base import pad_left

T = 20


def random_batch(seed: int, batch: int = 64, max_len: int = T) -> torch.Tensor:
    """Left-padded batch with lengths 0..max_len (including empty rows and full rows)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=batch)
    lengths[:3] = [0, 1, max_len]
    return pad_left([rng.integers(1, 500, size=n) for n in lengths], max_len)


def strategy_fns(cfg: MaskConfig = MaskConfig()):
    return {
        "cloze": lambda s, g: cloze_mask(s, g, ratio=cfg.cloze_ratio, max_fraction=cfg.max_mask_fraction),
        "span": lambda s, g: span_mask(s, g, p=cfg.span_p, max_span=cfg.max_span, max_fraction=cfg.max_mask_fraction),
        "tail": lambda s, g: tail_mask(s, g, max_tail=cfg.max_tail, max_fraction=cfg.max_mask_fraction),
        "multi_region": lambda s, g: multi_region_mask(s, g, min_regions=cfg.min_regions, max_regions=cfg.max_regions,
                                                       max_region_len=cfg.max_region_len,
                                                       max_fraction=cfg.max_mask_fraction),
        "mixture": lambda s, g: apply_mixture(s, cfg, g).mask,
        "finetune": lambda s, g: apply_mixture(s, FINETUNE_MASKS, g).mask,
    }


def runs(row: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as (start, length)."""
    out, t = [], 0
    while t < len(row):
        if row[t]:
            s = t
            while t < len(row) and row[t]:
                t += 1
            out.append((s, t - s))
        else:
            t += 1
    return out


@pytest.mark.parametrize("name", ["cloze", "span", "tail", "multi_region", "mixture", "finetune"])
def test_never_masks_padding_and_masks_at_least_one(name):
    fn = strategy_fns()[name]
    g = torch.Generator().manual_seed(1)
    for seed in range(40):  # property-style: many random batches
        seqs = random_batch(seed)
        mask = fn(seqs, g)
        assert mask.dtype == torch.bool and mask.shape == seqs.shape
        assert not (mask & (seqs == 0)).any(), f"{name} masked padding (batch {seed})"
        n = (seqs > 0).sum(1)
        per_row = mask.sum(1)
        assert (per_row[n > 0] >= 1).all(), f"{name} left a non-empty row unmasked"
        assert (per_row[n == 0] == 0).all()


@pytest.mark.parametrize("name", ["cloze", "span", "tail", "multi_region"])
def test_budget_caps_masked_fraction(name):
    cfg = MaskConfig()
    fn = strategy_fns(cfg)[name]
    g = torch.Generator().manual_seed(2)
    for seed in range(20):
        seqs = random_batch(seed)
        n = (seqs > 0).sum(1)
        cap = torch.clamp(torch.floor(n * cfg.max_mask_fraction), min=1)
        per_row = fn(seqs, g).sum(1)
        assert (per_row[n > 0] <= cap[n > 0]).all()


def test_span_is_one_contiguous_run_of_bounded_length():
    g = torch.Generator().manual_seed(3)
    lengths = []
    for seed in range(20):
        mask = span_mask(random_batch(seed), g, p=0.2, max_span=5, max_fraction=1.0).numpy()
        for row in mask:
            if row.any():
                r = runs(row)
                assert len(r) == 1
                lengths.append(r[0][1])
    lengths = np.array(lengths)
    assert lengths.min() >= 1 and lengths.max() == 5
    # Geometric(0.2) clipped to [1, 5]: P(length = 1) = 0.2 (on rows long enough), P(5) = 0.8^4 ≈ 0.41
    long_rows = span_mask(pad_left([np.arange(1, 21)] * 4000, 20), g, p=0.2, max_span=5, max_fraction=1.0).sum(1)
    assert abs(float((long_rows == 1).float().mean()) - 0.2) < 0.03
    assert abs(float((long_rows == 5).float().mean()) - 0.8 ** 4) < 0.03


def test_tail_is_a_suffix_of_one_to_max_tail_items():
    g = torch.Generator().manual_seed(4)
    seqs = pad_left([np.arange(1, 16)] * 3000, T)
    mask = tail_mask(seqs, g, max_tail=3, max_fraction=1.0)
    k = mask.sum(1)
    assert set(k.tolist()) == {1, 2, 3}
    for row, kk in zip(mask.numpy(), k.tolist()):
        assert row[-kk:].all() and not row[:-kk].any()
    assert abs(float((k == 1).float().mean()) - 1 / 3) < 0.04


def test_multi_region_disjoint_separated_and_counted():
    g = torch.Generator().manual_seed(5)
    seqs = pad_left([np.arange(1, 21)] * 500, 20)  # long rows: room for 3 separated regions
    mask = multi_region_mask(seqs, g, min_regions=2, max_regions=3, max_region_len=3, max_fraction=1.0).numpy()
    counts = []
    for row in mask:
        r = runs(row)  # maximal runs: separated regions stay separate runs
        counts.append(len(r))
        assert all(1 <= length <= 3 for _, length in r)
    assert set(counts) == {2, 3}
    # spread: with 2 regions, the first lies in the first half of the row and the second in the second half
    two = [runs(row) for row in mask if len(runs(row)) == 2]
    assert all(r[0][0] + r[0][1] <= 10 and r[1][0] >= 10 for r in two)


def test_multi_region_on_short_rows_stays_in_budget():
    g = torch.Generator().manual_seed(6)
    for n in range(1, 9):
        seqs = pad_left([np.arange(1, n + 1)] * 200, 10)
        mask = multi_region_mask(seqs, g, max_fraction=0.4)
        assert (mask.sum(1) >= 1).all() and (mask.sum(1) <= max(1, int(0.4 * n))).all()


def test_cloze_fraction_near_ratio_on_long_rows():
    g = torch.Generator().manual_seed(7)
    seqs = pad_left([np.arange(1, 51)] * 400, 50)
    frac = cloze_mask(seqs, g, ratio=0.2, max_fraction=1.0).float().mean().item()
    assert 0.18 < frac < 0.22


def test_mixture_picks_strategies_by_weight_and_fraction_in_range():
    g = torch.Generator().manual_seed(8)
    rng = np.random.default_rng(0)
    # a Beauty-like length distribution: mostly 3–10 training items, a long tail up to 50
    lengths = np.clip(rng.geometric(0.15, size=4000) + 2, 3, 50)
    seqs = pad_left([rng.integers(1, 100, size=n) for n in lengths], 50)
    out = apply_mixture(seqs, MaskConfig(), g)
    shares = np.bincount(out.strategy.numpy(), minlength=4) / len(lengths)
    assert np.allclose(shares, 0.25, atol=0.03)
    frac = (out.mask.sum(1).float() / torch.as_tensor(lengths)).mean().item()
    assert 0.15 <= frac <= 0.40, frac  # documented: ~30% on such short rows
    weighted = apply_mixture(seqs, MaskConfig(cloze_weight=3, span_weight=0, tail_weight=1, multi_region_weight=0), g)
    shares = np.bincount(weighted.strategy.numpy(), minlength=4) / len(lengths)
    assert shares[1] == 0 and shares[3] == 0 and abs(shares[0] - 0.75) < 0.03


def test_only_strategy_matches_the_strategy_function():
    seqs = random_batch(9)
    for s in STRATEGIES:
        out = apply_mixture(seqs, only(s), torch.Generator().manual_seed(0))
        assert (out.strategy == STRATEGIES.index(s)).all()


def test_always_mask_last():
    g = torch.Generator().manual_seed(10)
    seqs = random_batch(11)
    mask = apply_mixture(seqs, MaskConfig(always_mask_last_prob=1.0), g).mask
    assert mask[seqs[:, -1] > 0, -1].all()
    half = apply_mixture(pad_left([np.arange(1, 41)] * 2000, 40), only("multi_region", always_mask_last_prob=0.5), g)
    assert 0.45 < half.mask[:, -1].float().mean().item() < 0.6


@pytest.mark.parametrize("name", ["cloze", "span", "tail", "multi_region", "mixture"])
def test_deterministic_given_generator(name):
    fn = strategy_fns()[name]
    seqs = random_batch(12)
    a = fn(seqs, torch.Generator().manual_seed(42))
    b = fn(seqs, torch.Generator().manual_seed(42))
    c = fn(seqs, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_rejects_right_padding_and_bad_config():
    with pytest.raises(ValueError, match="left-padded"):
        real_items(torch.tensor([[1, 2, 0, 0]]))
    with pytest.raises(ValueError, match="weights"):
        MaskConfig(cloze_weight=0, span_weight=0, tail_weight=0, multi_region_weight=0)
    with pytest.raises(ValueError, match="cloze_ratio"):
        MaskConfig(cloze_ratio=1.5)
    with pytest.raises(ValueError, match="unknown mask strategy"):
        only("random")


def test_crop_prefixes_keeps_a_left_padded_prefix_of_every_row():
    from qbert4rec_lib.models.masking import crop_prefixes, real_items

    g = torch.Generator().manual_seed(0)
    seqs = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 0, 0, 3], [1, 2, 3, 4, 5, 6, 7, 8]])
    seen_lengths = set()
    for _ in range(200):
        out = crop_prefixes(seqs, 1.0, g)
        _, n = real_items(out)  # raises unless left-padded
        for row, m in zip(range(3), n.tolist()):
            original = seqs[row][seqs[row] > 0].tolist()
            kept = out[row][out[row] > 0].tolist()
            assert kept == original[:m]  # a prefix, order kept
            assert m >= min(2, len(original))
        seen_lengths.add(int(n[2]))
    assert seen_lengths == set(range(2, 9))  # every cut point of the full row is drawn
    assert torch.equal(crop_prefixes(seqs, 0.0, g), seqs)


def test_prefix_crop_draws_no_randomness_at_zero():
    """A config at prefix_crop_prob 0 masks exactly as before the field existed (the key leaves it out)."""
    from qbert4rec_lib.cache import stable_hash
    from qbert4rec_lib.models.masking import MaskConfig

    assert stable_hash(MaskConfig()) == stable_hash(MaskConfig(prefix_crop_prob=0.0))
    assert stable_hash(MaskConfig()) != stable_hash(MaskConfig(prefix_crop_prob=0.5))
    with pytest.raises(ValueError, match="prefix_crop_prob"):
        MaskConfig(prefix_crop_prob=1.5)
