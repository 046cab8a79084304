"""The models under the cold-start protocol: :class:`ContentKNN` (the no-training bar for cold items) and
:func:`train_cold_model` (Q-Bert4Rec with the cold items' IDs, SASRec-CE and BERT4Rec-ID with cold items masked out
of every training softmax), each cached.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..models.base import SequentialRecommender
from .coldstart_ids import ColdIDs
from .coldstart_split import ColdStart
from .evaluate import EvalConfig, evaluate

__all__ = ["ContentKNN", "train_cold_model"]


class ContentKNN(SequentialRecommender):
    """Scores every item by the cosine of its content vector with the mean content vector of the user's last ``k``
    items. No training and no interaction data: a cold item is scored exactly like a warm one."""

    name = "Content k-NN"

    def __init__(self, vectors: np.ndarray, k: int = 3):
        super().__init__()
        vectors = np.asarray(vectors, dtype=np.float32)
        self.num_items, self.k = len(vectors), int(k)
        table = np.zeros((len(vectors) + 1, vectors.shape[1]), np.float32)  # row 0 = padding = zeros
        table[1:] = vectors
        self.register_buffer("vectors", torch.from_numpy(table))  # [N + 1, d]

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        recent = histories[:, -self.k:]  # [B, k] left-padded: padding rows are zero vectors
        profile = self.vectors[recent].sum(1)  # [B, d]
        profile = profile / profile.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scores = profile @ self.vectors.T  # [B, N + 1]
        scores[:, 0] = -torch.inf
        return scores


def _choose_k(vectors: np.ndarray, split, ks: Sequence[int] = (1, 2, 3, 5, 10, 50)) -> tuple[int, dict]:
    scores = {}
    for k in ks:
        r = evaluate(ContentKNN(vectors, k), split.valid_history, split.valid_target, split.num_items, EvalConfig(),
                     max_len=max(split.max_len, k))
        scores[k] = r.metrics["NDCG@10"]
    return max(scores, key=scores.get), scores


class _Existing(SequentialRecommender):
    """Wraps a model while it trains: ``score_all`` ranks only the items that exist (cold items at -inf), so early
    stopping validates in the catalog of training time."""

    def __init__(self, model: SequentialRecommender, mask: torch.Tensor):
        super().__init__()
        self.model, self.num_items, self.name = model, model.num_items, model.name
        self.register_buffer("absent", ~mask, persistent=False)

    def loss(self, sequences, generator=None):
        return self.model.loss(sequences, generator)

    def score_all(self, histories):
        scores = self.model.score_all(histories)
        return scores.masked_fill(self.absent.to(scores.device), float("-inf"))

    def scoring(self):
        return self.model.scoring()


def _set_cold_rows(model, table: np.ndarray) -> None:
    from ..models.qbert_head import _SPECIALS

    with torch.no_grad():
        model.item_tokens[1:].copy_(torch.from_numpy(table + _SPECIALS))


def train_cold_model(name: str, dataset, cs: ColdStart, cfg, *, seed: int = 0, ids: ColdIDs | None = None,
                     content: np.ndarray | None = None, cache_root=None, progress: bool = False,
                     log: Callable[[dict], None] | None = None):
    """Train ``name`` (Q-Bert4Rec, SASRec-CE or BERT4Rec-ID) under the protocol, or load it from the cache. Returns
    ``(model, fits)`` (phase -> ``FitResult``) with the training mask lifted (every item scored). Q-Bert4Rec reads ``ids`` (its first path's
    table; the cold rows never reach the loss, so any path gives the same model) and, when ``cfg.qbert.content_channel``
    is on, ``content`` (every item's frozen content vector, :func:`~.coldstart_ids.content_vectors`: a new item's is
    known the day it arrives; the cold rows never reach the loss either)."""
    from safetensors.torch import save_file

    from ..models.baselines import BERT4RecID, SASRec
    from ..cache import stage_dir
    from ..keys import stable_hash
    from ..config import seed_everything
    from .runs import _baseline_train, _fit_from_json, _fit_json, content_key
    from ..models.qbert import QBert4Rec
    from .train import fit

    relevant: dict = {"max_len": cfg.max_len, "eval": cfg.eval}
    if name == "Q-Bert4Rec":
        if ids is None:
            raise ValueError("train_cold_model('Q-Bert4Rec') needs ids (cold_semantic_ids)")
        warm = ids.tables[ids.paths[0]][cs.warm_rows]
        relevant |= {"ids": stable_hash(ids.source, warm.tolist(), ids.vocab_sizes), "qbert": cfg.qbert,
                     "pretrain": cfg.pretrain if cfg.do_pretrain else None,
                     "pretrain_masks": cfg.pretrain_masks if cfg.do_pretrain else None,
                     "finetune": cfg.finetune, "finetune_masks": cfg.finetune_masks}
        if cfg.qbert.content_channel != "off":
            if content is None:
                raise ValueError(f"train_cold_model: content_channel={cfg.qbert.content_channel!r} needs content vectors")
            relevant["content"] = content_key(content)
    elif name in ("SASRec-CE", "BERT4Rec-ID"):
        relevant |= {"train": _baseline_train(name, cfg),
                     "model": replace(cfg.sasrec if name == "SASRec-CE" else cfg.bert4rec, max_len=cfg.max_len)}
    else:
        raise ValueError(f"train_cold_model trains Q-Bert4Rec, SASRec-CE or BERT4Rec-ID, not {name!r}")
    store = stage_dir("coldstart_model", dataset.fingerprint(), cs.key(), name, relevant, seed, root=cache_root)
    with store.lock():
        seed_everything(seed)
        if name == "Q-Bert4Rec":
            model = QBert4Rec(ids.tables[ids.paths[0]], ids.vocab_sizes, replace(cfg.qbert, max_len=cfg.max_len),
                              content=content if cfg.qbert.content_channel != "off" else None)
        elif name == "SASRec-CE":
            model = SASRec(dataset.num_items, replace(cfg.sasrec, max_len=cfg.max_len))
        else:
            model = BERT4RecID(dataset.num_items, replace(cfg.bert4rec, max_len=cfg.max_len))
        if store.usable(require=("model.safetensors",)):
            model.load_state_dict(store.load_safetensors("model.safetensors"))
            if name == "Q-Bert4Rec":  # scored as it was fine-tuned
                model.masking = cfg.finetune_masks
            return model.eval(), {k: _fit_from_json(f) for k, f in store.meta()["fits"].items()}
        mask = cs.train_item_mask()
        model.train_item_mask = mask
        wrapped = _Existing(model, mask)
        fits = {}
        if name == "Q-Bert4Rec":
            phases = (([("pretrain", cfg.pretrain, cfg.pretrain_masks)] if cfg.do_pretrain else [])
                      + [("finetune", cfg.finetune, cfg.finetune_masks)])
        else:
            phases = [("train", _baseline_train(name, cfg), None)]
        for phase, tcfg, masks in phases:
            if masks is not None:
                model.masking = masks
            phase_log = None if log is None else (lambda e, p=phase: log({**e, "phase": p}))
            # checkpointed every epoch: an interrupted run resumes where it stopped (a finished phase restores its
            # best weights from its checkpoint and the next phase goes on from there)
            fits[phase] = fit(wrapped, cs.train_split, replace(tcfg, seed=seed, max_len=cfg.max_len),
                              eval_cfg=cfg.eval, progress=progress, log=phase_log,
                              checkpoint_dir=store.partial() / phase)
        model.train_item_mask = None  # the cold items arrive
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        store.write({}, {"model": name, "seed": seed, "config": relevant,
                         "fits": {k: _fit_json(f) for k, f in fits.items()}, "protocol": cs.describe()},
                    binary={"model.safetensors": lambda p: save_file(weights, p)})
        return model.eval(), fits
