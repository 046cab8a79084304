"""Item-level cross-entropy without an ``[M, N]`` logit matrix: chunked (exact) or sampled (logQ-corrected).

Every model in the kit trains with a full softmax over the catalog's ``N`` items at ``M`` predicted positions:
one ``[M, N]`` logit matrix per step (plus its gradient). That is what the models still do by default
(``item_loss="full"``: the code path is unchanged, so are results and cache keys). For large catalogs two
alternatives, chosen by fields of the model configs (:class:`~qbert4rec_lib.models.baselines.SASRecConfig`,
:class:`~qbert4rec_lib.models.baselines.BERT4RecConfig`, :class:`~qbert4rec_lib.models.qbert.QBertConfig`)::

    item_loss = "full" | "chunked" | "sampled"
    loss_chunk = 8192          # chunked: items per chunk
    loss_negatives = 1024      # sampled: negatives per step (shared by all M positions)
    loss_sampler = "uniform" | "popularity"

* ``"chunked"``: the **exact** loss ``mean_m (logsumexp_i s(m, i) - s(m, t_m))``. The log-sum-exp is computed
  chunk by chunk of ``loss_chunk`` items, each chunk under activation checkpointing
  (:func:`torch.utils.checkpoint.checkpoint`): the forward keeps only ``[M]`` per chunk, the backward recomputes
  one ``[M, loss_chunk]`` block at a time. Peak memory ``O(M x loss_chunk)`` instead of ``O(M x N)``; about one
  extra forward of the output layer in time. Same value and gradients as the full softmax up to float rounding
  (a test: atol 1e-5).
* ``"sampled"``: sampled softmax (Jean et al. 2015; Bengio & Senecal 2008) with **logQ correction**. Per step
  ``K = loss_negatives`` negatives are drawn and shared by all positions (one ``[M, K]`` product). Each row's
  candidates are its target and the ``K`` negatives, every candidate's logit corrected by ``- log(K q_j)`` (``q_j``
  the probability of drawing item ``j``), negatives equal to the row's target ("accidental hits") removed.

  - ``loss_sampler="uniform"``: ``K`` distinct items, uniformly without replacement (inclusion probability
    ``K / N'``, ``N'`` = items allowed in training); the correction is then the same constant for every
    candidate. With ``K >= N'`` every item is a candidate and the loss is exactly the full softmax (a test).
  - ``loss_sampler="popularity"``: with replacement from ``q_j ∝ count_j + 1`` (training interaction counts; the
    model's ``item_sampling_counts``, which :func:`qbert4rec_lib.experiments.runs.train_model` sets from the split).
    Frequent items are drawn often and down-weighted by the correction.

  The sampled loss is a biased but consistent estimate of the full one; its gradient ignores most of the
  catalog each step, so it needs more steps than the full softmax for the same quality. Draws come from the
  loss generator ``fit`` passes to ``model.loss``, so runs are reproducible on CPU.

Cold-start items (``SequentialRecommender.train_item_mask``) are neither targets nor negatives in any mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["ItemLossFields", "ITEM_LOSSES", "LOSS_SAMPLERS", "check_item_loss_fields", "item_cross_entropy"]


@dataclass(frozen=True)
class ItemLossFields:
    """The item-level loss fields every sequence-model config carries (SASRecConfig, BERT4RecConfig, QBertConfig
    inherit them): ``"full"`` softmax (the default), ``"chunked"`` (exact, never ``[M, N]`` at once) or ``"sampled"``
    (logQ-corrected). Key-neutral at their defaults, so configs that leave them alone keep their cache keys."""

    # the item-level loss (qbert4rec_lib.models.itemloss): "full" softmax (today's), "chunked" (exact,
    # never [M, N] at once) or "sampled" (logQ-corrected); key-neutral at their defaults (cache keys unchanged)
    item_loss: str = field(default="full", metadata={"key_neutral": "full"})
    loss_chunk: int = field(default=8192, metadata={"key_neutral": 8192})  # chunked: items per chunk
    loss_negatives: int = field(default=1024, metadata={"key_neutral": 1024})  # sampled: negatives per step
    loss_sampler: str = field(default="uniform", metadata={"key_neutral": "uniform"})  # sampled: uniform | popularity


ITEM_LOSSES = ("full", "chunked", "sampled")
LOSS_SAMPLERS = ("uniform", "popularity")


def check_item_loss_fields(cfg) -> None:
    """Validate the four item-loss fields of a model config (raises ``ConfigError`` naming the field)."""
    from ..config import ConfigError

    name = type(cfg).__name__
    if cfg.item_loss not in ITEM_LOSSES:
        raise ConfigError(f"{name}.item_loss must be one of {ITEM_LOSSES}, got {cfg.item_loss!r}")
    if cfg.loss_sampler not in LOSS_SAMPLERS:
        raise ConfigError(f"{name}.loss_sampler must be one of {LOSS_SAMPLERS}, got {cfg.loss_sampler!r}")
    for field in ("loss_chunk", "loss_negatives"):
        if getattr(cfg, field) < 1:
            raise ConfigError(f"{name}.{field} must be >= 1, got {getattr(cfg, field)}")


def item_cross_entropy(
    logits_fn: Callable[[torch.Tensor | slice], torch.Tensor],
    target_logits_fn: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    num_items: int,
    cfg,
    *,
    item_mask: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (0-based item indices ``[M]``) over the ``num_items`` items.

    ``logits_fn(index)``: logits ``[M, n]`` of the items ``index`` (a 0-based ``slice`` or int tensor ``[n]``);
    ``target_logits_fn(targets)``: each row's logit of its own target ``[M]``. ``cfg``: a model config with the
    item-loss fields; ``item_mask``: bool ``[N + 1]`` (the model's ``train_item_mask``) or None; ``counts``:
    ``[N + 1]`` training counts for the popularity sampler.
    """
    mode = cfg.item_loss
    if mode == "full":  # reference path (the models keep their own inline F.cross_entropy for this)
        logits = logits_fn(slice(0, num_items))
        if item_mask is not None:
            logits = logits.masked_fill(~item_mask[1:].to(logits.device), -math.inf)
        return F.cross_entropy(logits, targets)
    target_logits = target_logits_fn(targets)  # [M]
    if mode == "chunked":
        return _chunked_lse(logits_fn, num_items, cfg.loss_chunk, item_mask, target_logits).sub(target_logits).mean()
    if mode == "sampled":
        return _sampled(logits_fn, target_logits, targets, num_items, cfg, item_mask, counts, generator)
    raise ValueError(f"unknown item_loss {mode!r}; expected one of {ITEM_LOSSES}")


def _chunked_lse(logits_fn, num_items: int, chunk: int, item_mask, like: torch.Tensor) -> torch.Tensor:
    """``[M]`` log-sum-exp over all items, one checkpointed chunk at a time."""

    def block(lo_hi: torch.Tensor) -> torch.Tensor:
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        logits = logits_fn(slice(lo, hi))  # [M, hi - lo]
        if item_mask is not None:
            logits = logits.masked_fill(~item_mask[1 + lo: 1 + hi].to(logits.device), -math.inf)
        return torch.logsumexp(logits, dim=1)  # [M]

    parts = []
    for lo in range(0, num_items, chunk):
        bounds = torch.tensor([lo, min(num_items, lo + chunk)])
        if torch.is_grad_enabled():
            parts.append(checkpoint(block, bounds, use_reentrant=False))
        else:
            parts.append(block(bounds))
    return torch.logsumexp(torch.stack(parts), dim=0)  # [M]


def _sampled(logits_fn, target_logits, targets, num_items: int, cfg, item_mask, counts, generator) -> torch.Tensor:
    device = target_logits.device
    allowed = (item_mask[1:].to(device) if item_mask is not None
               else torch.ones(num_items, dtype=torch.bool, device=device))  # [N]
    K = cfg.loss_negatives
    if cfg.loss_sampler == "uniform":
        pool = torch.nonzero(allowed).squeeze(1)  # [N'] the items that may be negatives
        K = min(K, len(pool))
        perm = torch.randperm(len(pool), generator=generator, device=generator.device if generator else "cpu")
        negatives = pool[perm[:K].to(device)]  # [K] distinct
        log_expected = torch.full((K,), math.log(K / len(pool)), device=device)  # log(K q_j), q_j = 1 / N'
        log_expected_target = log_expected[:1].expand_as(target_logits)
    else:
        if counts is None:
            raise ValueError("item_loss='sampled' with loss_sampler='popularity' needs the model's "
                             "item_sampling_counts (training counts [N + 1]); train_model sets them from the split")
        weights = (counts[1:].to(device=device, dtype=torch.float) + 1.0) * allowed  # [N]
        q = weights / weights.sum()
        negatives = torch.multinomial(q.to(generator.device if generator else "cpu"), K, replacement=True,
                                      generator=generator).to(device)  # [K]
        log_q = torch.log(q * K)  # [N] log expected count
        log_expected, log_expected_target = log_q[negatives], log_q[targets]
    neg_logits = logits_fn(negatives) - log_expected  # [M, K]
    neg_logits = neg_logits.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -math.inf)  # accidental hits
    logits = torch.cat([(target_logits - log_expected_target).unsqueeze(1), neg_logits], dim=1)  # [M, 1 + K]
    return F.cross_entropy(logits, torch.zeros_like(targets))
