"""Stage 1 for items without a trained ID query (new items, cold start): encode them through the frozen fusion model
with a stand-in query (:func:`encode_with_queries`), or learn the one "unknown item" query that best fuses the
trained items' modalities (:func:`fit_unknown_query`). Used by :mod:`~qbert4rec_lib.experiments.coldstart_ids`.
"""
from __future__ import annotations

import torch
from torch import nn

from .fusion import multi_view_loss
from .fusion_model import FusionModel, FusionOutput

__all__ = ["encode_with_queries", "fit_unknown_query"]


@torch.no_grad()
def encode_with_queries(model: FusionModel, features: dict[str, torch.Tensor], present: torch.Tensor,
                        queries: torch.Tensor) -> FusionOutput:
    """Inference (hard exit) for items that have no row in ``model.id_queries``: row ``b`` uses ``queries[b]``
    wherever a trained item uses its own query ``q_i`` (alignment query, ID token, ``h^(0)``).

    ``features[m]`` ``[B, J, d_m]``, ``present`` ``[B, M]`` bool, ``queries`` ``[B, width]``. The model is frozen.
    """
    model.eval()
    trained = model.id_queries
    model.id_queries = nn.Embedding.from_pretrained(queries.to(trained.weight.device, trained.weight.dtype))
    try:
        return model(torch.arange(len(queries), device=trained.weight.device), features, present, hard_exit=True)
    finally:
        model.id_queries = trained


class _SharedQuery(nn.Module):
    """Stands in for ``id_queries``: every row gets the same (trainable) vector."""

    def __init__(self, query: torch.Tensor):
        super().__init__()
        self.query = query

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.query.unsqueeze(0).expand(len(rows), -1)


def fit_unknown_query(model: FusionModel, features: dict[str, torch.Tensor], present: torch.Tensor, *,
                      steps: int = 300, batch_size: int = 256, lr: float = 1e-2, seed: int = 0) -> torch.Tensor:
    """A learned "unknown item" query ``[width]`` for a *frozen* stage-1 model: the one vector that, used as every
    item's query, minimises the multi-view loss on the given (trained) items. ``present`` should already hide the
    modalities a new item lacks (e.g. structural), so the query learns to fuse without them. Starts at the mean
    of the trained queries."""
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    trained = model.id_queries
    query = trained.weight.mean(0).detach().clone().requires_grad_(True)  # [width]
    model.id_queries = _SharedQuery(query)
    try:
        optimizer = torch.optim.Adam([query], lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            rows = torch.randperm(len(present), generator=generator)[:batch_size]
            out = model(rows, {m: v[rows] for m, v in features.items()}, present[rows], hard_exit=False)
            loss = multi_view_loss(out, present[rows], model.modality_names, model.cfg).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return query.detach()
    finally:
        model.id_queries = trained
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
