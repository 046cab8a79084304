"""One cached trainer for every sequence model: :func:`train_model` (Q-Bert4Rec's pretrain -> fine-tune phases,
the baselines' single phase), each phase through :func:`~qbert4rec_lib.experiments.train.fit`.

Every trained model is cached (safetensors weights + JSON history) under ``stage_dir("seqmodel", ...)`` keyed by
the dataset, the split, the semantic-ID table, the config and the seed, so the notebooks and the CLI reuse each
other's work and an interrupted multi-seed run resumes. Q-Bert4Rec's pretraining has its own cache entry
(:func:`_pretrain_phase`), so runs that differ only in fine-tuning share it. Finished runs can also be read from
and written to committed result records (:mod:`~qbert4rec_lib.experiments.records`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..cache import stage_dir
from ..config import seed_everything
from ..keys import digest, stable_hash
from ..models.qbert import QBert4Rec
from .evaluate import EvalResult, evaluate_split
from .presets import MODEL_NAMES, ExperimentConfig
from .stages import SemanticIDs, hashlib_ids, semantic_ids
from .train import FitResult, TrainConfig, fit

__all__ = ["ModelRun", "train_model", "run_config", "hashlib_state"]


@dataclass
class ModelRun:
    """A trained (or loaded) model, its learning curves and its test result."""

    name: str
    seed: int
    model: torch.nn.Module | None  # None when the run was read from a result record (no weights)
    fits: dict[str, FitResult]  # phase -> FitResult (fresh, or rebuilt from the cache / a record's JSON)
    test: EvalResult
    valid: EvalResult
    from_cache: bool = False
    seconds: float = 0.0

    def curves(self) -> dict[str, list[dict]]:
        """Phase -> per-epoch history, in training order (pretrain before finetune, whatever order a JSON
        record or cache file stored them in)."""
        order = {"pretrain": 0, "finetune": 1, "train": 2}
        phases = sorted(self.fits, key=lambda p: order.get(p, 3))
        return {p: self.fits[p].history for p in phases}


def _fit_json(f: FitResult) -> dict:
    return {"history": f.history, "best_epoch": f.best_epoch, "best_valid": f.best_valid, "seconds": f.seconds,
            "train_sequences_per_second": f.train_sequences_per_second, "stop_reason": f.stop_reason}


def _fit_from_json(d: dict) -> FitResult:
    """The :class:`FitResult` that :func:`_fit_json` stored (cache meta, result record); fields older files
    lack read as unknown: no metrics, 0 s, NaN throughput, stop reason "?"."""
    return FitResult(d["history"], d["best_epoch"], d.get("best_valid", {}), d.get("seconds", 0.0),
                     d.get("train_sequences_per_second", float("nan")), d.get("stop_reason", "?"))


def _content(cfg: ExperimentConfig, dataset, cache_root=None) -> np.ndarray | None:
    """Every item's frozen text+image vector for ``QBertConfig.content_channel`` (None when the channel is off), from
    the run's feature config (cached; the same vectors whether the semantic IDs were built here or pinned)."""
    if cfg.qbert.content_channel == "off":
        return None
    from ..semantic.features import build_features, content_vectors

    content_only = replace(cfg.features, modalities=tuple(m for m in cfg.features.modalities if m != "structural"))
    return content_vectors(build_features(dataset, content_only, cache_root=cache_root, progress=False))


def content_key(content: np.ndarray) -> str:
    """The content key of a content table (the content channel's runs are keyed by it, as by their IDs' key)."""
    return digest([np.ascontiguousarray(content, dtype=np.float32).tobytes()])


def _build(name: str, dataset, split, cfg: ExperimentConfig, ids: SemanticIDs | None, content=None):
    from ..models.baselines import BERT4RecID, Popularity, SASRec

    if name in ("Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID"):
        if name == "Q-Bert4Rec":
            model = QBert4Rec(ids.table.ids, ids.table.vocab_sizes, replace(cfg.qbert, max_len=cfg.max_len),
                              content=content)
        elif name == "SASRec-CE":
            model = SASRec(dataset.num_items, replace(cfg.sasrec, max_len=cfg.max_len))
        else:
            model = BERT4RecID(dataset.num_items, replace(cfg.bert4rec, max_len=cfg.max_len))
        model_cfg = getattr(model, "config", None) or model.cfg
        if model_cfg.item_loss == "sampled" and model_cfg.loss_sampler == "popularity":  # popularity negatives
            model.item_sampling_counts = torch.as_tensor(split.train_item_counts())
        return model
    if name == "Popularity":
        return Popularity(split.train_item_counts())
    raise ValueError(f"unknown model {name!r}; known: {MODEL_NAMES}")


def _baseline_train(name: str, cfg: ExperimentConfig) -> TrainConfig:
    if name == "BERT4Rec-ID" and cfg.bert4rec_train is not None:
        return cfg.bert4rec_train
    return cfg.baseline_train


def _phase_log(log: Callable[[dict], None] | None, phase: str) -> Callable[[dict], None] | None:
    return None if log is None else (lambda entry: log({**entry, "phase": phase}))


def run_config(name: str, cfg: ExperimentConfig, *, ids_key: str | None = None, init_from: str | None = None) -> dict:
    """The part of ``cfg`` that keys a run of model ``name`` (and is stored as its record's ``config``): the
    protocol, and the model's own sections (Q-Bert4Rec: semantic-ID key, encoder, both phases and their masks)."""
    relevant = {"max_len": cfg.max_len, "eval": cfg.eval}
    if name == "Q-Bert4Rec":
        relevant |= {"ids": ids_key, "qbert": cfg.qbert, "pretrain": cfg.pretrain if cfg.do_pretrain else None,
                     "pretrain_masks": cfg.pretrain_masks if cfg.do_pretrain else None,
                     "finetune": cfg.finetune, "finetune_masks": cfg.finetune_masks, "init_from": init_from}
    elif name != "Popularity":
        relevant |= {"train": _baseline_train(name, cfg),
                     "model": replace(cfg.sasrec if name == "SASRec-CE" else cfg.bert4rec, max_len=cfg.max_len)}
    return relevant


def train_model(name: str, dataset, cfg: ExperimentConfig = ExperimentConfig(), *, seed: int = 0, split=None,
                ids: SemanticIDs | None = None, cache_root=None, progress: bool = True, init_from=None,
                log: Callable[[dict], None] | None = None, records_dir=None, train: bool = True,
                record_label: str | None = None) -> ModelRun | None:
    """Train ``name`` (one of :data:`MODEL_NAMES`) on ``dataset`` with ``seed``, or load it from the cache.

    Q-Bert4Rec runs two phases through ``train.fit``: pretraining with ``cfg.pretrain_masks`` (skipped when
    ``cfg.do_pretrain`` is False) and fine-tuning with ``cfg.finetune_masks``, each early-stopped on
    validation NDCG@10. ``init_from`` (a QBert4Rec) copies catalog-independent weights before training
    (cross-domain transfer; see :func:`qbert4rec_lib.models.qbert.transfer_weights`).

    ``records_dir``: a folder of small JSON result records (metrics, curves, config, timings; no weights),
    one per (model, config, seed), meant to be committed. A matching record is returned as it is (``model`` is
    None, nothing is trained); otherwise the run's record is written there when it finishes, so a long
    multi-run table resumes from what has finished even on another machine.
    """
    from safetensors.torch import save_file

    from .records import read_record, run_from_record, write_record  # records import this module

    split = split if split is not None else dataset.split(max_len=cfg.max_len)
    if name == "Q-Bert4Rec" and ids is None:
        ids = semantic_ids(dataset, cfg, split=None, cache_root=cache_root, progress=progress)
    relevant = run_config(name, cfg, ids_key=ids.key if ids is not None else None,
                          init_from=hashlib_state(init_from) if init_from is not None else None)
    content = _content(cfg, dataset, cache_root) if name == "Q-Bert4Rec" else None
    if content is not None:  # the content vectors key the run too
        relevant["content"] = content_key(content)
    split_key = stable_hash([hashlib_ids(np.concatenate(split.train or [np.zeros(0, np.int64)]))],
                            split.valid_target.tolist(), split.test_target.tolist())
    store = stage_dir("seqmodel", dataset.fingerprint(), split_key, name, relevant, seed, root=cache_root)
    if records_dir is not None:
        record = read_record(records_dir, name, seed, store.key)
        if record is not None:
            return run_from_record(record)
    if not train:  # records only: report what is missing instead of training it
        return None
    with store.lock():  # a concurrent process training the same model: wait for it, then load its weights
        seed_everything(seed)
        model = _build(name, dataset, split, cfg, ids, content)
        t0 = time.perf_counter()
        if store.usable(require=("model.safetensors",)):  # a missing / damaged file: reported, then rebuilt
            meta = store.meta()
            from ..cache import CacheError

            weights = store.load_safetensors("model.safetensors")  # never fresh weights on a hit
            try:  # the saved weights load exactly, or the error names the file
                model.load_state_dict(weights)
            except RuntimeError as exc:
                raise CacheError(store.path / "model.safetensors", f"does not fit {name}: {exc}") from None
            fits, from_cache = {k: _fit_from_json(f) for k, f in meta["fits"].items()}, True
            if name == "Q-Bert4Rec":  # scored as it was fine-tuned (the next_item objective scores causally)
                model.masking = cfg.finetune_masks
        else:
            fits = {}
            if name == "Q-Bert4Rec":
                if init_from is not None:
                    from ..models.qbert import transfer_weights

                    transfer_weights(init_from, model)
                if cfg.do_pretrain:  # its own cache entry: runs that differ only in fine-tuning share it
                    fits["pretrain"] = _pretrain_phase(model, dataset, split, split_key, cfg, seed, relevant,
                                                       cache_root=cache_root, progress=progress, log=log)
                model.masking = cfg.finetune_masks
                fits["finetune"] = fit(model, split, replace(cfg.finetune, seed=seed, max_len=cfg.max_len),
                                       eval_cfg=cfg.eval, progress=progress, log=_phase_log(log, "finetune"),
                                       checkpoint_dir=store.partial() / "finetune")
            else:
                fits["train"] = fit(model, split, replace(_baseline_train(name, cfg), seed=seed, max_len=cfg.max_len),
                                    eval_cfg=cfg.eval, progress=progress, log=log,
                                    checkpoint_dir=store.partial() / "train")
            from_cache = False
        valid = evaluate_split(model, split, "valid", cfg.eval)
        test = evaluate_split(model, split, "test", cfg.eval)
        if not from_cache:
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            store.write({}, {"model": name, "seed": seed, "config": relevant, "dataset": dataset.name,
                             "fits": {k: _fit_json(f) for k, f in fits.items()},
                             "valid": valid.metrics, "test": test.metrics, "protocol": test.protocol},
                        binary={"model.safetensors": lambda p: save_file(weights, p)})
    run = ModelRun(name, seed, model, fits, test, valid, from_cache, time.perf_counter() - t0)
    if records_dir is not None:
        from .breakdown import test_groups

        groups = test_groups(split, dataset.num_items, test.ranks, cfg.eval) if test.ranks is not None else None
        write_record(records_dir, run, store.key, dataset.name, relevant, label=record_label, groups=groups)
    return run


def _pretrain_phase(model, dataset, split, split_key: str, cfg: ExperimentConfig, seed: int, relevant: dict, *,
                    cache_root=None, progress: bool = False, log=None) -> FitResult:
    """Q-Bert4Rec's pretraining, cached under a key without the fine-tuning settings (so a study row that changes
    only fine-tuning reuses the pretrained weights). The weights are the best-validation ones :func:`fit` restores;
    fine-tuning seeds its own RNGs, so a hit here gives the same final model as a fresh pretraining."""
    from safetensors.torch import save_file

    from ..cache import CacheError

    key = {k: relevant[k] for k in ("max_len", "eval", "ids", "qbert", "pretrain", "pretrain_masks", "init_from",
                                    "content") if k in relevant}
    pre = stage_dir("qbert-pretrain", dataset.fingerprint(), split_key, key, seed, root=cache_root)
    with pre.lock():
        if pre.usable(require=("model.safetensors",)):
            try:
                model.load_state_dict(pre.load_safetensors("model.safetensors"))
            except RuntimeError as exc:
                raise CacheError(pre.path / "model.safetensors", f"does not fit Q-Bert4Rec: {exc}") from None
            return _fit_from_json(pre.meta()["fit"])
        model.masking = cfg.pretrain_masks
        result = fit(model, split, replace(cfg.pretrain, seed=seed, max_len=cfg.max_len), eval_cfg=cfg.eval,
                     progress=progress, log=_phase_log(log, "pretrain"), checkpoint_dir=pre.partial() / "pretrain")
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        pre.write({}, {"seed": seed, "config": key, "dataset": dataset.name, "fit": _fit_json(result)},
                  binary={"model.safetensors": lambda p: save_file(weights, p)})
        return result


def hashlib_state(model: torch.nn.Module) -> str:
    """A content key of a model's weights (names and values, sorted by name)."""
    return digest(chunk for k, v in sorted(model.state_dict().items())
                  for chunk in (k.encode(), v.detach().cpu().contiguous().numpy().tobytes()))
