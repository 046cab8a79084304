"""The cold-start protocol: which items are new (:func:`cold_start_split`, by first appearance or at random), the
split without them, and how models are scored on warm and cold users (:func:`evaluate_cold`). Why each choice is
made: :mod:`~qbert4rec_lib.experiments.coldstart`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.dataset import LeaveOneOutSplit
from .evaluate import EvalConfig, EvalResult, evaluate, evaluate_scores, metrics_from_ranks

__all__ = ["SPLITS", "COLD_EVAL", "ColdStart", "first_appearance", "cold_start_split", "evaluate_users",
           "evaluate_cold", "evaluate_cold_scores"]

SPLITS = ("time", "random")
COLD_EVAL = EvalConfig(ks_hr=(10, 50), ks_ndcg=(10,))  # the cold-start metrics: HR@10, HR@50, NDCG@10 (+ MRR)


@dataclass
class ColdStart:
    """Items that do not exist at training time, and the splits without them."""

    split: LeaveOneOutSplit  # cold items removed from training parts and every history; targets as they are
    cold_items: np.ndarray  # int64 ids held out (sorted)
    cold_users: np.ndarray  # int64 user indices whose test target is a cold item
    warm_users: np.ndarray  # the other users
    train_split: LeaveOneOutSplit | None = None  # `split` with validation restricted to warm validation targets
    cold_valid_users: np.ndarray | None = None  # users whose validation target is cold (stage-1 path selection)
    train_full: list | None = None  # untruncated warm training sequences (structural features)
    by: str = "random"
    fraction: float = 0.1
    seed: int = 0

    @property
    def is_cold(self) -> np.ndarray:
        """bool ``[N + 1]`` indexed by item id."""
        mask = np.zeros(self.split.num_items + 1, dtype=bool)
        mask[self.cold_items] = True
        return mask

    @property
    def warm_rows(self) -> np.ndarray:
        """Rows (item id - 1) of the warm items, ascending."""
        return np.flatnonzero(~self.is_cold[1:])

    def train_item_mask(self) -> torch.Tensor:
        """bool ``[N + 1]``: True for the items that exist at training time (index 0 = padding, False)."""
        mask = torch.from_numpy(~self.is_cold)
        mask[0] = False
        return mask

    def key(self) -> str:
        from ..keys import stable_hash

        return stable_hash("coldstart-v1", self.by, self.fraction, self.seed, self.cold_items.tolist(),
                           self.split.max_len)

    def describe(self) -> str:
        how = ("arriving last (first appearance by relative position in the user's sequence)" if self.by == "time"
               else "drawn at random")
        return (f"{len(self.cold_items):,} of {self.split.num_items:,} items cold ({self.fraction:.0%}, {how}); "
                f"{len(self.cold_users):,} users with a cold test item, {len(self.warm_users):,} with a warm one")


def first_appearance(dataset) -> np.ndarray:
    """float ``[N + 1]``: each item's earliest interaction as a relative position in its user's sequence
    (0 = a first item, 1 = a last item; the time proxy of ``by="time"``). Index 0 and unseen items: +inf."""
    first = np.full(dataset.num_items + 1, np.inf)
    for s in dataset.sequences:
        s = np.asarray(s, dtype=np.int64)
        np.minimum.at(first, s, np.arange(len(s)) / max(len(s) - 1, 1))
    return first


def cold_start_split(dataset, fraction: float = 0.1, *, by: str = "time", seed: int = 0,
                     max_len: int = 50) -> ColdStart:
    """Hold out ``fraction`` of the items from training entirely (and from every history); see the module doc.

    Test targets stay as they are: users whose test target is a cold item measure how well a model recommends an item
    it has never seen in an interaction.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if by not in SPLITS:
        raise ValueError(f"by must be one of {SPLITS}, got {by!r}")
    base = dataset.split(max_len=0)
    n_cold = max(1, int(fraction * dataset.num_items))
    rng = np.random.default_rng(seed)
    if by == "random":
        cold = rng.choice(np.arange(1, dataset.num_items + 1), size=n_cold, replace=False)
    else:
        first = first_appearance(dataset)[1:]
        order = np.lexsort((rng.permutation(dataset.num_items), -first))  # latest arrival first, ties shuffled
        cold = order[:n_cold] + 1
    cold = np.sort(cold).astype(np.int64)
    is_cold = np.zeros(dataset.num_items + 1, dtype=bool)
    is_cold[cold] = True

    def drop(seqs, cut=max_len):
        out = [s[~is_cold[s]] for s in seqs]
        return [s[-cut:] if cut else s for s in out]

    split = LeaveOneOutSplit(train=drop(base.train), valid_history=drop(base.valid_history),
                             valid_target=base.valid_target, test_history=drop(base.test_history),
                             test_target=base.test_target, num_items=dataset.num_items, max_len=max_len)
    warm_valid = np.flatnonzero(~is_cold[base.valid_target])
    train_split = replace(split, valid_history=[split.valid_history[u] for u in warm_valid],
                          valid_target=split.valid_target[warm_valid])
    return ColdStart(split, cold, np.flatnonzero(is_cold[base.test_target]), np.flatnonzero(~is_cold[base.test_target]),
                     train_split=train_split, cold_valid_users=np.flatnonzero(is_cold[base.valid_target]),
                     train_full=drop(base.train, 0), by=by, fraction=fraction, seed=seed)


def evaluate_users(model, split, users: np.ndarray, cfg: EvalConfig = EvalConfig(), which: str = "test",
                   candidates: np.ndarray | None = None) -> EvalResult:
    """Evaluate on a subset of users (e.g. those whose target is a cold item); ``candidates``: rank among these
    item ids only (default: all items)."""
    hist = split.test_history if which == "test" else split.valid_history
    targ = split.test_target if which == "test" else split.valid_target
    return evaluate(model, [hist[u] for u in users], targ[users], split.num_items, cfg, max_len=split.max_len,
                    split_name=f"{which} ({len(users):,} selected users)", candidates=candidates)


def _summary(result: EvalResult | np.ndarray, cfg: EvalConfig = COLD_EVAL) -> dict:
    """HR@10, NDCG@10, HR@50, median rank and user count of an evaluation, or of 1-based ranks (metrics by ``cfg``)."""
    ranks = result.ranks if isinstance(result, EvalResult) else np.asarray(result)
    m = result.metrics if isinstance(result, EvalResult) else metrics_from_ranks(ranks, cfg)
    return {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"], "HR@50": m["HR@50"],
            "median_rank": float(np.median(ranks)), "users": int(len(ranks))}


def evaluate_cold(model, cs: ColdStart, cfg: EvalConfig = COLD_EVAL) -> dict[str, dict]:
    """``{"warm": ..., "cold": ..., "new_only": ..., "cold_valid": ..., "valid_all": ...}``, each HR@10, NDCG@10,
    HR@50, median rank, users. ``new_only`` = the cold users again, their target ranked among the new items only (a
    "new arrivals" shelf: is the right new item near the top of the new ones?). ``cold_valid`` = users whose
    validation item is cold, ranked from their validation history (never used in training); ``valid_all`` = every
    user's validation item (warm or cold), all items ranked."""
    out = {"warm": _summary(evaluate_users(model, cs.split, cs.warm_users, cfg)),
           "cold": _summary(evaluate_users(model, cs.split, cs.cold_users, cfg)),
           "new_only": _summary(evaluate_users(model, cs.split, cs.cold_users, cfg, candidates=cs.cold_items))}
    if cs.cold_valid_users is not None and len(cs.cold_valid_users):
        out["cold_valid"] = _summary(evaluate_users(model, cs.split, cs.cold_valid_users, cfg, which="valid"))
        # every user's validation item (warm or new), all items ranked: what a new item's ID costs the warm users
        # shows here too (a new item ranked high where it is not wanted pushes a warm target down)
        out["valid_all"] = _summary(evaluate_users(model, cs.split, np.arange(len(cs.split.valid_target)), cfg,
                                                   which="valid"))
    return out


def evaluate_cold_scores(test_scores: np.ndarray, valid_scores: np.ndarray, cs: ColdStart,
                         cfg: EvalConfig = COLD_EVAL) -> dict[str, dict]:
    """:func:`evaluate_cold` for fixed per-user scores ``[U, N + 1]`` of the test and the validation items (users in
    split order, e.g. the generated catalog's oracle, :func:`~qbert4rec_lib.data.oracle.oracle_scores`): the same
    groups, ranking rules and metrics."""
    summary = lambda ranks: _summary(ranks, cfg)  # noqa: E731
    test = evaluate_scores(test_scores, cs.split, "test", cfg).ranks
    shelf = np.array(test_scores, dtype=np.float64)  # the new-arrivals shelf: every warm item hidden
    hidden = np.ones(shelf.shape[1], dtype=bool)
    hidden[cs.cold_items] = False
    shelf[:, hidden] = -np.inf
    new_only = evaluate_scores(shelf, cs.split, "test", cfg).ranks
    out = {"warm": summary(test[cs.warm_users]), "cold": summary(test[cs.cold_users]),
           "new_only": summary(new_only[cs.cold_users])}
    if cs.cold_valid_users is not None and len(cs.cold_valid_users):
        valid = evaluate_scores(valid_scores, cs.split, "valid", cfg).ranks
        out["cold_valid"] = summary(valid[cs.cold_valid_users])
        out["valid_all"] = summary(valid)
    return out
