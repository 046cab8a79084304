"""The data behind the explorers' views (:mod:`qbert4rec_lib.kit.explore`): plain functions, no widgets, no HTML.

Over a semantic-ID table (a :class:`~qbert4rec_lib.semantic.quantize.SemanticIDTable` or its ``ids`` array; row ``k``
= item id ``k + 1``): :func:`prefix_neighbours` (items sharing an item's first 1, 2, ... tokens),
:func:`history_tokens`, :func:`shared_token_flags` / :func:`shared_token_counts` / :func:`history_match` (which tokens
an item shares with a user's history, level by level). Over a model's ``score_all``: :func:`recommend` /
:func:`item_rank` (a user's top-k and one item's rank, the evaluator's protocol: history excluded, pessimistic ties)
and :func:`first_token_share`. :func:`popular_items` picks the items a view offers first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["prefix_neighbours", "history_tokens", "shared_token_flags", "shared_token_counts", "history_match",
           "recommend", "item_rank", "first_token_share", "popular_items"]


def _ids(table) -> np.ndarray:
    """A :class:`~qbert4rec_lib.semantic.quantize.SemanticIDTable` or its ``ids`` array -> ``int64 [N, columns]``."""
    return np.asarray(getattr(table, "ids", table), dtype=np.int64)


def popular_items(ds, n: int = 100, first: Sequence[int] = ()) -> list[int]:
    """``first`` then the ``n`` most interacted items (ties by id), without repeats."""
    order = np.argsort(-ds.item_counts()[1:], kind="stable")[:n] + 1
    return list(dict.fromkeys([int(i) for i in first] + [int(i) for i in order]))


def prefix_neighbours(table, item: int, lengths: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Prefix length -> the *other* items (ascending ids) whose semantic ID starts with ``item``'s first that-many
    tokens. ``lengths`` default: 1 .. the number of code levels (every column but the disambiguation token)."""
    ids = _ids(table)
    if not 1 <= item <= len(ids):
        raise IndexError(f"item id {item} outside 1..{len(ids)}")
    lengths = range(1, ids.shape[1]) if lengths is None else lengths
    own = ids[item - 1]
    out = {}
    for length in lengths:
        match = np.all(ids[:, :length] == own[:length], axis=1)
        match[item - 1] = False
        out[int(length)] = np.flatnonzero(match) + 1
    return out


def history_tokens(table, history: Sequence[int], columns: int | None = None) -> set[tuple[int, int]]:
    """The ``(level, token)`` pairs used by the history's items (levels 0-based; the first ``columns`` columns)."""
    ids = _ids(table)
    columns = ids.shape[1] if columns is None else columns
    return {(lvl, int(t)) for i in history for lvl, t in enumerate(ids[int(i) - 1][:columns])}


def shared_token_flags(table, item: int, history: Sequence[int], columns: int | None = None) -> list[bool]:
    """Per column of ``item``'s semantic ID: does some history item have the same token at the same level?"""
    ids = _ids(table)
    seen = history_tokens(ids, history, columns)
    row = ids[item - 1] if columns is None else ids[item - 1][:columns]
    return [(lvl, int(t)) in seen for lvl, t in enumerate(row)]


def shared_token_counts(table, items: Sequence[int], history: Sequence[int], columns: int | None = None) -> list[int]:
    """For each item, how many of its tokens (first ``columns`` columns) some history item has at the same level."""
    return [int(sum(shared_token_flags(table, int(i), history, columns))) for i in items]


def history_match(table, item: int, history: Sequence[int]) -> list[dict]:
    """Level by level, how ``item``'s semantic ID matches the history: one dict per column with the ``token``, how
    many history items have that token at that level (``same_token``), how many share the whole prefix up to and
    including it (``same_prefix``) and those items (``prefix_items``, most recent first)."""
    ids = _ids(table)
    hist = [int(i) for i in history]
    rows = ids[np.asarray(hist, dtype=np.int64) - 1] if hist else np.zeros((0, ids.shape[1]), dtype=np.int64)
    own = ids[item - 1]
    prefix_ok = np.ones(len(hist), dtype=bool)
    out = []
    for lvl in range(ids.shape[1]):
        same = rows[:, lvl] == own[lvl]
        prefix_ok &= same
        out.append({"level": lvl + 1, "token": int(own[lvl]), "same_token": int(same.sum()),
                    "same_prefix": int(prefix_ok.sum()),
                    "prefix_items": list(dict.fromkeys(hist[j] for j in np.flatnonzero(prefix_ok)[::-1]))})
    return out


def _scores(model, histories: Sequence[Sequence[int]], max_len: int):
    import torch

    from ..models.base import pad_left

    with torch.inference_mode():
        return model.score_all(pad_left(list(histories), max_len)).float()


def recommend(model, histories: Sequence[Sequence[int]], max_len: int, k: int = 10, exclude_history: bool = True,
              scores=None) -> np.ndarray:
    """Each user's top ``k`` item ids ``[U, k]`` under ``model.score_all`` (padding never; the user's own items not
    when ``exclude_history``). ``scores``: precomputed ``[U, N + 1]`` scores (not modified)."""
    import torch

    sc = (_scores(model, histories, max_len) if scores is None else torch.as_tensor(scores)).clone()
    sc[:, 0] = -float("inf")
    if exclude_history:
        for row, h in enumerate(histories):
            if len(h):
                sc[row, torch.as_tensor(np.asarray(h, dtype=np.int64))] = -float("inf")
    return torch.topk(sc, k, dim=1).indices.numpy()


def item_rank(scores, item: int, history: Sequence[int] = ()) -> int:
    """1-based rank of ``item`` among all items for one user's ``scores`` ``[N + 1]``, as the evaluator ranks a
    target: the history's other items excluded, ties counted ahead of the item (pessimistic)."""
    import torch

    from ..experiments.evaluate import rank_targets
    from ..models.base import pad_left

    sc = torch.as_tensor(scores, dtype=torch.float32).clone().reshape(1, -1)
    hist = pad_left([np.asarray(history, dtype=np.int64)], max(1, len(history)))
    return int(rank_targets(sc, torch.tensor([int(item)]), hist)[0])


def first_token_share(model, histories: Sequence[Sequence[int]], table, max_len: int, k: int = 10, seed: int = 0,
                      batch_size: int = 512) -> tuple[float, float]:
    """How often a user's top-``k`` items (history *not* excluded) share the first token with the user's last item,
    and the same share for ``k`` random items per user (``numpy`` generator seeded with ``seed``): ``(share, random)``."""
    ids = _ids(table)
    rng = np.random.default_rng(seed)
    hits, rand_hits = [], []
    for start in range(0, len(histories), batch_size):
        hs = histories[start:start + batch_size]
        tops = recommend(model, hs, max_len, k, exclude_history=False)
        for h, t in zip(hs, tops):
            last_first = ids[h[-1] - 1, 0]
            hits.append(np.mean(ids[t - 1, 0] == last_first))
            rand_hits.append(np.mean(ids[rng.integers(0, len(ids), k), 0] == last_first))
    return float(np.mean(hits)), float(np.mean(rand_hits))
