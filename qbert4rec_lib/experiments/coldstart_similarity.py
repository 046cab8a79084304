"""Where content k-NN beats the semantic IDs on new items: cold users by how close their new item is to their last one.

Content k-NN (``k`` chosen on validation) scores an item by the cosine of its content vector (text + image) with the
user's recent items. The semantic IDs compress that vector into a few codebook tokens. :func:`similarity_breakdown`
measures, on the models the cold-start protocol trained (:mod:`~qbert4rec_lib.experiments.coldstart`; loaded from the
stage cache, trained if missing), where each wins:

- cold users (test item new) in bands of ``cos(v_target, v_last)``, the cosine of their new target's content vector
  with their last history item's; per band, the share of cold users and the among-new-items HR@10 (the target ranked
  among the new items only) of content k-NN and of Q-Bert4Rec (fused IDs, one stage-1 path);
- how often the target shares its leading 1, 2, 3 codebook levels with the last item, for all cold users and for
  content k-NN's hits (target in its top 10 of all items) and misses: what the tokens keep of that closeness.

Evaluation only. ``scripts/coldstart_similarity.py`` prints it (and a shared-code score bonus) for any dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .coldstart_split import COLD_EVAL, cold_start_split, evaluate_users

__all__ = ["BANDS", "SimilarityBreakdown", "last_item_cosine", "shared_levels", "similarity_breakdown"]

BANDS = (-1.0, 0.5, 0.7, 0.8, 0.9, 1.01)  # band edges of cos(v_target, v_last); the last band includes 1


def last_item_cosine(vectors: np.ndarray, last: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[U]``: cosine of the content vectors (``vectors`` ``[N, D]``, row = item id - 1) of each user's ``target`` and
    ``last`` item (ids)."""
    a, b = vectors[last - 1], vectors[target - 1]  # [U, D]
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def shared_levels(codes: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``[B, M]``: how many leading levels of each item's codes (``codes`` ``[M, L]``) equal those of each user's
    last item (``last`` ``[B, L]``): 0 = not even the first, L = all."""
    same = codes[None, :, :] == last[:, None, :]  # [B, M, L]
    return torch.cumprod(same.to(torch.int8), dim=2).sum(dim=2)


@dataclass
class SimilarityBreakdown:
    """The two tables of :func:`similarity_breakdown` (``bands``: one dict per non-empty band; ``prefix``: one dict
    per depth) and what they were measured on."""

    protocol: str  # the cold-start split, described
    path: str  # stage-1 path of the new items' fused IDs
    seed: int
    knn_k: int
    bands: list[dict]  # {"band": (lo, hi), "share": .., "users": .., "Content k-NN": HR@10, "Q-Bert4Rec": HR@10}
    prefix: list[dict]  # {"levels": d, "all": .., "knn_hits": .., "knn_misses": ..}
    knn_hits: int
    cold_users: int

    def table(self) -> str:
        """Both tables as markdown."""
        q = f"Q-Bert4Rec (fused IDs, {self.path})"
        lines = [f"| cos(new item, last item) | share of cold users | content k-NN (k = {self.knn_k}) | {q} |",
                 "|---|---|---|---|"]
        for row in self.bands:
            lo, hi = row["band"]
            label = f"[{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}" if lo > -1 else f"below {hi:g}"
            lines.append(f"| {label} | {row['share']:.3f} | {row['Content k-NN']:.4f} | {row['Q-Bert4Rec']:.4f} |")
        lines += ["", "HR@10 among the new items. Leading codebook levels the new item shares with the last item:", "",
                  "| levels | all cold users | content k-NN's hits | its misses |", "|---|---|---|---|"]
        lines += [f"| 1-{r['levels']} | {r['all']:.3f} | {r['knn_hits']:.3f} | {r['knn_misses']:.3f} |"
                  for r in self.prefix]
        lines.append(f"\n{self.protocol}; content k-NN's hits (target in its top 10 of all items): "
                     f"{self.knn_hits} of {self.cold_users:,} cold users. Q-Bert4Rec seed {self.seed}.")
        return "\n".join(lines)


def similarity_breakdown(dataset, cfg, *, fraction: float = 0.1, by: str = "time", seed: int = 0,
                         path: str = "content+structure", bands=BANDS, cache_root=None) -> SimilarityBreakdown:
    """Measure where content k-NN and Q-Bert4Rec's fused IDs win on new items (module doc), on the cold-start split
    ``(fraction, by)`` of ``dataset`` under ``cfg``; Q-Bert4Rec is the cold-start model of training seed ``seed``
    (from the stage cache, trained if missing), its new items labelled by stage-1 ``path``."""
    from ..semantic.features import build_features
    from .coldstart_ids import cold_semantic_ids, content_vectors
    from .coldstart_models import ContentKNN, _choose_k, _set_cold_rows, train_cold_model

    cs = cold_start_split(dataset, fraction, by=by, seed=0, max_len=cfg.max_len)
    users = cs.cold_users
    last = np.array([cs.split.test_history[u][-1] for u in users])  # [U] item ids
    target = cs.split.test_target[users]  # [U]
    full = replace(cs.split, train=cs.train_full, max_len=0)
    vectors = content_vectors(build_features(dataset, cfg.features, split=full, cache_root=cache_root))  # [N, D]
    k, _ = _choose_k(vectors, cs.train_split)  # as the cold-start table chooses it
    knn = ContentKNN(vectors, k)
    ranks = {"Content k-NN": evaluate_users(knn, cs.split, users, COLD_EVAL, candidates=cs.cold_items).ranks}
    knn_hit = evaluate_users(knn, cs.split, users, COLD_EVAL).ranks <= 10  # [U]
    ids = cold_semantic_ids(dataset, cs, cfg, "fused", cache_root=cache_root)
    model, _ = train_cold_model("Q-Bert4Rec", dataset, cs, cfg, seed=seed, ids=ids, cache_root=cache_root)
    table = ids.tables[path]  # [N, L] codes + disambiguation token, row = item id - 1
    _set_cold_rows(model, table)
    ranks["Q-Bert4Rec"] = evaluate_users(model, cs.split, users, COLD_EVAL, candidates=cs.cold_items).ranks
    cosine = last_item_cosine(vectors, last, target)
    rows = []
    for lo, hi in zip(bands[:-1], bands[1:]):
        inside = (cosine >= lo) & (cosine < hi)
        if inside.any():
            rows.append({"band": (lo, hi), "share": float(inside.mean()), "users": int(inside.sum()),
                         **{name: float(np.mean(r[inside] <= 10)) for name, r in ranks.items()}})
    codes = table[:, :-1]  # [N, L - 1]: the codebook levels, without the disambiguation token
    same = codes[target - 1] == codes[last - 1]  # [U, L - 1]
    depth = np.cumprod(same, axis=1).sum(axis=1)  # [U] leading levels shared
    share = lambda mask, d: float(np.mean(depth[mask] >= d)) if mask.any() else float("nan")  # noqa: E731
    every = np.ones(len(users), dtype=bool)
    prefix = [{"levels": d, "all": share(every, d), "knn_hits": share(knn_hit, d), "knn_misses": share(~knn_hit, d)}
              for d in range(1, codes.shape[1] + 1)]
    return SimilarityBreakdown(protocol=cs.describe(), path=path, seed=seed, knn_k=int(k), bands=rows, prefix=prefix,
                               knn_hits=int(knn_hit.sum()), cold_users=len(users))
