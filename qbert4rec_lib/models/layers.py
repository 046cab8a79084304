"""Transformer pieces every sequence model shares: which positions are padding, the attention masks built from that,
the BERT-style weight init, and the config check of a transformer's width and heads.

One home for each: SASRec-CE and BERT4Rec-ID (:mod:`~qbert4rec_lib.models.baselines`) pass an additive float mask to
``nn.TransformerEncoder`` (:func:`attention_mask`), Q-Bert4Rec (:mod:`~qbert4rec_lib.models.qbert`) a key-padding
mask (:func:`key_padding_mask`); both start from :func:`padding_positions`, and both guarantee that no query row has
every key hidden (which would give NaN attention). The two models keep their own mask form and their own module
order for the init, because either change would alter the numbers their trained weights and result records hold.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["padding_positions", "attention_mask", "key_padding_mask", "init_weights", "check_transformer_config"]


def padding_positions(tokens: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """bool ``[B, T]``: True where ``tokens`` is padding (id 0), except positions in ``hidden`` (items replaced by
    [MASK]: real items that attention must see)."""
    padding = tokens == 0
    return padding & ~hidden if hidden is not None else padding


def attention_mask(tokens: torch.Tensor, n_heads: int, causal: bool) -> torch.Tensor:
    """Additive float mask ``[B * n_heads, T, T]`` for ``nn.TransformerEncoder``.

    Key ``j`` is visible to query ``i`` when ``tokens[:, j]`` is not padding (and ``j <= i`` if
    ``causal``); the diagonal is always visible so that no row is fully masked.
    """
    batch, length = tokens.shape
    visible = (~padding_positions(tokens)).unsqueeze(1).expand(batch, length, length)  # [B, T(query), T(key)]
    if causal:
        visible = visible & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    visible = visible | torch.eye(length, dtype=torch.bool, device=tokens.device)
    mask = torch.zeros(batch, length, length, device=tokens.device)
    mask.masked_fill_(~visible, -math.inf)  # [B, T, T]
    return mask.repeat_interleave(n_heads, dim=0)  # [B * heads, T, T]


def key_padding_mask(tokens: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """bool ``[B, T]`` for ``src_key_padding_mask``: the padding keys (:func:`padding_positions`), with the last slot
    always visible: an all-padding row would otherwise give NaN attention (in a left-padded row with any item the
    last slot is an item anyway)."""
    padding = padding_positions(tokens, hidden)
    padding[:, -1] = False
    return padding


def init_weights(module: nn.Module, std: float) -> None:
    """BERT-style init of one module (RecBole's): normal(0, std) weights of Linear and Embedding layers, zero biases,
    a zero padding row, unit LayerNorm. Call it on each module, in the model's own order (the order of the RNG
    draws is part of the initial weights)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


def check_transformer_config(cfg, width: str, heads: str, ranges: dict[str, str]) -> None:
    """A transformer config's checks: every field's type and ``ranges`` (:func:`~qbert4rec_lib.config.check_config`),
    and the width divisible by the number of heads."""
    from ..config import ConfigError, check_config

    check_config(cfg, ranges=ranges)
    if getattr(cfg, width) % getattr(cfg, heads):
        raise ConfigError(f"{type(cfg).__name__}.{width} ({getattr(cfg, width)}) must be divisible by {heads} "
                          f"({getattr(cfg, heads)})")
