"""Stage 3a: the multi-mask strategies for BERT-style pretraining and fine-tuning.

Q-Bert4Rec (arXiv 2512.02474) pretrains its bidirectional encoder with "diverse masking
strategies—span, tail, and multi-region" and then fine-tunes it. The paper names the
strategies and nothing else, so **every number below is this kit's choice** (a config knob in
:class:`MaskConfig`), following SpanBERT for spans and BERT4Rec for random Cloze masking.

Each strategy is a small pure function ``(sequences, generator, ...) -> mask``:

* ``sequences`` is a *left-padded* ``[B, T]`` int64 batch (``0`` = padding at the left, the
  real items are the row's suffix, as :func:`qbert4rec_lib.models.base.pad_left` builds it);
* the result is a bool ``[B, T]`` mask, ``True`` where the item is replaced by ``[MASK]``;
* a mask **never** covers padding and covers **at least one** real item of every non-empty row;
* all randomness comes from the ``torch.Generator`` passed in (same generator state, same mask).

The strategies (``n`` = the row's number of real items):

=================  =========================================================================
``cloze``          BERT4Rec: every real item masked independently with ``cloze_ratio`` (0.2).
``span``           one contiguous run at a uniform start; length ~ Geometric(``span_p`` = 0.2)
                   clipped to ``[1, max_span = 5]`` (SpanBERT's distribution, shorter cap).
``tail``           the last ``k`` items, ``k`` uniform in ``[1, max_tail = 3]``: the
                   pretraining twin of next-item prediction, where ``[MASK]`` sits at the end.
``multi_region``   2–3 disjoint short spans (length uniform in ``[1, max_region_len = 3]``),
                   one per equal segment of the row so they are spread over it, with at least
                   one visible item between two regions.
=================  =========================================================================

Masked fraction. No strategy masks more than ``max_mask_fraction`` (0.4) of a row's real items
(rounded down, but never fewer than one item), so some context always stays visible. On long
rows the fractions are roughly cloze 20%, span ≈ 3.4 items, tail 2 items, multi-region ≈ 5
items; on the short rows that dominate Amazon data (3–8 training items) the one-item minimum
pushes every strategy to ~25–40% (rows of 1–4 items get exactly one mask from every strategy).
Measured over the generated catalog's training sequences: cloze 24%, span 29%, tail 26%,
multi-region 30%, mixture 27% (notebook 05 draws the distributions). The paper's target, if
any, is unknown; the usual BERT-style range is 15–30%.

:func:`apply_mixture` picks **one strategy per sequence** with probabilities proportional to the
``*_weight`` fields (default: equal) and returns the mask and the strategy chosen for each row.
``always_mask_last_prob`` additionally masks a row's last item with that probability; fine-tuning
(:data:`FINETUNE_MASKS`) uses it to emphasise next-item prediction (it may exceed the cap by one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = [
    "STRATEGIES",
    "MaskConfig",
    "MixtureMask",
    "PRETRAIN_MASKS",
    "FINETUNE_MASKS",
    "NEXT_ITEM_FINETUNE",
    "only",
    "real_items",
    "cloze_mask",
    "span_mask",
    "tail_mask",
    "multi_region_mask",
    "apply_mixture",
    "crop_prefixes",
]

STRATEGIES = ("cloze", "span", "tail", "multi_region")  # order = the codes in MixtureMask.strategy
OBJECTIVES = ("masked", "next_item")  # MaskConfig.objective


@dataclass(frozen=True)
class MaskConfig:
    """How sequences are masked. The paper gives only the strategy names; all values are ours."""

    cloze_weight: float = 1.0  # relative probability of picking random Cloze masking for a sequence
    span_weight: float = 1.0  # ... of one contiguous span
    tail_weight: float = 1.0  # ... of masking the last k items
    multi_region_weight: float = 1.0  # ... of several disjoint short spans
    cloze_ratio: float = 0.2  # per-item masking probability of Cloze (BERT4Rec uses 0.2 on Beauty)
    span_p: float = 0.2  # span length ~ Geometric(span_p) on {1, 2, ...} (SpanBERT: 0.2)
    max_span: int = 5  # span length clipped to [1, max_span]
    max_tail: int = 3  # tail length k uniform in [1, max_tail]
    min_regions: int = 2  # multi-region: number of regions uniform in [min_regions, max_regions] ...
    max_regions: int = 3  # ... (fewer when the row is too short to hold them apart)
    max_region_len: int = 3  # each region's length uniform in [1, max_region_len]
    max_mask_fraction: float = 0.4  # never mask more than this share of a row's items (min 1 item)
    always_mask_last_prob: float = 0.0  # also mask the row's last item with this probability (fine-tuning)
    # before masking, cut a row after a uniformly drawn item (>= 2 items kept) with this probability: with the tail /
    # last-item masks the targets then cover every position (sliding windows); key-neutral: added later
    prefix_crop_prob: float = field(default=0.0, metadata={"key_neutral": 0.0})
    # "masked": the masks above (bidirectional attention, targets at [MASK] positions); "next_item": no masks --
    # causal attention and the next item as the target at every position (SASRec's objective on the same encoder;
    # the model then also scores causally, from its last item). Key-neutral: added later.
    objective: str = field(default="masked", metadata={"key_neutral": "masked"})

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={name: "[1, inf)" for name in (
            "max_span", "max_tail", "min_regions", "max_regions", "max_region_len")})  # types; ranges below
        weights = self.weights()
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"MaskConfig: strategy weights must be >= 0 with a positive sum, got {dict(zip(STRATEGIES, weights))}")
        for name in ("cloze_ratio", "span_p", "max_mask_fraction", "always_mask_last_prob", "prefix_crop_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MaskConfig.{name} must lie in [0, 1], got {value}")
        if self.span_p <= 0:
            raise ValueError("MaskConfig.span_p must be > 0")
        for name in ("max_span", "max_tail", "min_regions", "max_regions", "max_region_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"MaskConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"MaskConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.min_regions > self.max_regions:
            raise ValueError(f"MaskConfig: min_regions {self.min_regions} > max_regions {self.max_regions}")

    def weights(self) -> tuple[float, float, float, float]:
        """Strategy weights in :data:`STRATEGIES` order."""
        return (self.cloze_weight, self.span_weight, self.tail_weight, self.multi_region_weight)


def only(strategy: str, base: MaskConfig | None = None, **changes) -> MaskConfig:
    """A config that uses one strategy alone (the "each mask strategy alone" ablation)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; known: {STRATEGIES}")
    import dataclasses

    zero = {f"{s}_weight": float(s == strategy) for s in STRATEGIES}
    return dataclasses.replace(base or MaskConfig(), **zero, **changes)


PRETRAIN_MASKS = MaskConfig()  # the equal mixture of the four strategies
# Masked fine-tuning (the paper's "multi-mask fine-tuning"): next-item emphasis. Keep Cloze + tail (no long spans)
# and always mask the last item.
FINETUNE_MASKS = MaskConfig(span_weight=0.0, multi_region_weight=0.0, always_mask_last_prob=1.0)
# Next-item fine-tuning (the kit's default, ExperimentConfig.finetune_masks): causal attention, the next item as the
# target at every position. The mask fields are unused under this objective; they are FINETUNE_MASKS' so that the
# config (and every cache key and result record made with it) stays the one the study measured.
NEXT_ITEM_FINETUNE = MaskConfig(span_weight=0.0, multi_region_weight=0.0, always_mask_last_prob=1.0,
                                objective="next_item")


class MixtureMask(NamedTuple):
    mask: torch.Tensor  # bool [B, T], True = replaced by [MASK]
    strategy: torch.Tensor  # int64 [B], index into STRATEGIES (the strategy drawn for each row)


# ---- helpers --------------------------------------------------------------------------------
def real_items(sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(is_real [B, T] bool, n [B] int64)`` for a left-padded batch; raises if not left-padded."""
    if sequences.dim() != 2:
        raise ValueError(f"sequences must be a [B, T] batch, got shape {tuple(sequences.shape)}")
    is_real = sequences > 0  # [B, T]
    n = is_real.sum(dim=1)  # [B]
    T = sequences.shape[1]
    suffix = torch.arange(T, device=sequences.device).unsqueeze(0) >= (T - n).unsqueeze(1)  # [B, T]
    if not torch.equal(suffix, is_real):
        bad = int((suffix != is_real).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"sequences must be left-padded (0s only at the left); row {bad} is not: "
                         f"{sequences[bad].tolist()}")
    return is_real, n


def _budget(n: torch.Tensor, max_fraction: float) -> torch.Tensor:
    """Most items a strategy may mask per row: floor(max_fraction * n), at least 1 (0 for empty rows)."""
    b = torch.floor(n.to(torch.float64) * max_fraction).to(torch.int64)
    return torch.where(n > 0, b.clamp(min=1), torch.zeros_like(n))  # [B]


def _uniform_int(low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in ``[low, high]`` (inclusive, elementwise; requires high >= low)."""
    u = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float64)
    return low + torch.floor(u * (high - low + 1).to(torch.float64)).to(torch.int64).clamp(max=(high - low).clamp(min=0))


def _interval(T: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Bool [B, T] with positions ``start <= t < start + length`` set."""
    t = torch.arange(T, device=start.device).unsqueeze(0)  # [1, T]
    return (t >= start.unsqueeze(1)) & (t < (start + length).unsqueeze(1))


def _keep_at_most(mask: torch.Tensor, limit: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Keep a random subset of at most ``limit[b]`` masked positions per row."""
    keys = torch.rand(mask.shape, generator=generator, device=mask.device)  # [B, T]
    keys = torch.where(mask, keys, torch.full_like(keys, -1.0))
    rank = keys.argsort(dim=1, descending=True).argsort(dim=1)  # [B, T] rank of each key in its row
    return mask & (rank < limit.unsqueeze(1))


# ---- the four strategies --------------------------------------------------------------------
def cloze_mask(sequences: torch.Tensor, generator: torch.Generator | None = None, *, ratio: float = 0.2,
               max_fraction: float = 0.4) -> torch.Tensor:
    """BERT4Rec's random masking: each real item independently with probability ``ratio``."""
    is_real, n = real_items(sequences)
    mask = (torch.rand(sequences.shape, generator=generator, device=sequences.device) < ratio) & is_real  # [B, T]
    # a row that drew no mask gets one uniformly chosen real item
    pick = torch.rand(sequences.shape, generator=generator, device=sequences.device).masked_fill(~is_real, -1.0)
    forced = torch.zeros_like(mask).scatter_(1, pick.argmax(dim=1, keepdim=True), True) & is_real
    mask = torch.where((mask.sum(dim=1, keepdim=True) == 0), forced, mask)
    return _keep_at_most(mask, _budget(n, max_fraction), generator)


def span_mask(sequences: torch.Tensor, generator: torch.Generator | None = None, *, p: float = 0.2,
              max_span: int = 5, max_fraction: float = 0.4) -> torch.Tensor:
    """One contiguous run of real items; length ~ Geometric(p) clipped to [1, max_span], uniform start."""
    _, n = real_items(sequences)
    T = sequences.shape[1]
    u = torch.rand(n.shape, generator=generator, device=n.device, dtype=torch.float64).clamp(min=1e-12)
    if p < 1:  # inverse-CDF draw of Geometric(p) on {1, 2, ...}
        geometric = torch.floor(torch.log(u) / math.log1p(-p)).to(torch.int64) + 1  # [B]
    else:
        geometric = torch.ones_like(n)
    length = torch.minimum(geometric.clamp(1, max_span), _budget(n, max_fraction))  # [B] (0 for empty rows)
    start = _uniform_int(T - n, T - length, generator)  # [B] first masked position
    return _interval(T, start, length)


def tail_mask(sequences: torch.Tensor, generator: torch.Generator | None = None, *, max_tail: int = 3,
              max_fraction: float = 0.4) -> torch.Tensor:
    """The last ``k`` real items, ``k`` uniform in [1, max_tail] (then capped by the row budget)."""
    _, n = real_items(sequences)
    T = sequences.shape[1]
    k = _uniform_int(torch.ones_like(n), torch.full_like(n, max_tail), generator)
    k = torch.minimum(k, _budget(n, max_fraction))  # [B]
    return _interval(T, T - k, k)


def multi_region_mask(sequences: torch.Tensor, generator: torch.Generator | None = None, *, min_regions: int = 2,
                      max_regions: int = 3, max_region_len: int = 3, max_fraction: float = 0.4) -> torch.Tensor:
    """2–3 disjoint short spans spread over the row (one per equal segment, a visible gap between).

    A row of ``n`` items holds at most ``n // 2`` separated regions (one region when ``n < 4``),
    and each region is shortened so that the total stays within the row's budget.
    """
    _, n = real_items(sequences)
    T = sequences.shape[1]
    budget = _budget(n, max_fraction)
    wanted = _uniform_int(torch.full_like(n, min_regions), torch.full_like(n, max_regions), generator)
    regions = torch.minimum(torch.minimum(wanted, (n // 2).clamp(min=1)), budget.clamp(min=1))  # [B]
    per_region = (budget // regions).clamp(min=1)  # [B] length cap per region
    mask = torch.zeros(sequences.shape, dtype=torch.bool, device=sequences.device)
    first = T - n  # [B] position of the first real item
    for j in range(max_regions):
        active = (j < regions) & (n > 0)  # [B]
        seg_start = first + (j * n) // regions  # [B]
        seg_end = first + ((j + 1) * n) // regions  # [B]
        room = seg_end - seg_start - (j < regions - 1).to(torch.int64)  # leave a gap before the next segment
        room = room.clamp(min=1)
        length = _uniform_int(torch.ones_like(n), torch.full_like(n, max_region_len), generator)
        length = torch.minimum(torch.minimum(length, room), per_region)
        start = _uniform_int(seg_start, seg_start + room - length, generator)
        mask |= _interval(T, start, length) & active.unsqueeze(1)
    return mask


# ---- prefix crops (sliding windows) ----------------------------------------------------------
def crop_prefixes(sequences: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each row, with probability ``prob``, keeps only its first ``e`` real items, ``e`` uniform in ``[2, n]``
    (rows of fewer than 2 items are kept whole); the result is left-padded again.

    With the tail or last-item masks this turns the row's last-item question into "the next item after any
    prefix": over the epochs every position of every training sequence becomes a target, as in SASRec's
    next-item loss and RecBole's sliding-window augmentation, without copying the data.
    """
    is_real, n = real_items(sequences)
    B, T = sequences.shape
    if prob <= 0 or B == 0:
        return sequences
    crop = torch.rand(B, generator=generator, device=sequences.device) < prob  # [B]
    keep = _uniform_int(n.clamp(max=2), n, generator)  # [B] items kept, in [min(2, n), n]
    shift = torch.where(crop, n - keep, torch.zeros_like(n))  # [B] items dropped from the right
    src = torch.arange(T, device=sequences.device).unsqueeze(0) - shift.unsqueeze(1)  # [B, T] source column
    out = sequences.gather(1, src.clamp(min=0))
    return out.masked_fill(src < 0, 0)


# ---- the mixture ----------------------------------------------------------------------------
def apply_mixture(sequences: torch.Tensor, config: MaskConfig | None = None,
                  generator: torch.Generator | None = None) -> MixtureMask:
    """Draw one strategy per row (prob. proportional to the weights) and return its mask.

    All four masks are computed for the whole batch (cheap, vectorised) and each row keeps the
    one it drew, so the random stream consumed does not depend on which strategies were drawn.
    """
    cfg = config or MaskConfig()
    is_real, n = real_items(sequences)
    B, T = sequences.shape
    if B == 0:
        return MixtureMask(mask=torch.zeros_like(sequences, dtype=torch.bool), strategy=torch.zeros(0, dtype=torch.int64))
    masks = torch.stack([
        cloze_mask(sequences, generator, ratio=cfg.cloze_ratio, max_fraction=cfg.max_mask_fraction),
        span_mask(sequences, generator, p=cfg.span_p, max_span=cfg.max_span, max_fraction=cfg.max_mask_fraction),
        tail_mask(sequences, generator, max_tail=cfg.max_tail, max_fraction=cfg.max_mask_fraction),
        multi_region_mask(sequences, generator, min_regions=cfg.min_regions, max_regions=cfg.max_regions,
                          max_region_len=cfg.max_region_len, max_fraction=cfg.max_mask_fraction),
    ])  # [S, B, T]
    weights = torch.tensor(cfg.weights(), dtype=torch.float64, device=sequences.device)
    strategy = torch.multinomial(weights.expand(B, -1), 1, replacement=True, generator=generator).squeeze(1)  # [B]
    mask = masks[strategy, torch.arange(B, device=sequences.device)]  # [B, T]
    if cfg.always_mask_last_prob > 0:
        hit = torch.rand(B, generator=generator, device=sequences.device) < cfg.always_mask_last_prob  # [B]
        mask[:, -1] |= hit & (n > 0)
    return MixtureMask(mask=mask & is_real, strategy=strategy)
