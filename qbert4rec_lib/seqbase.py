"""The one model contract every sequential recommender in the kit follows (RecBole-like).

* ``loss(sequences, generator) -> LossOutput``: a training loss on a batch of *left-padded*
  training sequences ``[B, T]`` (item ids, 0 = padding at the left). Each model builds its own
  targets: SASRec predicts every next item, BERT-style models mask positions.
* ``score_all(histories) -> [B, N + 1]``: scores for **all** items given left-padded histories
  (the next item is predicted after the last position). Column 0 (padding) is ignored by the
  evaluator. Full ranking, no sampled candidates.

``pad_left`` turns a list of id arrays into the padded tensor both methods take.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["LossOutput", "SequentialRecommender", "pad_left"]


class LossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, to backpropagate
    parts: dict[str, float]  # named components for logging (already detached floats)


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement :meth:`loss` and :meth:`score_all`."""

    name: str = "model"
    num_items: int

    def loss(self, sequences: torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        raise NotImplementedError

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def pad_left(seqs: Sequence[np.ndarray], max_len: int, pad: int = 0) -> torch.Tensor:
    """Left-pad (and left-truncate) id arrays to ``[len(seqs), max_len]`` int64."""
    out = np.full((len(seqs), max_len), pad, dtype=np.int64)
    for row, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-max_len:]
        if len(s):
            out[row, max_len - len(s):] = s
    return torch.from_numpy(out)
