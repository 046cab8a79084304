"""Baselines in the same harness as Q-Bert4Rec (stage 3, "Baselines"): Popularity, SASRec, BERT4Rec.

All three follow the kit's model contract (:mod:`qbert4rec_lib.models.base`): ``loss`` on a batch of
left-padded training sequences, ``score_all`` over every item for left-padded histories. They
train with :func:`qbert4rec_lib.experiments.train.fit` and are scored by :func:`qbert4rec_lib.experiments.evaluate.evaluate`
on the same split, so the comparison with Q-Bert4Rec is apples to apples.

* :class:`Popularity`: the score of an item is its interaction count in the training part.
* :class:`SASRec` (Kang & McAuley, ICDM 2018): a causal (left-to-right) transformer over item
  ids. Trained here with **full-softmax cross-entropy** over all items at every position of a
  sequence ("SASRec-CE", the strong variant: Klenitskiy & Vasilev, RecSys 2023; Petrov &
  Macdonald, RecSys 2023), not with the paper's one-negative binary loss. Every position is
  predicted in one forward pass (next item ``t+1`` from the prefix ``<= t``), and logits are
  computed only at non-padding positions.
* :class:`BERT4RecID` (Sun et al., CIKM 2019): a bidirectional transformer over item ids, trained
  with the Cloze task (random masking, ratio 0.2) plus RecBole's ``ft_ratio`` augmentation
  (a sequence has only its last item masked, with probability 0.5), full-softmax cross-entropy
  at masked positions. ``[MASK]`` is item id ``N + 1``. Scoring appends ``[MASK]`` after the
  history (dropping the oldest item when the history fills the window) and reads that position.

Choices the papers leave open, each a config field:

* Positions are **right-aligned**: the newest item always sits at position ``max_len - 1``, so a
  sequence's position ids do not depend on how much padding the batch carries.
* Both transformers use PyTorch's own ``nn.TransformerEncoderLayer`` (pre-norm,
  ``norm_first=True``, GELU, plus a final LayerNorm) rather than the papers' post-norm blocks;
  pre-norm trains stably at the higher learning rates used here.
* The output layer is tied to the input item embedding (both papers do this).
* Padding is masked out of attention as keys; every position may always attend to itself, so a
  padding row never sees an all-masked row (that would give NaN).
* SASRec's training sequences are at most ``max_len`` items, i.e. ``max_len - 1`` inputs: the
  oldest position id (0) is only used at scoring time by users whose history fills the window.
* Training runs the transformer per length group (:meth:`_ItemTransformer.forward_by_length`):
  identical outputs, but most Beauty sequences are short, so a shuffled batch padded to its
  longest sequence is mostly padding. This makes an epoch several times faster on CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import LENGTH_GROUP_WIDTHS, LossOutput, SequentialRecommender, length_groups
from .itemloss import ItemLossFields, check_item_loss_fields
from .layers import attention_mask, check_transformer_config, init_weights

__all__ = ["Popularity", "SASRecConfig", "SASRec", "BERT4RecConfig", "BERT4RecID"]


# ---- Popularity ----------------------------------------------------------------------------
class Popularity(SequentialRecommender):
    """Scores every user's next item by its training interaction count (no parameters to train)."""

    name = "Popularity"

    def __init__(self, item_counts: np.ndarray | torch.Tensor):
        super().__init__()
        counts = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32)  # [N+1], index 0 = padding
        if counts.ndim != 1 or len(counts) < 2:
            raise ValueError(f"Popularity: item_counts must be a 1-d array of length N + 1, got {tuple(counts.shape)}")
        self.num_items = len(counts) - 1
        self.register_buffer("counts", counts)

    @classmethod
    def from_split(cls, split) -> "Popularity":
        """Counts from ``split.train`` (never from validation or test items)."""
        return cls(split.train_item_counts())

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        raise RuntimeError("Popularity has nothing to train; fit() evaluates it directly")

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(histories.shape[0], -1).clone()  # [B, N+1]


# ---- shared transformer pieces -------------------------------------------------------------
class _ItemTransformer(nn.Module):
    """Item embedding + right-aligned position embedding -> pre-norm transformer -> LayerNorm."""

    def __init__(self, vocab_size: int, hidden_size: int, n_layers: int, n_heads: int, inner_size: int,
                 dropout: float, attn_dropout: float, max_len: int, causal: bool, init_std: float):
        super().__init__()
        self.max_len, self.n_heads, self.causal = max_len, n_heads, causal
        self.item_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden_size, n_heads, inner_size, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        layer.self_attn.dropout = attn_dropout  # attention-probability dropout (separate knob)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_size)
        self.apply(lambda m: init_weights(m, init_std))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape  # [B, T]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the model's max_len {self.max_len}")
        positions = torch.arange(self.max_len - length, self.max_len, device=tokens.device)  # [T] right-aligned
        x = self.item_embedding(tokens) + self.position_embedding(positions)  # [B, T, d]
        x = self.dropout(x)
        x = self.encoder(x, mask=attention_mask(tokens, self.n_heads, self.causal))  # [B, T, d]
        return self.final_norm(x)  # [B, T, d]

    def forward_by_length(self, tokens: torch.Tensor, widths: tuple[int, ...] = LENGTH_GROUP_WIDTHS) -> torch.Tensor:
        """:meth:`forward` computed per length group (:func:`~qbert4rec_lib.models.base.length_groups`): rows
        whose sequence fits in ``w`` columns run on their last ``w`` columns only. Same values at every
        real position (attention never crosses rows and positions are right-aligned), much less work on
        padding when most sequences are short (Beauty: mean length 6.9 in a window of 50). Padding
        positions come back as zeros.
        """
        batch, length = tokens.shape  # [B, T]
        out = torch.zeros(batch, length, self.item_embedding.embedding_dim, device=tokens.device)  # [B, T, d]
        for rows, width in length_groups((tokens != 0).sum(dim=1), length, widths):
            out[rows, length - width:] = self(tokens[rows, length - width:])  # [b, width, d]
        return out


def _zero_loss(model: nn.Module) -> torch.Tensor:
    """A scalar 0 connected to the parameters (a batch with nothing to predict still backpropagates)."""
    return sum(p.sum() for p in model.parameters()) * 0.0


def _dot_item_loss(model, states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   targets: torch.Tensor, generator) -> torch.Tensor:
    """Item CE for logits ``states [M, d] @ weight[N, d].T (+ bias [N])`` through
    :func:`qbert4rec_lib.models.itemloss.item_cross_entropy` (``model.cfg.item_loss`` = chunked | sampled)."""
    from .itemloss import item_cross_entropy

    def logits(index):
        out = states @ weight[index].T  # [M, n]
        return out if bias is None else out + bias[index]

    def target_logits(t):
        out = (states * weight[t]).sum(dim=1)  # [M]
        return out if bias is None else out + bias[t]

    return item_cross_entropy(logits, target_logits, targets, model.num_items, model.cfg,
                              item_mask=model.train_item_mask, counts=model.item_sampling_counts, generator=generator)


# ---- SASRec --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SASRecConfig(ItemLossFields):
    hidden_size: int = 64  # (int) embedding / model width d (paper and RecBole: 50 / 64)
    n_layers: int = 2  # (int) transformer blocks (paper, RecBole: 2)
    n_heads: int = 1  # (int) attention heads (paper: 1; RecBole: 2)
    inner_size: int = 256  # (int) feed-forward width (RecBole: 256; paper: d)
    dropout: float = 0.3  # (float) embedding / residual dropout (paper on Beauty: 0.5, see below)
    attn_dropout: float = 0.3  # (float) attention-probability dropout (RecBole SASRec: 0.5)
    max_len: int = 50  # (int) longest history used (paper: 50 on Beauty)
    init_std: float = 0.02  # (float) std of the normal weight init (RecBole: 0.02)

    def __post_init__(self) -> None:
        check_transformer_config(self, "hidden_size", "n_heads", ranges={
            "hidden_size": "[1, inf)", "n_layers": "[1, inf)", "n_heads": "[1, inf)", "inner_size": "[1, inf)",
            "dropout": "[0, 1)", "attn_dropout": "[0, 1)", "max_len": "[1, inf)", "init_std": "[0, inf)"})
        check_item_loss_fields(self)  # chunked / sampled item loss fields


class SASRec(SequentialRecommender):
    """Causal transformer over item ids, full-softmax cross-entropy at every position ("SASRec-CE").

    Dropout default 0.3 rather than the paper's 0.5: on Beauty (same code, lr 2e-3, batch 256,
    seed 0) dropout 0.3 reaches test NDCG@10 0.045 after 15 epochs and 0.052 after 25 (best 0.053),
    which fits the ~10 minute CPU budget; 0.5 is slower (0.038 after 20 epochs, 0.047 after 30) but
    ends higher (0.058 after ~60 epochs). Use ``SASRecConfig(dropout=0.5, attn_dropout=0.5)`` and
    ``TrainConfig(epochs=100, patience=10)`` for the paper's setting.
    """

    name = "SASRec-CE"

    def __init__(self, num_items: int, cfg: SASRecConfig = SASRecConfig()):
        super().__init__()
        self.num_items, self.cfg = num_items, cfg
        self.backbone = _ItemTransformer(
            num_items + 1, cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.inner_size,
            cfg.dropout, cfg.attn_dropout, cfg.max_len, causal=True, init_std=cfg.init_std,
        )

    def _item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dot products with the (tied) item embeddings of ids 1..N -> [M, N]."""
        return hidden @ self.backbone.item_embedding.weight[1:].T

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        inputs, targets = sequences[:, :-1], sequences[:, 1:]  # [B, T-1] each: predict t+1 from <= t
        predict = inputs != 0  # [B, T-1] a real prefix item (left padding => its successor is real too)
        if not predict.any():  # every sequence has a single item: nothing to predict
            return LossOutput(_zero_loss(self), {"ce": 0.0, "targets": 0.0})
        hidden = self.backbone.forward_by_length(inputs)  # [B, T-1, d]
        if self.cfg.item_loss != "full":  # chunked / sampled item loss (qbert4rec_lib.models.itemloss)
            loss = _dot_item_loss(self, hidden[predict], self.backbone.item_embedding.weight[1: self.num_items + 1],
                                  None, targets[predict] - 1, generator)
            return LossOutput(loss, {"ce": loss.detach(), "targets": predict.sum()})
        logits = self.mask_unknown_items(self._item_logits(hidden[predict]))  # [M, N] only at non-pad positions
        loss = F.cross_entropy(logits, targets[predict] - 1)
        return LossOutput(loss, {"ce": loss.detach(), "targets": predict.sum()})  # tensors: no host sync per step

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        histories = histories[:, -self.cfg.max_len:]  # [B, T]
        last = self.backbone(histories)[:, -1]  # [B, d] state after the newest item
        scores = last @ self.backbone.item_embedding.weight.T  # [B, N+1] one matrix product, column 0 = pad
        scores[:, 0] = -math.inf
        return scores


# ---- BERT4Rec over item ids ----------------------------------------------------------------
@dataclass(frozen=True)
class BERT4RecConfig(ItemLossFields):
    hidden_size: int = 64  # (int) model width d (paper on Beauty and RecBole: 64)
    n_layers: int = 2  # (int) transformer blocks (paper, RecBole: 2)
    n_heads: int = 2  # (int) attention heads (paper, RecBole: 2)
    inner_size: int = 256  # (int) feed-forward width (paper, RecBole: 4 d = 256)
    dropout: float = 0.2  # (float) embedding / residual dropout (RecBole: 0.2; paper: 0.5 hidden)
    attn_dropout: float = 0.2  # (float) attention-probability dropout (paper, RecBole: 0.2)
    max_len: int = 50  # (int) window incl. the appended [MASK] at scoring time (paper: 50)
    mask_ratio: float = 0.2  # (float) Cloze probability of masking each real item (RecBole: 0.2)
    ft_ratio: float = 0.5  # (float) probability that a sequence masks only its last item (RecBole: 0.5)
    init_std: float = 0.02  # (float) std of the normal weight init (RecBole: 0.02)

    def __post_init__(self) -> None:
        check_transformer_config(self, "hidden_size", "n_heads", ranges={
            "hidden_size": "[1, inf)", "n_layers": "[1, inf)", "n_heads": "[1, inf)", "inner_size": "[1, inf)",
            "dropout": "[0, 1)", "attn_dropout": "[0, 1)", "max_len": "[2, inf)", "mask_ratio": "[0, 1]",
            "ft_ratio": "[0, 1]", "init_std": "[0, inf)"})
        check_item_loss_fields(self)  # chunked / sampled item loss fields


class BERT4RecID(SequentialRecommender):
    """Bidirectional transformer over item ids, Cloze training, full-softmax CE at masked positions."""

    name = "BERT4Rec-ID"

    def __init__(self, num_items: int, cfg: BERT4RecConfig = BERT4RecConfig()):
        super().__init__()
        self.num_items, self.cfg = num_items, cfg
        self.mask_token = num_items + 1  # [MASK] id, after every item id
        self.backbone = _ItemTransformer(
            num_items + 2, cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.inner_size,
            cfg.dropout, cfg.attn_dropout, cfg.max_len, causal=False, init_std=cfg.init_std,
        )
        # BERT's prediction head: transform, then tied item embeddings + an output bias
        self.head = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.GELU(), nn.LayerNorm(cfg.hidden_size))
        self.head.apply(lambda m: init_weights(m, cfg.init_std))
        self.output_bias = nn.Parameter(torch.zeros(num_items + 1))  # [N+1], entry 0 (padding) unused

    def _item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Masked-position states [M, d] -> logits over item ids 1..N [M, N]."""
        weight = self.backbone.item_embedding.weight[1 : self.num_items + 1]  # [N, d]
        return torch.addmm(self.output_bias[1:], self.head(hidden), weight.T)

    def cloze_mask(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool [B, T]: which real (non-padding) positions to replace by [MASK].

        Each sequence is, with probability ``ft_ratio``, masked at its last item only; otherwise each
        real item is masked independently with probability ``mask_ratio``. Padding is never masked.
        """
        real = sequences != 0  # [B, T]
        draws = torch.rand(sequences.shape, generator=generator, device=sequences.device)  # [B, T]
        cloze = (draws < self.cfg.mask_ratio) & real
        tail_only = torch.rand(sequences.shape[0], generator=generator, device=sequences.device) < self.cfg.ft_ratio
        last = torch.zeros_like(real)
        last[:, -1] = real[:, -1]  # left padding: the newest item is the last column
        return torch.where(tail_only.unsqueeze(1), last, cloze)

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        masked = self.cloze_mask(sequences, generator)  # [B, T]
        if not masked.any():
            return LossOutput(_zero_loss(self), {"ce": 0.0, "targets": 0.0})
        inputs = sequences.masked_fill(masked, self.mask_token)  # [B, T]
        hidden = self.backbone.forward_by_length(inputs)  # [B, T, d]
        if self.cfg.item_loss != "full":  # chunked / sampled item loss (qbert4rec_lib.models.itemloss)
            loss = _dot_item_loss(self, self.head(hidden[masked]),
                                  self.backbone.item_embedding.weight[1: self.num_items + 1],
                                  self.output_bias[1:], sequences[masked] - 1, generator)
            return LossOutput(loss, {"ce": loss.detach(), "targets": masked.sum()})
        logits = self.mask_unknown_items(self._item_logits(hidden[masked]))  # [M, N]
        loss = F.cross_entropy(logits, sequences[masked] - 1)
        return LossOutput(loss, {"ce": loss.detach(), "targets": masked.sum()})  # tensors: no host sync per step

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        mask_column = torch.full((histories.shape[0], 1), self.mask_token, dtype=histories.dtype, device=histories.device)
        inputs = torch.cat([histories[:, -(self.cfg.max_len - 1):], mask_column], dim=1)  # [B, T] ends with [MASK]
        last = self.head(self.backbone(inputs)[:, -1])  # [B, d]
        scores = torch.addmm(self.output_bias, last, self.backbone.item_embedding.weight[: self.num_items + 1].T)
        scores[:, 0] = -math.inf  # [B, N+1]: column 0 is padding, the [MASK] row is left out
        return scores
