"""The one model contract every sequential recommender in the kit follows (RecBole-like).

* ``loss(sequences, generator) -> LossOutput``: a training loss on a batch of *left-padded*
  training sequences ``[B, T]`` (item ids, 0 = padding at the left). Each model builds its own
  targets: SASRec predicts every next item, BERT-style models mask positions.
* ``score_all(histories) -> [B, N + 1]``: scores for **all** items given left-padded histories
  (the next item is predicted after the last position). Column 0 (padding) is ignored by the
  evaluator. Full ranking, no sampled candidates. The evaluator calls it inside ``with
  model.scoring():`` (weights fixed), where a model may reuse per-item work across batches.

``pad_left`` turns a list of id arrays into the padded tensor both methods take;
``length_groups`` splits a left-padded batch into groups of similar length so that a transformer
runs each group on its own last columns only (identical values, far less work on padding).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["LossOutput", "SequentialRecommender", "pad_left", "length_groups", "LENGTH_GROUP_WIDTHS"]

# Upper bounds of the length groups (the last group is "up to the batch width"). Beauty's training
# sequences have median length 5 and mean 6.9 in a window of 50, so most rows fall in the first groups.
LENGTH_GROUP_WIDTHS: tuple[int, ...] = (4, 6, 8, 12, 16, 24, 32)


class LossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, to backpropagate
    parts: dict[str, float]  # named components for logging: detached floats or 0-dim tensors (no host sync per step)


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement :meth:`loss` and :meth:`score_all`."""

    name: str = "model"
    num_items: int
    # bool [N + 1] (index = item id) or None: the items that exist while the model trains. Items marked False
    # (cold-start items, :mod:`qbert4rec_lib.experiments.coldstart`) get a -inf logit in every training softmax, so they are
    # neither targets nor negatives; None (the default) = every item exists.
    train_item_mask: torch.Tensor | None = None
    # int [N + 1] training interaction counts or None: the popularity sampler of
    # item_loss="sampled" (:mod:`qbert4rec_lib.models.itemloss`) draws negatives from them; not a buffer (no state_dict change)
    item_sampling_counts: torch.Tensor | None = None

    def mask_unknown_items(self, logits: torch.Tensor) -> torch.Tensor:
        """``[M, N]`` logits over item ids ``1..N`` with the items outside :attr:`train_item_mask` at -inf."""
        mask = self.train_item_mask
        if mask is None:
            return logits
        return logits.masked_fill(~mask[1:].to(logits.device), float("-inf"))

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        raise NotImplementedError

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Context for many :meth:`score_all` calls with fixed weights (an evaluation): a model may compute
        what does not depend on the history (e.g. every item's output vector) once on entry and drop it on
        exit. The default does nothing."""
        yield


def pad_left(seqs: Sequence[np.ndarray], max_len: int, pad: int = 0) -> torch.Tensor:
    """Left-pad (and left-truncate) id arrays to ``[len(seqs), max_len]`` int64."""
    out = np.full((len(seqs), max_len), pad, dtype=np.int64)
    for row, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-max_len:]
        if len(s):
            out[row, max_len - len(s):] = s
    return torch.from_numpy(out)


def length_groups(lengths: torch.Tensor, width: int,
                  bounds: Sequence[int] = LENGTH_GROUP_WIDTHS) -> list[tuple[torch.Tensor, int]]:
    """Split the rows of a left-padded ``[B, width]`` batch by length: ``[(rows [b], w), ...]``.

    Row ``r`` of length ``lengths[r]`` lands in the first group whose bound is ``>= lengths[r]``;
    ``w`` is the longest length in that group, so the group runs on its last ``w`` columns only.
    Empty rows (length 0) join the first group (their one column is all padding). Because the
    kit's models use right-aligned positions and mask padding keys, a row's outputs on its real
    positions do not depend on how many padding columns it carries: the groups give the same
    values as the full batch. ``bounds=()`` gives one group, the whole batch.
    """
    groups, lower = [], -1
    for upper in [b for b in bounds if b < width] + [width]:
        rows = torch.nonzero((lengths > lower) & (lengths <= upper)).squeeze(1)  # [b]
        lower = upper
        if len(rows):
            groups.append((rows, max(1, int(lengths[rows].max()))))
    return groups
