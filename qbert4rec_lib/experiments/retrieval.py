"""Top-K retrieval for Q-Bert4Rec by beam search over the semantic-ID prefix tree (issue 16).

Full ranking (:meth:`QBert4Rec.score_all`) scores all ``N`` items for every user: ``O(N)`` per user. Beam
search walks the tree of semantic-ID prefixes that **exist in the catalog** (:class:`PrefixTrie`, built from
``model.item_tokens``) one level at a time, keeps the ``beam_width`` best prefixes per level, and at the end
ranks the items under the surviving leaves by their **full score** (the one :meth:`score_all` gives). Its cost
per user is about ``beam_width x (children per prefix)`` per level, independent of ``N`` once the tree is deep.

How a prefix is scored depends on the head (read :mod:`qbert4rec_lib.models.qbert_head` for the heads):

* ``item_head="level_sum"``: a prefix ``(c_1..c_l)`` scores ``sum_{j<=l} log p_j(c_j | h)``, the per-level
  log-probabilities the head already produces (:meth:`QBert4Rec.next_item_log_probs`). Every term is ``<= 0``,
  so a prefix's score is an **upper bound** of the full score of every item below it, and the full score of an
  item is its leaf's score (+ ``item_score_bias`` if the model has one). This is the textbook generative-
  retrieval beam (TIGER).
* ``item_head="token_mlp"`` (the default head): an item scores ``g(h) . v_i + prior_i`` with ``v_i`` an MLP of
  the *whole* token tuple, so there is **no per-level factorisation** and no trained per-level head (its
  ``level_loss_weight`` must be 0). Because the score is linear in ``(v_i, prior_i)``, the *mean* score of the
  items below a prefix equals ``g(h) . mean(v) + mean(prior)`` exactly, computed from one ``[d + 1]`` vector per
  prefix (:meth:`PrefixTrie.node_means`, built once per call from :meth:`QBert4Rec.item_vectors`). The beam keeps
  the prefixes whose items score best *on average*: a heuristic (an item can score high under a prefix whose mean
  is low), so recall at small beams is an empirical question — :func:`evaluate_beam` measures it. The final
  ranking uses the exact full score.

With ``beam_width >=`` the number of nodes on every level nothing is pruned and :func:`beam_search` returns
exactly :func:`full_topk` (ids and order; a test checks both heads). Ties are broken by the smaller item id in
both functions. History exclusion follows the evaluator: the user's history items are removed from the returned
list (never from the prefix tree), and :func:`evaluate_beam` keeps the target's own score even when the target is
in the history.

:func:`evaluate_beam` is :func:`qbert4rec_lib.experiments.evaluate.evaluate`'s protocol with beam retrieval: leave-one-out,
the target ranked among the *retrieved* items (the items under the final beam) with pessimistic ties, and a
target that is not retrieved counts as a miss (rank ``N + 1``: HR@K and NDCG@K are 0 for it; MRR is then a lower
bound, ``1 / (N + 1)`` for a miss).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .evaluate import EvalConfig, EvalResult, _model_device, metrics_from_ranks
from ..models.base import pad_left

__all__ = ["PrefixTrie", "BeamResult", "beam_search", "full_topk", "evaluate_beam", "evaluate_split_beam",
           "beam_protocol_text"]

_SPECIALS = 2  # QBert4Rec stores token c of a level in row c + 2 (rows 0, 1 = PAD, MASK)


class PrefixTrie:
    """The prefixes of a semantic-ID table that exist in the catalog, level by level (CSR arrays, numpy).

    ``tokens``: int ``[N, L]``, row ``k`` = item ``k + 1``'s token per level (no specials offset). Level ``l``
    (``0..L-1``) holds one node per distinct prefix of length ``l + 1``; level ``L`` holds the items (one node per
    item, so duplicate ID tuples are allowed). Nodes of a level are sorted lexicographically, so the children of
    a node are the contiguous range ``[child_start[l][p], child_start[l][p] + child_count[l][p])`` of level
    ``l`` (``p`` indexes level ``l - 1``; for ``l = 0`` the single root ``p = 0``).
    """

    def __init__(self, tokens: np.ndarray):
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or len(tokens) == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"PrefixTrie: expected a non-empty int [N, L] token table, got {tokens.dtype} {tokens.shape}")
        if tokens.min() < 0:
            raise ValueError("PrefixTrie: tokens must be >= 0")
        N, L = tokens.shape
        self.num_items, self.num_levels = N, L
        order = np.lexsort(tokens.T[::-1])  # items sorted by (level 0, level 1, ...), ties by item index
        srt = tokens[order]
        self.token: list[np.ndarray] = []  # [n_l] token of each node (levels 0..L-1)
        self.parent: list[np.ndarray] = []  # [n_l] node index at level l - 1 (0 = root for level 0)
        self.node_of_item: list[np.ndarray] = []  # [N] node of item k + 1 at level l
        parent_of_sorted = np.zeros(N, dtype=np.int64)
        for level in range(L):
            new = np.ones(N, dtype=bool)
            new[1:] = (srt[1:, : level + 1] != srt[:-1, : level + 1]).any(axis=1)
            node_sorted = np.cumsum(new) - 1  # [N] node id per sorted item
            first = np.flatnonzero(new)
            self.token.append(srt[first, level].astype(np.int64))
            self.parent.append(parent_of_sorted[first])
            node = np.empty(N, dtype=np.int64)
            node[order] = node_sorted
            self.node_of_item.append(node)
            parent_of_sorted = node_sorted
        # level L: the items themselves, in sorted order
        self.item_of_leaf_slot = (order + 1).astype(np.int64)  # [N] item id of item-level node j
        self.parent.append(parent_of_sorted)
        self.child_start: list[np.ndarray] = []
        self.child_count: list[np.ndarray] = []
        for level in range(L + 1):
            n_parents = 1 if level == 0 else len(self.parent[level - 1])
            p = self.parent[level]
            start = np.searchsorted(p, np.arange(n_parents), side="left")
            self.child_start.append(start.astype(np.int64))
            self.child_count.append((np.searchsorted(p, np.arange(n_parents), side="right") - start).astype(np.int64))
        self._torch: dict = {}

    @classmethod
    def from_model(cls, model) -> "PrefixTrie":
        """The trie of a :class:`~qbert4rec_lib.models.qbert.QBert4Rec`'s ``item_tokens`` buffer."""
        return cls(model.item_tokens[1:].detach().cpu().numpy() - _SPECIALS)

    def level_sizes(self) -> list[int]:
        """Nodes per level (the last entry = items)."""
        return [len(p) for p in self.parent]

    def tensors(self, device) -> dict:
        """The arrays as torch tensors on ``device`` (cached per device)."""
        key = str(device)
        if key not in self._torch:
            t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
            self._torch[key] = {"token": [t(a) for a in self.token], "start": [t(a) for a in self.child_start],
                                "count": [t(a) for a in self.child_count], "items": t(self.item_of_leaf_slot)}
        return self._torch[key]

    def node_means(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per level ``l < L``: ``[n_l, D]`` mean of ``values [N, D]`` (row k = item k + 1) over the items below
        each node; level ``L``: ``values`` in item-node order."""
        out = []
        for level in range(self.num_levels):
            index = torch.as_tensor(self.node_of_item[level], device=values.device)
            n = len(self.token[level])
            sums = values.new_zeros(n, values.shape[1]).index_add_(0, index, values)
            counts = values.new_zeros(n).index_add_(0, index, values.new_ones(len(index)))
            out.append(sums / counts.unsqueeze(1))
        out.append(values[torch.as_tensor(self.item_of_leaf_slot - 1, device=values.device)])
        return out


class BeamResult(NamedTuple):
    items: torch.Tensor  # int64 [B, k] item ids, best first; 0 where fewer than k items were retrieved
    scores: torch.Tensor  # float [B, k] their full scores (-inf for the 0 fillers)


def _check_model(model) -> None:
    if not hasattr(model, "item_tokens") or not hasattr(model, "num_levels"):
        raise TypeError(f"beam search needs a QBert4Rec (semantic-ID model), got {type(model).__name__}")


class _Scorer:
    """Per-user scoring state for one batch: what a node's score is at each level (see the module doc)."""

    def __init__(self, model, trie: PrefixTrie, means: list[torch.Tensor] | None, histories: torch.Tensor):
        self.model, self.trie = model, trie
        self.level_sum = model.item_encoder is None
        if self.level_sum:
            self.log_probs = model.next_item_log_probs(histories)  # L x [B, V_l]
            self.g = None
        else:
            vectors = model._scoring_vectors if model._scoring_vectors is not None else None
            if vectors is None:
                vectors = model.item_vectors()
            h = model._next_hidden(histories, vectors)  # [B, d]
            self.g = torch.cat([model.item_head_transform(h), h.new_ones(len(h), 1)], dim=1)  # [B, d + 1]
            self.means = means  # (L + 1) x [n_l, d + 1] (prior in the last column, bias folded in)
        self.bias = model.item_score_bias

    def score(self, level: int, nodes: torch.Tensor, parent_scores: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` of candidate ``nodes [B, C]`` at ``level`` whose parents scored ``parent_scores``."""
        t = self.trie.tensors(nodes.device)
        L = self.trie.num_levels
        if self.level_sum:
            if level < L:
                return parent_scores + self.log_probs[level].gather(1, t["token"][level][nodes])
            if self.bias is None:
                return parent_scores  # an item's full score = its leaf's summed log-probabilities
            return parent_scores + self.bias[t["items"][nodes] - 1]
        table = self.means[level]  # [n_l, d + 1]
        B, C = nodes.shape
        if table.shape[0] <= 4 * C:  # dense: all nodes of the level at once, then gather
            return (self.g @ table.T).gather(1, nodes)
        # gathered: [b, C, d + 1] vectors, in slices of users so that memory stays bounded
        rows = max(1, (1 << 22) // max(1, C * table.shape[1]))
        out = []
        for lo in range(0, B, rows):
            vecs = table[nodes[lo: lo + rows]]  # [b, C, d + 1]
            out.append(torch.bmm(vecs, self.g[lo: lo + rows].unsqueeze(2)).squeeze(2))
        return torch.cat(out)


def _prepare_means(model, trie: PrefixTrie) -> list[torch.Tensor] | None:
    if model.item_encoder is None:
        return None
    vectors = model._scoring_vectors if model._scoring_vectors is not None else model.item_vectors()  # [N, d + 1]
    if model.item_score_bias is not None:
        vectors = vectors.clone()
        vectors[:, -1] += model.item_score_bias
    return trie.node_means(vectors)


def _beam_candidates(model, trie: PrefixTrie, means, histories: torch.Tensor, beam_width: int):
    """The item-level candidates of one batch: ``items [B, C]`` (0 = none) and their full scores ``[B, C]``."""
    t = trie.tensors(histories.device)
    B = histories.shape[0]
    scorer = _Scorer(model, trie, means, histories)
    beam = torch.zeros(B, 1, dtype=torch.long, device=histories.device)  # the root
    beam_scores = torch.zeros(B, 1, device=histories.device)
    alive = torch.ones(B, 1, dtype=torch.bool, device=histories.device)
    L = trie.num_levels
    for level in range(L + 1):
        start = t["start"][level][beam]  # [B, b]
        count = t["count"][level][beam].masked_fill(~alive, 0)
        width = max(1, int(count.max()))
        offsets = torch.arange(width, device=beam.device)  # [w]
        ok = offsets < count.unsqueeze(2)  # [B, b, w]
        nodes = (start.unsqueeze(2) + offsets).masked_fill(~ok, 0).reshape(B, -1)  # [B, b * w]
        parents = beam_scores.unsqueeze(2).expand(-1, -1, width).reshape(B, -1)
        scores = scorer.score(level, nodes, parents).masked_fill(~ok.reshape(B, -1), -math.inf)  # [B, C]
        if level == L:
            items = t["items"][nodes].masked_fill(~ok.reshape(B, -1), 0)
            return items, scores
        keep = min(beam_width, scores.shape[1])
        beam_scores, pick = scores.topk(keep, dim=1)  # [B, keep]
        beam = nodes.gather(1, pick)
        alive = torch.isfinite(beam_scores)
    raise AssertionError("unreachable")


def _order(items: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Column order [B, C]: score descending, ties by smaller item id (0 fillers last)."""
    by_id = torch.argsort(items.masked_fill(items == 0, torch.iinfo(items.dtype).max), dim=1, stable=True)
    s = scores.gather(1, by_id)
    return by_id.gather(1, torch.argsort(-s, dim=1, stable=True))


def _exclude(items: torch.Tensor, scores: torch.Tensor, histories: torch.Tensor, keep: torch.Tensor | None = None):
    """Scores with the user's history items at -inf (``keep [B]``: an item id never excluded, e.g. the target)."""
    seen = (items.unsqueeze(2) == histories.unsqueeze(1)).any(dim=2) & (items > 0)  # [B, C]
    if keep is not None:
        seen &= items != keep.unsqueeze(1)
    return scores.masked_fill(seen, -math.inf)


def _batches(model, histories, batch_size: int):
    device = _model_device(model)
    max_len = model.config.max_len
    for lo in range(0, len(histories), batch_size):
        chunk = histories[lo: lo + batch_size]
        width = max(1, max((min(len(h), max_len) for h in chunk), default=1))
        yield lo, pad_left(chunk, width).to(device)


def _as_list(histories) -> list[np.ndarray]:
    if isinstance(histories, torch.Tensor):
        if histories.dim() != 2:
            raise ValueError(f"histories: expected [B, T] left-padded ids, got shape {tuple(histories.shape)}")
        return [row[row > 0].cpu().numpy() for row in histories]
    return [np.asarray(h, dtype=np.int64) for h in histories]


def _check_args(model, k: int, beam_width: int | None = None) -> None:
    _check_model(model)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if beam_width is not None and (not isinstance(beam_width, int) or beam_width < 1):
        raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")


@torch.no_grad()
def beam_search(model, histories, k: int = 10, beam_width: int = 20, *, exclude_history: bool = True,
                trie: PrefixTrie | None = None, batch_size: int = 256) -> BeamResult:
    """Top-``k`` items per user by beam search of width ``beam_width`` over the semantic-ID prefix tree.

    ``histories``: a list of id arrays or a left-padded ``[B, T]`` tensor. Returns :class:`BeamResult` (ids and
    full scores, best first; id 0 / -inf pads a row that retrieved fewer than ``k`` items). Runs in eval mode
    (restored afterwards) and inside ``model.scoring()``.
    """
    _check_args(model, k, beam_width)
    histories = _as_list(histories)
    trie = trie or PrefixTrie.from_model(model)
    was_training = model.training
    model.eval()
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.inference_mode(), model.scoring():
            means = _prepare_means(model, trie)
            for _, hist in _batches(model, histories, batch_size):
                items, scores = _beam_candidates(model, trie, means, hist, beam_width)
                if exclude_history:
                    scores = _exclude(items, scores, hist)
                out += _top(items, scores, k)
    finally:
        model.train(was_training)
    return BeamResult(torch.cat([a for a, _ in out]), torch.cat([b for _, b in out]))


def _top(items: torch.Tensor, scores: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = _order(items, scores)[:, :k]
    top_items, top_scores = items.gather(1, order), scores.gather(1, order)
    top_items = top_items.masked_fill(~torch.isfinite(top_scores), 0)
    if top_items.shape[1] < k:  # fewer candidates than k: pad
        pad = k - top_items.shape[1]
        top_items = torch.cat([top_items, top_items.new_zeros(len(top_items), pad)], dim=1)
        top_scores = torch.cat([top_scores, top_scores.new_full((len(top_scores), pad), -math.inf)], dim=1)
    return [(top_items.cpu(), top_scores.cpu())]


@torch.no_grad()
def full_topk(model, histories, k: int = 10, *, exclude_history: bool = True, batch_size: int = 256) -> BeamResult:
    """The exact top-``k`` by :meth:`score_all` (every item scored), same tie-break and exclusion as
    :func:`beam_search`: the reference beam search is measured against."""
    _check_args(model, k)
    histories = _as_list(histories)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), model.scoring():
            for _, hist in _batches(model, histories, batch_size):
                scores = model.score_all(hist).float().clone()  # [B, N + 1]
                if exclude_history:
                    scores.scatter_(1, hist, -math.inf)  # history out (padding 0 hits column 0)
                scores = scores[:, 1:]  # [B, N]
                items = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(scores)
                out += _top(items, scores, k)
    finally:
        model.train(was_training)
    return BeamResult(torch.cat([a for a, _ in out]), torch.cat([b for _, b in out]))


def beam_protocol_text(cfg: EvalConfig, split: str, num_items: int, beam_width: int) -> str:
    history = "user's history items excluded" if cfg.exclude_history else "user's history items kept"
    return (f"leave-one-out, beam search of width {beam_width} over the semantic-ID prefix tree of {num_items:,} items, "
            f"target ranked among the retrieved items (not retrieved = miss), {history}, pessimistic ties, {split} split")


@torch.no_grad()
def evaluate_beam(model, histories: Sequence[np.ndarray], targets, num_items: int, cfg: EvalConfig = EvalConfig(),
                  *, beam_width: int = 20, split_name: str = "test", trie: PrefixTrie | None = None,
                  progress: bool = False) -> EvalResult:
    """:func:`qbert4rec_lib.experiments.evaluate.evaluate` with beam retrieval instead of full ranking.

    Each target's rank is ``1 + #(other retrieved items scoring >= the target)`` (pessimistic ties; history items
    excluded except the target itself, as in the evaluator); a target the beam does not retrieve gets rank
    ``num_items + 1`` (a miss at every cut-off). ``cfg.tie_break`` must be ``"pessimistic"``.
    """
    _check_args(model, 1, beam_width)
    if cfg.tie_break != "pessimistic":
        raise ValueError("evaluate_beam supports tie_break='pessimistic' only")
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets) or len(targets) == 0:
        raise ValueError(f"evaluate_beam: {len(histories)} histories and {len(targets)} targets (need equal, > 0)")
    if num_items != model.num_items:
        raise ValueError(f"evaluate_beam: num_items {num_items} but the model has {model.num_items} items")
    if targets.min() < 1 or targets.max() > num_items:
        raise ValueError(f"evaluate_beam: targets must lie in 1..{num_items}")
    start = time.perf_counter()
    histories = [np.asarray(h, dtype=np.int64) for h in histories]
    max_len = model.config.max_len
    order = np.argsort([min(len(h), max_len) for h in histories], kind="stable")  # as the evaluator: by length
    trie = trie or PrefixTrie.from_model(model)
    ranks = np.empty(len(targets), dtype=np.int64)
    was_training = model.training
    model.eval()
    chunks = range(0, len(order), cfg.batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"beam evaluate ({split_name})", leave=False)
    try:
        with torch.inference_mode(), model.scoring():
            means = _prepare_means(model, trie)
            device = _model_device(model)
            for lo in chunks:
                users = order[lo: lo + cfg.batch_size]
                width = max(1, max(min(len(histories[u]), max_len) for u in users))
                hist = pad_left([histories[u] for u in users], width).to(device)
                target = torch.as_tensor(targets[users], device=device)
                items, scores = _beam_candidates(model, trie, means, hist, beam_width)  # [B, C]
                if cfg.exclude_history:
                    scores = _exclude(items, scores, hist, keep=target)
                is_target = items == target.unsqueeze(1)  # [B, C]
                found = is_target.any(dim=1)
                target_score = scores.masked_fill(~is_target, -math.inf).max(dim=1).values  # [B]
                others = torch.isfinite(scores) & ~is_target & (scores >= target_score.unsqueeze(1))
                rank = 1 + others.sum(dim=1)
                ranks[users] = torch.where(found & torch.isfinite(target_score), rank,
                                           torch.full_like(rank, num_items + 1)).cpu().numpy()
    finally:
        model.train(was_training)
    return EvalResult(metrics=metrics_from_ranks(ranks, cfg), num_users=len(targets),
                      protocol=beam_protocol_text(cfg, split_name, num_items, beam_width),
                      seconds=time.perf_counter() - start, ranks=ranks)


def evaluate_split_beam(model, split, which: str = "test", cfg: EvalConfig = EvalConfig(), *, beam_width: int = 20,
                        trie: PrefixTrie | None = None, progress: bool = False) -> EvalResult:
    """:func:`evaluate_beam` on a :class:`~qbert4rec_lib.data.LeaveOneOutSplit` (``which`` = valid | test)."""
    if which not in ("valid", "test"):
        raise ValueError(f"evaluate_split_beam: which must be 'valid' or 'test', got {which!r}")
    histories = split.valid_history if which == "valid" else split.test_history
    targets = split.valid_target if which == "valid" else split.test_target
    return evaluate_beam(model, histories, targets, split.num_items, cfg, beam_width=beam_width, split_name=which,
                         trie=trie, progress=progress)
