"""Stage 3b: the Q-Bert4Rec sequence model — a bidirectional (BERT4Rec-style) encoder over semantic IDs.

Q-Bert4Rec (arXiv 2512.02474) feeds the semantic IDs of Stage 2 into a BERT-style encoder,
pretrains it with multi-mask objectives and fine-tunes it. The paper does not state how the
tokens enter the encoder, the head, the loss or the scoring, so **everything below is this kit's
choice** (each a field of :class:`QBertConfig` or a documented function argument):

* **Input**: one position per item. Its embedding is the *sum over levels* of per-level token
  embeddings, ``e(i) = sum_l E_l[c_l(i)]`` (one table per level, each with its own ``PAD`` = row 0
  and ``MASK`` = row 1; token ``c`` sits in row ``c + 2``), plus a learned position embedding,
  then LayerNorm + dropout (as BERT4Rec). Summing keeps BERT4Rec's sequence length and cost;
  flattening the levels into ``T * L`` tokens is the alternative the paper may have used.
  ``add_item_id_embedding=True`` also adds a learned per-item embedding (an ablation: it does not
  transfer across catalogs and cannot help cold-start items).
* **Positions** are counted from the *right*: the last history position always gets position
  ``max_len - 1`` whatever the padded width, which matches left padding and the appended ``[MASK]``.
* **Encoder**: ``torch.nn.TransformerEncoder`` (pre-LN, GELU, ``batch_first``, key-padding mask;
  attention is PyTorch's fused scaled-dot-product attention). BERT4Rec's Beauty defaults:
  hidden 64, 2 layers, 2 heads, max length 50.
* **Head** (``item_head``): ``"token_mlp"`` (**default**: an MLP over an item's tokens gives its output vector
  and prior, no per-item parameter) or ``"level_sum"`` (one softmax per level, an item's logit the sum over its
  levels). Both forms, their losses and the measurements behind the default: :mod:`qbert4rec_lib.models.qbert_head`.
* **Scoring** (full ranking, no beam search): append ``[MASK]`` after the history (dropping the
  oldest item if the window is full) and score all N items at that position with the head above
  (``level_sum``: ``s(i) = sum_l log p_l(c_l(i))``, one sparse product of the per-level
  log-probabilities with the 0/1 ``[N, sum_l V_l]`` ID matrix, :meth:`QBert4Rec.item_token_matrix`;
  per user this differs from the summed logits by a constant). Either way the training loss is the
  softmax of exactly the scores that are ranked. The final disambiguation level of the IDs keeps
  items with equal prefixes apart.
* **Input alternative** (``input_embedding="item_vector"``, with the token_mlp head): the input of an
  item is its vector ``v_i`` (tied with the output, as SASRec ties its item embeddings) instead of the
  sum of its level embeddings; ``[MASK]`` is a learned vector. ``"item_vector_norm"`` passes ``v_i`` through a
  LayerNorm of its own first: at initialisation ``v_i`` (two small linear layers deep) is ~40x smaller than the
  summed embeddings and ~20x smaller than the positions, so the plain tied input starts with the items almost
  invisible; with the LayerNorm they are ~15x larger than the positions instead (v_i's variance is below the
  LayerNorm's eps, so the rows land near RMS 0.3), and a bidirectional encoder then sees order only faintly.
  ``"item_vector_scaled"`` enters ``v_i`` at the scale of the input it replaces: a LayerNorm (eps 1e-12) whose gain
  starts at ``init_std * sqrt(L)``, the RMS of a sum of ``L`` level embeddings at initialisation, so items and
  positions start in the same proportion as with the summed input. ``"token_sum_item_vector"`` adds the tied ``v_i``
  to the summed embeddings: training starts as with the summed input (``v_i`` is small) and the tie grows in. The
  tied inputs are study rows (docs/results.md, the
  study), not defaults: the plain and the normalised one each stalled once in the kit's cold-start pretraining runs,
  the scaled one in the study (seed 2, at the Popularity level); the summed input did not stall in any recorded run.
* **Item-token dropout** (``item_token_dropout``, off): in training, an item's output vector is computed from a random
  prefix of its tokens with probability ``p`` (DropoutNet-style training for new items; within seed noise on the
  default catalog's cold start, docs/results.md).
* **Content channel** (``content_channel``, off; a kit extension, not the paper's model): each item's frozen
  content vector ``c_i`` (text + image, known the day a new item arrives) enters through one learned projection
  ``P``: ``v_i = MLP(tokens of i) + P c_i`` (``"output"``), and with ``"input_output"`` the item's input embedding
  gains the same tied ``P c_i``. It gives the model the fine content similarity that three codebook levels round
  away (generative retrieval with semantic IDs plus a dense item representation, as LIGER does); the rows that use
  it are labelled "+ content channel".
* **Speed**: training runs the encoder per length group (``group_by_length``, see
  :func:`~qbert4rec_lib.models.base.length_groups`): identical losses (a test), about 3x the sequences/s
  on Beauty (``scripts/bench_training.py``).
* **Masking** is an attribute (``model.masking``, a :class:`~qbert4rec_lib.models.masking.MaskConfig`), so
  the same model pretrains with the equal mixture and fine-tunes with the tail emphasis.
* **Cross-domain transfer** (:func:`transfer_weights`): both catalogs are tokenised by ONE RQ-VAE
  trained on the union of their items, so the token vocabularies are shared. Token tables,
  position embeddings, encoder and head transfer; the item-ID embedding (if enabled) and the
  item→token table (each catalog's own) do not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import LossOutput, SequentialRecommender, length_groups
from .itemloss import ItemLossFields
from .layers import attention_mask, check_transformer_config, init_weights, key_padding_mask
from .masking import PRETRAIN_MASKS, MaskConfig, apply_mixture, crop_prefixes
from .qbert_head import _SPECIALS, MASK_TOKEN, PAD_TOKEN, ItemHead

__all__ = [
    "QBertConfig",
    "QBert4Rec",
    "TransferReport",
    "transfer_weights",
    "PAD_TOKEN",
    "MASK_TOKEN",
]


@dataclass(frozen=True)
class QBertConfig(ItemLossFields):
    """Architecture of the Q-Bert4Rec encoder (paper silent; BERT4Rec's Beauty defaults)."""

    hidden: int = 64  # model width d
    layers: int = 2  # transformer encoder layers
    heads: int = 2  # attention heads
    ffn_mult: int = 4  # feed-forward width = ffn_mult * hidden
    dropout: float = 0.2  # dropout on embeddings, attention and feed-forward
    max_len: int = 50  # longest sequence the encoder sees (older items are cut off)
    add_item_id_embedding: bool = False  # ablation: also add a learned per-item embedding to the input
    tie_head: bool = True  # per-level output weights tied to the level's input embedding table
    level_weights: tuple[float, ...] = ()  # weight of each level's CE in the level loss; () = 1 each
    level_loss_weight: float = 0.0  # weight of sum_l CE_l (each level's softmax trained on its own)
    item_loss_weight: float = 1.0  # weight of CE over the catalog's items, item logit = sum_l level logit
    item_bias: bool = False  # ablation: a learned per-item score bias (an ID feature: not transferable)
    init_std: float = 0.02  # normal init of embeddings and linear layers (BERT)
    group_by_length: bool = True  # training runs the encoder per length group (same values, less padding work)
    item_head: str = "token_mlp"  # how an item's score is formed: "token_mlp" | "level_sum" (see the module doc)
    item_encoder: str = "mlp"  # token_mlp head: tokens -> item vector by "mlp" (2 layers, GELU) or "linear"
    # an input item = sum of its level embeddings, "item_vector" (token_mlp's v_i) or "item_vector_norm" (v_i after
    # its own LayerNorm: at initialisation v_i is ~40x smaller than the summed embeddings) or "item_vector_scaled" (a
    # LayerNorm whose gain starts at the summed embeddings' scale, init_std * sqrt(L)) or "token_sum_item_vector"
    # (the sum plus the tied v_i: the summed input's start, the tie once v_i has grown); key-neutral: added later
    input_embedding: str = field(default="token_sum", metadata={"key_neutral": "token_sum"})
    # token_mlp head with item_encoder="mlp": hidden width of the item MLP = item_mlp_mult * hidden (0: ffn_mult)
    item_mlp_mult: int = field(default=0, metadata={"key_neutral": 0})
    # token_mlp head, training only: with this probability per item and step, the item's tokens from a random level
    # k >= 2 on are replaced by each level's [MASK] row when its output vector is computed (DropoutNet-style: the
    # item MLP also learns to score an item from its coarse tokens, as it must for a new item); key-neutral: added later
    item_token_dropout: float = field(default=0.0, metadata={"key_neutral": 0.0})
    # a dense content channel beside the semantic IDs (a kit extension, not the paper's model): "off" | "output" (the
    # item's output vector v_i gains P c_i, c_i its frozen text+image vector) | "input_output" (the same tied P c_i is
    # also added to the item's input embedding); needs the content table; key-neutral: added later
    content_channel: str = field(default="off", metadata={"key_neutral": "off"})

    def __post_init__(self) -> None:
        from ..config import ConfigError

        check_transformer_config(self, "hidden", "heads", ranges={
            "hidden": "[1, inf)", "layers": "[1, inf)", "heads": "[1, inf)", "ffn_mult": "[1, inf)",
            "dropout": "[0, 1)", "max_len": "[1, inf)", "level_weights": "[0, inf)", "level_loss_weight": "[0, inf)",
            "item_loss_weight": "[0, inf)", "init_std": "[0, inf)", "item_mlp_mult": "[0, inf)",
            "item_token_dropout": "[0, 1]"})
        for name, allowed in (("item_head", ("token_mlp", "level_sum")), ("item_encoder", ("mlp", "linear")),
                              ("input_embedding", ("token_sum", "item_vector", "item_vector_norm",
                                                   "item_vector_scaled", "token_sum_item_vector")),
                              ("content_channel", ("off", "output", "input_output"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"QBertConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.input_embedding != "token_sum" and self.item_head != "token_mlp":
            raise ConfigError(f"QBertConfig: input_embedding={self.input_embedding!r} needs item_head='token_mlp'")
        if self.content_channel != "off" and (self.item_head != "token_mlp" or self.input_embedding != "token_sum"):
            raise ConfigError("QBertConfig: content_channel needs item_head='token_mlp' and input_embedding='token_sum'")
        if self.item_token_dropout > 0 and self.item_head != "token_mlp":
            raise ConfigError("QBertConfig: item_token_dropout needs item_head='token_mlp' (it acts on the item MLP)")
        if self.item_head == "token_mlp" and self.level_loss_weight > 0:
            raise ConfigError("QBertConfig: item_head='token_mlp' scores items directly; level_loss_weight must be 0")
        from .itemloss import check_item_loss_fields

        check_item_loss_fields(self)


class QBert4Rec(ItemHead, SequentialRecommender):
    """BERT4Rec over semantic IDs.

    ``ids``: int64 ``[N, L]`` semantic-ID table, row ``k`` = item id ``k + 1``, column ``l`` = the
    token at level ``l`` (the last column is normally the disambiguation token).
    ``vocab_sizes``: tokens per level (default ``ids.max(0) + 1``); pass the shared RQ-VAE's sizes
    so that models of different catalogs have identically shaped token tables.
    """

    name = "Q-Bert4Rec"

    def __init__(self, ids: np.ndarray, vocab_sizes: Sequence[int] | None = None, config: QBertConfig | None = None,
                 masking: MaskConfig | None = None, content: np.ndarray | None = None):
        super().__init__()
        ids = np.asarray(ids)
        if ids.ndim != 2 or len(ids) == 0:
            raise ValueError(f"semantic-ID table must be [N, L] with N >= 1, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"semantic-ID table must hold integers, got {ids.dtype}")
        if ids.min() < 0:
            raise ValueError(f"semantic-ID table has a negative token at row {int(np.argwhere(ids < 0)[0, 0])}")
        cfg = config or QBertConfig()
        sizes = tuple(int(v) for v in (vocab_sizes if vocab_sizes is not None else ids.max(axis=0) + 1))
        if len(sizes) != ids.shape[1]:
            raise ValueError(f"vocab_sizes has {len(sizes)} levels but the ID table has {ids.shape[1]} columns")
        too_big = np.argwhere(ids >= np.asarray(sizes)[None, :])
        if len(too_big):
            r, l = too_big[0]
            raise ValueError(f"item id {r + 1}: level-{l} token {ids[r, l]} >= vocab size {sizes[l]}")
        if cfg.level_weights and len(cfg.level_weights) != len(sizes):
            raise ValueError(f"level_weights has {len(cfg.level_weights)} entries for {len(sizes)} levels")
        if cfg.level_loss_weight < 0 or cfg.item_loss_weight < 0 or cfg.level_loss_weight + cfg.item_loss_weight <= 0:
            raise ValueError(f"QBertConfig: loss weights must be >= 0 with a positive sum, got level_loss_weight="
                             f"{cfg.level_loss_weight}, item_loss_weight={cfg.item_loss_weight}")

        self.config = cfg
        self.masking = masking or PRETRAIN_MASKS
        self.num_items = int(ids.shape[0])
        self.num_levels = len(sizes)
        self.vocab_sizes = sizes
        # item id -> embedding row per level; item 0 (padding) -> PAD in every level
        item_tokens = np.full((self.num_items + 1, self.num_levels), PAD_TOKEN, dtype=np.int64)
        item_tokens[1:] = ids.astype(np.int64) + _SPECIALS
        self.register_buffer("item_tokens", torch.from_numpy(item_tokens))  # [N + 1, L]
        self.register_buffer("level_weight", torch.tensor(cfg.level_weights or (1.0,) * self.num_levels))  # [L]

        d = cfg.hidden
        self.token_embeddings = nn.ModuleList(
            nn.Embedding(v + _SPECIALS, d, padding_idx=PAD_TOKEN) for v in sizes)  # one table per level
        self.position_embedding = nn.Embedding(cfg.max_len, d)
        self.item_embedding = (nn.Embedding(self.num_items + 2, d, padding_idx=0)  # row N + 1 = [MASK]
                               if cfg.add_item_id_embedding else None)
        self.input_norm = nn.LayerNorm(d)
        self.input_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=cfg.ffn_mult * d, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self._build_item_head(cfg, sizes)  # head_transforms, head_bias, head_weights, item_score_bias, item_encoder
        # input_embedding="item_vector": the input of item i is v_i (tied with the output), [MASK] a learned vector
        self.mask_vector = (nn.Parameter(torch.zeros(d)) if cfg.input_embedding.startswith("item_vector")
                            else None)
        norm_eps = {"item_vector_norm": 1e-5, "item_vector_scaled": 1e-12}.get(cfg.input_embedding)
        self.item_input_norm = nn.LayerNorm(d, eps=norm_eps) if norm_eps else None
        self._scoring_vectors: torch.Tensor | None = None  # item_vectors() held while inside scoring()
        self._build_content_channel(cfg, content)  # content_projection (registered last), item_content
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for module in self.modules():  # pre-order (the baselines use apply: post-order); the order is the weights'
            init_weights(module, std)
        if self.head_weights is not None:
            for w in self.head_weights:
                nn.init.normal_(w, std=std)
        if self.config.input_embedding == "item_vector_scaled":  # rows start at the summed input's RMS
            nn.init.constant_(self.item_input_norm.weight, std * self.num_levels ** 0.5)

    # ---- encoder ----------------------------------------------------------------------------
    def _fit_window(self, sequences: torch.Tensor) -> torch.Tensor:
        if sequences.dim() != 2:
            raise ValueError(f"expected a [B, T] batch of item ids, got shape {tuple(sequences.shape)}")
        if len(sequences) and (sequences.min() < 0 or sequences.max() > self.num_items):
            raise ValueError(f"item ids must lie in 0..{self.num_items} (0 = padding); got "
                             f"{int(sequences.min())}..{int(sequences.max())}")
        return sequences[:, -self.config.max_len:]  # keep the most recent max_len items

    def encode(self, sequences: torch.Tensor, masked: torch.Tensor, vectors: torch.Tensor | None = None,
               causal: bool = False) -> torch.Tensor:
        """Hidden states ``[B, T, d]`` for left-padded ``sequences [B, T]`` with ``masked`` positions hidden.

        ``vectors``: :meth:`item_vectors` when already computed for this step (``input_embedding="item_vector"``).
        ``causal``: position ``t`` attends to positions ``<= t`` only (the ``next_item`` objective).
        """
        B, T = sequences.shape
        if self.mask_vector is not None:  # input = the item's token-derived vector v_i
            d = self.config.hidden
            vectors = self.item_vectors() if vectors is None else vectors  # [N, d + 1]
            items = vectors[:, :d] if self.item_input_norm is None else self.item_input_norm(vectors[:, :d])  # [N, d]
            table = torch.cat([vectors.new_zeros(1, d), items])  # [N + 1, d], row 0 = padding
            x = torch.where(masked.unsqueeze(-1), self.mask_vector, table[sequences])  # [B, T, d]
        else:
            tokens = self.item_tokens[sequences]  # [B, T, L]
            tokens = tokens.masked_fill(masked.unsqueeze(-1), MASK_TOKEN)
            x = sum(table(tokens[..., level]) for level, table in enumerate(self.token_embeddings))  # [B, T, d]
            if self.config.content_channel == "input_output":  # + P c_i (none at [MASK] / padding)
                x = x + self.content_projection(self.item_content[sequences.masked_fill(masked, 0)])  # [B, T, d]
            if self.config.input_embedding == "token_sum_item_vector":  # + the tied v_i (none at [MASK] / padding)
                vectors = self.item_vectors() if vectors is None else vectors  # [N, d + 1]
                table = torch.cat([vectors.new_zeros(1, self.config.hidden), vectors[:, :self.config.hidden]])
                x = x + table[sequences.masked_fill(masked, 0)]  # [B, T, d]
        positions = torch.arange(self.config.max_len - T, self.config.max_len, device=sequences.device)  # [T]
        x = x + self.position_embedding(positions).unsqueeze(0)  # [B, T, d]
        if self.item_embedding is not None:
            item_rows = sequences.masked_fill(masked, self.num_items + 1)  # [B, T]
            x = x + self.item_embedding(item_rows)
        x = self.input_dropout(self.input_norm(x))  # [B, T, d]
        if causal:  # keys: real items at or before the query (a padding query sees itself: no empty row)
            return self.encoder(x, mask=attention_mask(sequences, self.config.heads, causal=True))  # [B, T, d]
        return self.encoder(x, src_key_padding_mask=key_padding_mask(sequences, masked))  # [B, T, d]

    def masked_states(self, sequences: torch.Tensor, masked: torch.Tensor,
                      vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the masked positions ``[M, d]`` and the items hidden there ``[M]``.

        With ``config.group_by_length`` the encoder runs once per length group on the group's last
        columns only (:func:`~qbert4rec_lib.models.base.length_groups`): the same values as one pass over
        the whole batch (positions are right-aligned, padding is masked as keys), at a fraction of the
        cost when most rows are short. The masked positions then come group by group, not in row order.
        """
        if not self.config.group_by_length:
            return self.encode(sequences, masked, vectors)[masked], sequences[masked]
        T = sequences.shape[1]
        states, items = [], []
        for rows, width in length_groups((sequences > 0).sum(dim=1), T):
            seq, hide = sequences[rows, T - width:], masked[rows, T - width:]  # [b, w]
            if hide.any():
                states.append(self.encode(seq, hide, vectors)[hide])  # [m, d]
                items.append(seq[hide])  # [m]
        if not states:
            return sequences.new_zeros((0, self.config.hidden), dtype=torch.float), sequences.new_zeros(0)
        return torch.cat(states), torch.cat(items)

    def next_item_states(self, sequences: torch.Tensor,
                         vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``next_item`` objective: causal hidden states ``[M, d]`` at every real position that has a next item,
        and those next items ``[M]`` (per length group with ``config.group_by_length``: the same values)."""
        inputs, following = sequences[:, :-1], sequences[:, 1:]  # [B, T - 1]: position t predicts item t + 1
        T = inputs.shape[1]
        groups = (length_groups((inputs > 0).sum(dim=1), T) if self.config.group_by_length
                  else [(torch.arange(len(inputs)), T)])
        states, items = [], []
        for rows, width in groups:
            seq, nxt = inputs[rows, T - width:], following[rows, T - width:]  # [b, w]
            has_next = (seq > 0) & (nxt > 0)
            if has_next.any():
                states.append(self.encode(seq, torch.zeros_like(has_next), vectors, causal=True)[has_next])  # [m, d]
                items.append(nxt[has_next])  # [m]
        if not states:
            return sequences.new_zeros((0, self.config.hidden), dtype=torch.float), sequences.new_zeros(0)
        return torch.cat(states), torch.cat(items)

    # ---- the SequentialRecommender contract --------------------------------------------------
    def _token_dropout(self, generator: torch.Generator | None) -> torch.Tensor | None:
        """This step's ``[N, L]`` token rows for the item MLP under ``item_token_dropout`` (None: the items' own).

        With probability ``p`` per item, its tokens from level ``k`` on (``k`` uniform over the levels after the
        first) become each level's ``[MASK]`` row, so the prefix is all the item MLP sees of that item this step.
        No random draw at ``p = 0`` or in evaluation mode (the default's training is unchanged)."""
        p = self.config.item_token_dropout
        if p == 0 or not self.training or self.num_levels < 2:
            return None
        tokens = self.item_tokens[1:]  # [N, L]
        N, L = tokens.shape
        drop = torch.rand(N, generator=generator, device=tokens.device) < p  # [N]
        first_hidden = torch.randint(1, L, (N,), generator=generator, device=tokens.device)  # [N] in 1..L-1
        levels = torch.arange(L, device=tokens.device)  # [L]
        return tokens.masked_fill(drop[:, None] & (levels >= first_hidden[:, None]), MASK_TOKEN)  # [N, L]

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """Mask with ``self.masking``, predict every level's token at the masked positions, sum the CEs
        (``masking.objective == "next_item"``: the next item at every position, causally)."""
        sequences = self._fit_window(sequences)
        vectors = (self.item_vectors(self._token_dropout(generator))  # [N, d + 1], once per step
                   if self.item_encoder is not None else None)
        if self.masking.objective == "next_item":
            hidden, target_items = self.next_item_states(sequences, vectors)  # [M, d], [M]
            masked = sequences > 0  # (only for the logged masked_fraction: every item is a target but the first)
        else:
            if self.masking.prefix_crop_prob > 0:  # sliding windows: a random prefix of the row (no RNG draw at 0)
                sequences = crop_prefixes(sequences, self.masking.prefix_crop_prob, generator)
            masked = apply_mixture(sequences, self.masking, generator).mask  # [B, T]
            hidden, target_items = self.masked_states(sequences, masked, vectors)  # [M, d], [M]
        targets = self.item_tokens[target_items] - _SPECIALS  # [M, L] token ids per level
        total = hidden.new_zeros(())
        parts: dict[str, float] = {}
        if self.item_encoder is not None:  # token_mlp head: one softmax over the catalog's items
            if self.config.item_loss != "full":  # chunked / sampled (qbert4rec_lib.models.itemloss)
                item_ce = self._token_item_loss(hidden, vectors, target_items - 1, generator)
            else:
                item_ce = F.cross_entropy(self.mask_unknown_items(self.token_item_logits(hidden, vectors)),
                                          target_items - 1)
            parts.update(ce_item=item_ce.detach(), loss=item_ce.detach())  # tensors: no host sync per step
            parts["masked_fraction"] = masked.sum().double() / (sequences > 0).sum().clamp(min=1)
            return LossOutput(loss=item_ce, parts=parts)
        logits = self.level_logits(hidden)  # L x [M, V_l]
        for level, level_logits in enumerate(logits):
            if self.config.level_loss_weight > 0:
                ce = F.cross_entropy(level_logits, targets[:, level])
                total = total + self.config.level_loss_weight * self.level_weight[level] * ce
            else:  # logged only
                ce = F.cross_entropy(level_logits.detach(), targets[:, level])
            parts[f"ce_level{level}"] = ce.detach()
        if self.config.item_loss_weight > 0 and self.config.item_loss != "full":
            item_ce = self._level_sum_item_loss(logits, target_items - 1, generator)
            total = total + self.config.item_loss_weight * item_ce
            parts["ce_item"] = item_ce.detach()
        elif self.config.item_loss_weight > 0:
            item_ce = F.cross_entropy(self.mask_unknown_items(self._item_logits(logits)), target_items - 1)  # over all N items
            total = total + self.config.item_loss_weight * item_ce
            parts["ce_item"] = item_ce.detach()
        parts["loss"] = total.detach()  # tensors: no host sync per step
        parts["masked_fraction"] = masked.sum().double() / (sequences > 0).sum().clamp(min=1)
        return LossOutput(loss=total, parts=parts)

    def _next_hidden(self, histories: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state ``[B, d]`` at a ``[MASK]`` appended after each history (``next_item`` objective: the causal
        state at the last item)."""
        histories = self._fit_window(histories)
        if self.masking.objective == "next_item":
            return self.encode(histories, torch.zeros_like(histories, dtype=torch.bool), vectors, causal=True)[:, -1]
        B = histories.shape[0]
        padded = torch.cat([histories, histories.new_zeros(B, 1)], dim=1)[:, -self.config.max_len:]  # [B, T']
        masked = torch.zeros_like(padded, dtype=torch.bool)
        masked[:, -1] = True  # the appended [MASK] = the next item
        return self.encode(padded, masked, vectors)[:, -1]  # [B, d]

    @torch.no_grad()
    def next_item_log_probs(self, histories: torch.Tensor) -> list[torch.Tensor]:
        """Per-level log-probabilities ``[B, V_l]`` at a ``[MASK]`` appended after each history."""
        hidden = self._next_hidden(histories)  # [B, d]
        return [F.log_softmax(logits, dim=-1) for logits in self.level_logits(hidden)]

    @torch.no_grad()
    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        """``[B, N + 1]`` scores ``sum_l log p_l(c_l(i))`` (token_mlp: ``g(h) . v_i + prior_i``) for every
        item (column 0 = -inf)."""
        if self.item_encoder is not None:
            vectors = self.item_vectors() if self._scoring_vectors is None else self._scoring_vectors  # [N, d + 1]
            scores = self.token_item_logits(self._next_hidden(histories, vectors), vectors)  # [B, N]
        else:
            scores = self._item_logits(self.next_item_log_probs(histories))  # [B, N]
        return torch.cat([scores.new_full((scores.shape[0], 1), float("-inf")), scores], dim=1)  # [B, N + 1]

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Inside: :meth:`score_all` reuses one :meth:`item_vectors` (token_mlp head) instead of running the item
        MLP over all ``N`` items for every batch of users. The weights must not change inside."""
        if self.item_encoder is None or self._scoring_vectors is not None:
            yield
            return
        with torch.no_grad():
            self._scoring_vectors = self.item_vectors()  # [N, d + 1]
        try:
            yield
        finally:
            self._scoring_vectors = None

    def extra_repr(self) -> str:
        return f"items={self.num_items}, levels={self.num_levels}, vocab_sizes={self.vocab_sizes}"


@dataclass
class TransferReport:
    copied: list[str] = field(default_factory=list)  # parameter names copied from the source
    kept: list[str] = field(default_factory=list)  # target parameters/buffers left as they were (catalog-specific)


_CATALOG_SPECIFIC = ("item_embedding.", "item_tokens", "item_score_bias")


def transfer_weights(source: QBert4Rec, target: QBert4Rec) -> TransferReport:
    """Copy everything catalog-independent from ``source`` into ``target`` (cross-domain transfer).

    Requires a shared vocabulary (same ``vocab_sizes``, i.e. one RQ-VAE over the union of both
    catalogs' items) and the same architecture. Token tables, positions, encoder and head are
    copied; the item-ID embedding and the item→token table are the target's own.
    """
    if source.vocab_sizes != target.vocab_sizes:
        raise ValueError(f"cannot transfer: vocabularies differ ({source.vocab_sizes} vs {target.vocab_sizes}); "
                         "tokenise both catalogs with one RQ-VAE trained on the union of their items")
    src = source.state_dict()
    report = TransferReport()
    new_state = {}
    for name, value in target.state_dict().items():
        if name.startswith(_CATALOG_SPECIFIC) or name not in src:
            report.kept.append(name)
            continue
        if src[name].shape != value.shape:
            raise ValueError(f"cannot transfer {name!r}: shape {tuple(src[name].shape)} in the source vs "
                             f"{tuple(value.shape)} in the target (architectures differ)")
        new_state[name] = src[name].clone()
        report.copied.append(name)
    target.load_state_dict(new_state, strict=False)
    return report
