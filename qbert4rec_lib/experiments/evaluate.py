"""Evaluation harness: leave-one-out, full ranking over all items (stage 3, "Evaluation").

Every model in the kit (Q-Bert4Rec and the baselines) is scored by this one function, on the
same split, so the numbers are comparable with each other and with the literature.

Protocol (each choice is an :class:`EvalConfig` field, and :func:`protocol_text` prints it
beside every table):

* **Leave-one-out.** The target is the user's last item (test) or second-to-last (validation);
  the history is everything before it (see :class:`qbert4rec_lib.data.dataset.LeaveOneOutSplit`).
* **Full ranking.** The target is ranked against **all** ``N`` items; no sampled negatives
  (sampled metrics are known to mislead: Krichene & Rendle, KDD 2020). Column 0 (padding)
  never takes part.
* **History exclusion** (``exclude_history``, default on, as in RecBole and S3-Rec): items the
  user already interacted with are removed from the ranking. The **target's own score is always
  kept**, even when the target also appears in the history (a re-purchase): removing it would
  make the user unscorable.
* **Ties** (``tie_break``): ``"pessimistic"`` (default) ranks the target *behind* every other item
  with the same score, i.e. ``rank = 1 + #(items scoring strictly higher) + #(other items with an
  equal score)``. A model that outputs a constant therefore gets rank ``N``, never a lucky 1.
  ``"random"`` puts the target uniformly at random among its ties (seeded, reproducible).
* **Metrics** from the 1-based rank ``r`` of the target: ``HR@K = [r <= K]``,
  ``NDCG@K = [r <= K] / log2(r + 1)`` (one relevant item, so the ideal DCG is 1) and
  ``MRR = 1 / r`` over the full list (not truncated at K; RecBole's ``MRR@K`` is). All are
  averaged over users.

The rank is found by *counting* (one comparison against the target's score per row), never by
sorting all items: one ``score_all`` call (for SASRec one matrix product) per batch of users, the
history masked in place. Users are batched in order of history length (``length_sorted``) and
each batch is left-padded only to its longest history, so a model must accept any ``T <= max_len``.

Several seeds: :func:`aggregate` turns a list of results into mean and sample standard
deviation (``ddof=1``; 0 for a single run), and :func:`results_table` prints a markdown table of
"mean ± std" with the protocol underneath.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..models.base import SequentialRecommender, pad_left

__all__ = [
    "EvalConfig",
    "EvalResult",
    "MeanStd",
    "evaluate",
    "evaluate_split",
    "evaluate_scores",
    "rank_targets",
    "metrics_from_ranks",
    "per_user_metric",
    "metric_names",
    "protocol_text",
    "aggregate",
    "results_table",
]

TIE_BREAKS = ("pessimistic", "random")


@dataclass(frozen=True)
class EvalConfig:
    ks_hr: tuple[int, ...] = (1, 5, 10, 20)  # (tuple[int]) cut-offs K for HR@K (hit ratio = recall@K here)
    ks_ndcg: tuple[int, ...] = (5, 10, 20)  # (tuple[int]) cut-offs K for NDCG@K
    exclude_history: bool = True  # (bool) drop the user's history items from the ranking (target kept)
    tie_break: str = "pessimistic"  # (str) "pessimistic" (behind all ties) or "random" (seeded)
    seed: int = 0  # (int) seed of the random tie-break (unused when pessimistic)
    batch_size: int = 256  # (int) users per score_all call (256 x 12k floats stays off fresh mmaps)
    length_sorted: bool = True  # (bool) batch users by history length, pad each batch to its longest

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={"ks_hr": "[1, inf)", "ks_ndcg": "[1, inf)", "batch_size": "[1, inf)"},
                     choices={"tie_break": TIE_BREAKS})
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"EvalConfig.tie_break must be one of {TIE_BREAKS}, got {self.tie_break!r}")
        for name in ("ks_hr", "ks_ndcg"):
            ks = getattr(self, name)
            if not all(isinstance(k, int) and k >= 1 for k in ks):
                raise ValueError(f"EvalConfig.{name} must hold positive ints, got {ks!r}")
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class EvalResult:
    """Metrics of one evaluation run, with the protocol that produced them."""

    metrics: dict[str, float]  # "HR@1" .. "NDCG@20", "MRR"
    num_users: int
    protocol: str  # human-readable, printed under every table
    seconds: float  # wall time of the whole evaluation
    ranks: np.ndarray | None = field(default=None, repr=False)  # int64 [U], 1-based rank per user
    top_items: np.ndarray | None = field(default=None, repr=False)  # int64 [U, k] with evaluate(top_k=k), best first

    def __str__(self) -> str:
        nums = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return f"{nums}  ({self.num_users:,} users, {self.seconds:.1f} s; {self.protocol})"


class MeanStd(NamedTuple):
    mean: float
    std: float  # sample standard deviation over seeds (ddof=1), 0.0 for one run


def metric_names(cfg: EvalConfig = EvalConfig()) -> list[str]:
    return [f"HR@{k}" for k in cfg.ks_hr] + [f"NDCG@{k}" for k in cfg.ks_ndcg] + ["MRR"]


def protocol_text(cfg: EvalConfig, split: str, num_items: int) -> str:
    """E.g. ``"leave-one-out, full ranking over all 12,101 items, user's history items excluded,
    pessimistic ties, test split"``."""
    history = "user's history items excluded" if cfg.exclude_history else "user's history items kept"
    ties = "pessimistic ties" if cfg.tie_break == "pessimistic" else f"random ties (seed {cfg.seed})"
    return f"leave-one-out, full ranking over all {num_items:,} items, {history}, {ties}, {split} split"


# ---- ranks and metrics ---------------------------------------------------------------------
def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor | None = None,
    *,
    tie_break: str = "pessimistic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """1-based rank of each target among items ``1..N``, by counting. Overwrites ``scores``.

    ``scores`` [B, N+1] float, ``targets`` [B] ids in 1..N, ``histories`` [B, T] left-padded ids
    to exclude (``None`` = exclude nothing). Column 0 is always excluded.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; expected one of {TIE_BREAKS}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].clone()  # [B]
    if torch.isnan(target_scores).any():
        raise ValueError("score_all returned NaN for a target item; cannot rank")
    scores[:, 0] = -math.inf  # padding is never an item
    if histories is not None:
        scores.scatter_(1, histories, -math.inf)  # history items out (padding 0 hits column 0)
        scores[rows, targets] = target_scores  # ...but the target keeps its own score
    target_col = target_scores.unsqueeze(1)  # [B, 1]
    # Counting in place on the float scores (ge_ writes 1.0 / 0.0) is several times faster on CPU
    # than building a bool tensor and summing it; float sums are exact far beyond any item count.
    higher = scores.clone().gt_(target_col).sum(dim=1).long() if tie_break == "random" else None  # [B]
    at_least = scores.ge_(target_col).sum(dim=1).long()  # [B] = 1 + #higher + #other ties
    if tie_break == "pessimistic":
        return at_least
    u = torch.rand(scores.shape[0], generator=generator).to(scores.device)  # [B] in [0, 1)
    return higher + torch.floor(u * (at_least - higher).to(u.dtype)).long() + 1


def per_user_metric(ranks: np.ndarray | torch.Tensor, metric: str) -> np.ndarray:
    """float64 ``[U]``: ``metric`` ("NDCG@K", "HR@K" or "MRR") of each user from 1-based ranks; the one formula
    behind :func:`metrics_from_ranks` (its means) and the paired comparisons of
    :mod:`~qbert4rec_lib.experiments.significance`."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or (r < 1).any():
        raise ValueError(f"per_user_metric: expected a 1-D array of 1-based ranks, got shape {r.shape}")
    if metric == "MRR":
        return 1.0 / r
    name, _, k = metric.partition("@")
    if name not in ("NDCG", "HR") or not k.isdigit():
        raise ValueError(f"per_user_metric: metric must be 'NDCG@K', 'HR@K' or 'MRR', got {metric!r}")
    hit = r <= int(k)
    return np.where(hit, 1.0 / np.log2(r + 1.0), 0.0) if name == "NDCG" else hit.astype(np.float64)


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor, cfg: EvalConfig = EvalConfig()) -> dict[str, float]:
    """HR@K, NDCG@K and MRR (means over users) from 1-based ranks."""
    r = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)  # [U]
    if r.size == 0:
        raise ValueError("metrics_from_ranks: no ranks given (zero users)")
    if (r < 1).any():
        raise ValueError("metrics_from_ranks: ranks are 1-based, got a value < 1")
    names = [f"HR@{k}" for k in cfg.ks_hr] + [f"NDCG@{k}" for k in cfg.ks_ndcg] + ["MRR"]
    return {name: float(per_user_metric(r, name).mean()) for name in names}


# ---- the evaluator -------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def evaluate(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray | Sequence[int],
    num_items: int,
    cfg: EvalConfig = EvalConfig(),
    *,
    max_len: int,
    split_name: str = "test",
    progress: bool = False,
    candidates: np.ndarray | Sequence[int] | None = None,
    top_k: int = 0,
) -> EvalResult:
    """Rank every user's target among all ``num_items`` items with ``model.score_all``.

    ``candidates`` (item ids; default all items) restricts the ranking to those items: every other item's score
    is set to -inf before ranking (e.g. new items only, for a "new arrivals" shelf). Each target must be one.
    ``top_k`` > 0 also keeps every user's ``top_k`` recommended items (``EvalResult.top_items``, best first; the
    user's history excluded when ``cfg.exclude_history``; ties in any order), e.g. to measure how popular they are.

    ``histories``: one id array per user (any length; the last ``max_len`` items are used, left
    padded). ``targets``: one id per user. Runs under ``torch.inference_mode`` with the model in
    eval mode (its previous train/eval mode is restored afterwards). The tensor ``score_all``
    returns is overwritten while ranking, so it must be a fresh tensor (not a cached buffer).
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise ValueError(f"evaluate: {len(histories)} histories but {len(targets)} targets")
    if len(targets) == 0:
        raise ValueError("evaluate: no users to evaluate")
    if targets.min() < 1 or targets.max() > num_items:
        bad = int(np.flatnonzero((targets < 1) | (targets > num_items))[0])
        raise ValueError(f"evaluate: target of user #{bad} is {targets[bad]}, outside item ids 1..{num_items}")
    for user, history in enumerate(histories):
        if len(history) and (np.min(history) < 0 or np.max(history) > num_items):
            raise ValueError(f"evaluate: history of user #{user} holds an id outside 0..{num_items}")
    start = time.perf_counter()
    device = _model_device(model)
    hidden = None  # [N+1] bool, True = not a candidate
    if candidates is not None:
        candidates = np.asarray(candidates, dtype=np.int64)
        hidden = np.ones(num_items + 1, dtype=bool)
        hidden[candidates] = False
        if hidden[targets].any():
            bad = int(np.flatnonzero(hidden[targets])[0])
            raise ValueError(f"evaluate: target of user #{bad} ({targets[bad]}) is not among the candidates")
        hidden = torch.from_numpy(hidden).to(device)
    lengths = np.array([min(len(h), max_len) for h in histories])
    # Users in order of history length, so each batch is padded only to its own longest history.
    order = np.argsort(lengths, kind="stable") if cfg.length_sorted else np.arange(len(targets))
    all_targets = torch.from_numpy(targets).to(device)  # [U]
    generator = torch.Generator().manual_seed(cfg.seed)
    ranks = torch.empty(len(targets), dtype=torch.long, device=device)  # [scale] on the device: one copy at the end
    if top_k < 0 or top_k > num_items:
        raise ValueError(f"evaluate: top_k must lie in 0..{num_items}, got {top_k}")
    top = torch.zeros(len(targets), top_k, dtype=torch.long, device=device) if top_k else None  # [U, k]
    batches = range(0, len(targets), cfg.batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"evaluate ({split_name})", leave=False)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), model.scoring():
            for lo in batches:
                users = torch.from_numpy(order[lo : lo + cfg.batch_size])  # [B] user indices
                width = max(1, int(lengths[users].max())) if cfg.length_sorted else max_len
                hist = pad_left([histories[u] for u in users.tolist()], width).to(device)  # [B, T]
                scores = model.score_all(hist)  # [B, N+1]
                if scores.shape != (len(users), num_items + 1):
                    raise ValueError(
                        f"{type(model).__name__}.score_all returned shape {tuple(scores.shape)}, "
                        f"expected {(len(users), num_items + 1)} (batch, num_items + 1)"
                    )
                scores = scores.float().contiguous()  # own writable copy if it was an expanded view
                if hidden is not None:
                    scores[:, hidden] = float("-inf")
                users = users.to(device)
                if top is not None:  # before rank_targets, which may overwrite the scores
                    shown = scores.clone()
                    shown[:, 0] = float("-inf")  # padding is no item
                    if cfg.exclude_history:
                        shown.scatter_(1, hist, float("-inf"))  # [B, N+1]; padding (0) is already -inf
                    top[users] = shown.topk(top_k, dim=1).indices  # [B, k] item ids
                ranks[users] = rank_targets(
                    scores,
                    all_targets[users],
                    hist if cfg.exclude_history else None,
                    tie_break=cfg.tie_break,
                    generator=generator,
                )
    finally:
        model.train(was_training)
    ranks_np = ranks.cpu().numpy()
    return EvalResult(
        metrics=metrics_from_ranks(ranks_np, cfg),
        num_users=len(targets),
        protocol=protocol_text(cfg, split_name, num_items),
        seconds=time.perf_counter() - start,
        ranks=ranks_np,
        top_items=top.cpu().numpy() if top is not None else None,
    )


def evaluate_split(
    model: SequentialRecommender,
    split,
    which: str = "test",
    cfg: EvalConfig = EvalConfig(),
    *,
    progress: bool = False,
) -> EvalResult:
    """:func:`evaluate` on ``split`` (a :class:`~qbert4rec_lib.data.dataset.LeaveOneOutSplit`), ``which`` =
    ``"valid"`` or ``"test"``."""
    if which not in ("valid", "test"):
        raise ValueError(f"evaluate_split: which must be 'valid' or 'test', got {which!r}")
    histories = split.valid_history if which == "valid" else split.test_history
    targets = split.valid_target if which == "valid" else split.test_target
    return evaluate(
        model, histories, targets, split.num_items, cfg,
        max_len=split.max_len or max(len(h) for h in histories), split_name=which, progress=progress,
    )


def evaluate_scores(scores: np.ndarray, split, which: str = "test", cfg: EvalConfig = EvalConfig()) -> EvalResult:
    """:func:`evaluate_split` for fixed per-user scores ``[U, N + 1]`` (users in split order, column 0 ignored)
    instead of a model, e.g. the generated catalog's oracle (:mod:`qbert4rec_lib.data.oracle`): the same ranking
    rules (history excluded, ties) and metrics. Random tie-breaks draw in user order, not in evaluate's."""
    if which not in ("valid", "test"):
        raise ValueError(f"evaluate_scores: which must be 'valid' or 'test', got {which!r}")
    histories = split.valid_history if which == "valid" else split.test_history
    targets = np.asarray(split.valid_target if which == "valid" else split.test_target, dtype=np.int64)
    if scores.shape != (len(targets), split.num_items + 1):
        raise ValueError(f"evaluate_scores: scores have shape {scores.shape}, expected "
                         f"{(len(targets), split.num_items + 1)} (users, num_items + 1)")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed)
    ranks = []
    for lo in range(0, len(targets), cfg.batch_size):
        chunk = histories[lo:lo + cfg.batch_size]
        hist = pad_left(chunk, max(1, max(len(h) for h in chunk)))  # [B, T]
        block = torch.tensor(scores[lo:lo + cfg.batch_size], dtype=torch.float64)  # a copy: rank_targets writes it
        ranks.append(rank_targets(block, torch.from_numpy(targets[lo:lo + cfg.batch_size]),
                                  hist if cfg.exclude_history else None, tie_break=cfg.tie_break, generator=generator))
    ranks_np = torch.cat(ranks).numpy()
    return EvalResult(metrics=metrics_from_ranks(ranks_np, cfg), num_users=len(targets),
                      protocol=protocol_text(cfg, which, split.num_items), seconds=time.perf_counter() - start,
                      ranks=ranks_np)


# ---- several seeds -------------------------------------------------------------------------
def aggregate(results: Sequence[EvalResult]) -> dict[str, MeanStd]:
    """Metric name -> (mean, sample std over runs). All runs must share one protocol."""
    if not results:
        raise ValueError("aggregate: no results")
    protocols = {r.protocol for r in results}
    if len(protocols) > 1:
        raise ValueError(f"aggregate: results come from different protocols: {sorted(protocols)}")
    out = {}
    for name in results[0].metrics:
        values = np.array([r.metrics[name] for r in results], dtype=np.float64)
        out[name] = MeanStd(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return out


def results_table(
    rows: dict[str, Sequence[EvalResult]],
    metrics: Sequence[str] = ("NDCG@10", "HR@10"),
    *,
    digits: int = 4,
) -> str:
    """Markdown table ``model | metric (mean ± std) ... | runs`` with the protocol printed under it."""
    if not rows:
        raise ValueError("results_table: no rows")
    protocols = sorted({r.protocol for runs in rows.values() for r in runs})
    lines = ["| model | " + " | ".join(metrics) + " | runs |", "|---|" + "---|" * len(metrics) + "---|"]
    for model_name, runs in rows.items():
        agg = aggregate(runs)
        missing = [m for m in metrics if m not in agg]
        if missing:
            raise KeyError(f"results_table: {model_name!r} has no metric(s) {missing}; known: {sorted(agg)}")
        cells = []
        for m in metrics:
            mean, std = agg[m]
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if len(runs) > 1 else f"{mean:.{digits}f}")
        lines.append(f"| {model_name} | " + " | ".join(cells) + f" | {len(runs)} |")
    lines.append("")
    lines += [f"Protocol: {p}." for p in protocols]
    if any(len(runs) > 1 for runs in rows.values()):
        lines.append("Mean ± sample standard deviation over runs (seeds).")
    return "\n".join(lines) + "\n"
