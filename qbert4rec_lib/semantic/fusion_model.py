"""The stage-1 model of Q-Bert4Rec: each item's ID query attends over its modality tokens, with gated depth.

:class:`FusionModel` maps items (rows) and their modality features to fused vectors ``h_i``: the item's learnable
ID vector ``q_i`` (the query) attends over its modality tokens (keys and values). Its config
(:class:`~qbert4rec_lib.semantic.fusion.FusionConfig`), loss, training and cache are in
:mod:`qbert4rec_lib.semantic.fusion`.

1. **Similarity-based alignment.** Each modality ``m`` is projected into the shared width
   (``Linear -> LayerNorm``) and L2-normalised. With several vectors ``x_{i,j}`` per modality
   (``J > 1``, e.g. text fields encoded separately) the aligned token is
   ``x̂_i^m = sum_j softmax_j(cos(q_i, x_{i,j}) / tau) x_{i,j}``; with one vector the weight is 1.
2. **Dynamic cross-modal transformer.** ``h^(0) = q_i``. Each :class:`DynamicCrossModalBlock`
   is pre-LN cross-attention from ``h`` to the context tokens, then a feed-forward layer, each
   with a residual. The context is the item's own ID token plus one aligned token per modality
   (with a learned modality-type embedding). Missing modalities are hidden by a key-padding mask.
   The ID token keeps the attention defined for an item that has no modality at all.
3. **Gated depth.** After block ``l`` a gate ``g^(l) = sigmoid(MLP(h^(l)))`` says whether the item
   continues. In training the gate is soft: with the continue-probability
   ``c_l = prod_{k<l} g^(k)`` (``c_1 = 1``) the update is a gated residual
   ``h^(l) = h^(l-1) + c_l * (block_l(h^(l-1)) - h^(l-1))``, and ``sum_l c_l`` is the item's
   expected depth. At inference the exit is hard: the item stops after block ``l`` as soon as
   ``g^(l) < exit_threshold``, and exited items skip the later blocks entirely. Each item's exit
   depth is reported. ``gate="off"`` runs all ``max_depth`` blocks (the fixed-depth ablation).
4. **ID dropout for new items** (``cfg.id_dropout > 0``, off by default; not in the paper). A new item has no trained
   ``q_i``. As in DropoutNet (Volkovs et al., NeurIPS 2017), training replaces the query of a random share of the
   items by one shared learnable *new-item query* ``q_new`` (and hides their structural modality, which a new item
   lacks), so the blocks learn to fuse content alone into the same space; a new item is then encoded with ``q_new``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .fusion import FusionConfig

__all__ = ["FusionModel", "FusionOutput", "DynamicCrossModalBlock"]


class FusionOutput(NamedTuple):
    fused: torch.Tensor  # [B, width] final hidden state h_i (after the final LayerNorm)
    projected: torch.Tensor  # [B, width] L2-normalised projection of h_i used by the contrastive loss
    views: torch.Tensor  # [B, M, width] L2-normalised aligned modality tokens (the contrastive views)
    expected_depth: torch.Tensor  # [B] sum of continue-probabilities (soft) or the hard exit depth
    exit_depth: torch.Tensor  # [B] int64, hard exit depth (max_depth when gate="off")
    modality_weights: torch.Tensor  # [B, M] attention on each modality token, averaged over executed layers
    id_attention: torch.Tensor  # [B] attention on the ID token, averaged over executed layers
    gate_values: torch.Tensor  # [B, max_depth - 1] g^(l) after each block (NaN where the item had exited)


class BlockOutput(NamedTuple):
    hidden: torch.Tensor  # [B, width]
    attention: torch.Tensor  # [B, S] attention of the query over the context tokens (heads averaged)


class DynamicCrossModalBlock(nn.Module):
    """Pre-LN cross-attention from the item state ``h`` to its context tokens, then an FFN; both residual."""

    def __init__(self, width: int, heads: int, ffn_mult: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_mult * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * width, width)
        )

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, padding_mask: torch.Tensor) -> BlockOutput:
        query = self.norm_query(hidden).unsqueeze(1)  # [B, 1, d]
        keys = self.norm_context(context)  # [B, S, d]
        attended, weights = self.attention(query, keys, keys, key_padding_mask=padding_mask,
                                           need_weights=True, average_attn_weights=True)  # [B, 1, d], [B, 1, S]
        hidden = hidden + attended[:, 0]  # [B, d]
        hidden = hidden + self.ffn(self.norm_ffn(hidden))  # [B, d]
        return BlockOutput(hidden, weights[:, 0])


class FusionModel(nn.Module):
    """ID queries + per-modality projections + gated stack of cross-modal blocks + contrastive head.

    Items are addressed by row (``item id - 1``). ``modality_dims`` maps each modality name to
    its raw feature width, in the order used for every ``[B, M]`` tensor.
    """

    def __init__(self, num_items: int, modality_dims: dict[str, int], cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.modality_names = tuple(modality_dims)
        width = cfg.width
        self.id_queries = nn.Embedding(num_items, width, sparse=cfg.query_optimizer == "sparse_adam")  # q_i, random
        nn.init.normal_(self.id_queries.weight, std=cfg.id_init_std)
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for m, d in modality_dims.items()}
        )
        self.token_type = nn.Embedding(len(modality_dims) + 1, width)  # 0 = the ID token, 1.. = modalities
        nn.init.normal_(self.token_type.weight, std=0.02)
        self.blocks = nn.ModuleList(
            DynamicCrossModalBlock(width, cfg.heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.max_depth)
        )
        self.gates = nn.ModuleList(  # a gate after every block but the last
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, 1))
            for _ in range(cfg.max_depth - 1)
        )
        for gate in self.gates:
            nn.init.constant_(gate[-1].bias, cfg.gate_init_bias)
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, width)  # projection head for the contrastive loss
        if cfg.id_dropout > 0:  # q_new, created last so that id_dropout = 0 leaves every other initialisation as is
            self.new_item_query = nn.Parameter(torch.randn(width) * cfg.id_init_std)

    def queries(self, rows: torch.Tensor, new_item: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, width]``: each row's ID query ``q_i``, or ``q_new`` where ``new_item`` [B] (bool) is set."""
        queries = self.id_queries(rows)  # [B, d]
        if new_item is None:
            return queries
        if not hasattr(self, "new_item_query"):
            raise ValueError("this FusionModel was trained without ID dropout (FusionConfig.id_dropout = 0): "
                             "it has no new-item query")
        return torch.where(new_item.unsqueeze(1), self.new_item_query.expand_as(queries), queries)

    def align(self, rows: torch.Tensor, features: dict[str, torch.Tensor],
              queries: torch.Tensor | None = None) -> torch.Tensor:
        """Similarity-based alignment: one L2-normalised token per modality, ``[B, M, width]``. ``queries``
        [B, width] defaults to the rows' ID queries."""
        query = F.normalize(self.id_queries(rows) if queries is None else queries, dim=-1)  # [B, d]
        tokens = []
        for name in self.modality_names:
            vectors = F.normalize(self.projections[name](features[name]), dim=-1)  # [B, J, d]
            cosine = torch.einsum("bjd,bd->bj", vectors, query)  # [B, J]
            weights = torch.softmax(cosine / self.cfg.tau, dim=1)  # [B, J]
            tokens.append(torch.einsum("bj,bjd->bd", weights, vectors))  # [B, d]
        return torch.stack(tokens, dim=1)  # [B, M, d]

    def forward(self, rows: torch.Tensor, features: dict[str, torch.Tensor], present: torch.Tensor,
                hard_exit: bool | None = None, attend: torch.Tensor | None = None,
                new_item: torch.Tensor | None = None) -> FusionOutput:
        """``rows`` [B] item rows; ``features[m]`` [B, J, d_m]; ``present`` [B, M] bool.

        ``attend`` [B, M] (default ``present``) says which modality tokens the query may attend to
        (modality dropout hides some during training). ``new_item`` [B] bool: rows that use the shared
        new-item query ``q_new`` instead of their own (ID dropout; the caller hides what a new item lacks).
        """
        attend = present if attend is None else attend & present
        hard_exit = (not self.training) if hard_exit is None else hard_exit
        batch, num_mod = rows.shape[0], len(self.modality_names)
        # three separate look-ups, as before ID dropout existed (one shared look-up sums the gradients in another
        # order, and the trained vectors would differ in the last bits from every cached stage-1 result)
        aligned = self.align(rows, features, self.queries(rows, new_item))  # [B, M, d]
        id_token = self.queries(rows, new_item).unsqueeze(1)  # [B, 1, d]
        context = torch.cat([id_token, aligned], dim=1) + self.token_type.weight  # [B, 1 + M, d]
        padding_mask = torch.cat([torch.zeros_like(attend[:, :1]), ~attend], dim=1)  # [B, 1 + M], True = hidden

        hidden = self.queries(rows, new_item)  # h^(0) = q_i, [B, d]
        attention_sum = torch.zeros(batch, num_mod + 1, device=rows.device)  # [B, 1 + M]
        dynamic = self.cfg.gate == "dynamic"
        gate_values = torch.full((batch, len(self.gates)), float("nan"), device=rows.device)  # [B, L - 1]
        if hard_exit:
            active = torch.ones(batch, dtype=torch.bool, device=rows.device)  # items still running
            exit_depth = torch.zeros(batch, dtype=torch.long, device=rows.device)
            for depth, block in enumerate(self.blocks, start=1):
                idx = active.nonzero(as_tuple=True)[0]  # exited items skip the remaining blocks
                if idx.numel() == 0:
                    break
                out = block(hidden[idx], context[idx], padding_mask[idx])
                hidden = hidden.index_copy(0, idx, out.hidden)
                attention_sum = attention_sum.index_add(0, idx, out.attention)
                exit_depth[idx] = depth
                if dynamic and depth < len(self.blocks):
                    gate = torch.sigmoid(self.gates[depth - 1](out.hidden)).squeeze(-1)  # [b]
                    gate_values[idx, depth - 1] = gate
                    active[idx[gate < self.cfg.exit_threshold]] = False
            expected_depth = exit_depth.float()
            attention = attention_sum / exit_depth.clamp(min=1).unsqueeze(1)  # [B, 1 + M]
        else:
            continue_prob = torch.ones(batch, device=rows.device)  # c_1 = 1
            expected_depth = torch.zeros(batch, device=rows.device)
            for depth, block in enumerate(self.blocks, start=1):
                out = block(hidden, context, padding_mask)
                step = continue_prob.unsqueeze(1)  # [B, 1]
                hidden = hidden + step * (out.hidden - hidden)  # gated residual, [B, d]
                attention_sum = attention_sum + step * out.attention
                expected_depth = expected_depth + continue_prob
                if dynamic and depth < len(self.blocks):
                    gate = torch.sigmoid(self.gates[depth - 1](hidden)).squeeze(-1)  # [B]
                    gate_values[:, depth - 1] = gate.detach()
                    continue_prob = continue_prob * gate
            exit_depth = torch.full((batch,), len(self.blocks), dtype=torch.long, device=rows.device)
            attention = attention_sum / expected_depth.unsqueeze(1)  # [B, 1 + M]

        fused = self.final_norm(hidden)  # [B, d]
        projected = F.normalize(self.head(fused), dim=-1)  # [B, d]
        views = F.normalize(aligned, dim=-1)  # [B, M, d]
        return FusionOutput(fused, projected, views, expected_depth, exit_depth, attention[:, 1:], attention[:, 0],
                            gate_values)
