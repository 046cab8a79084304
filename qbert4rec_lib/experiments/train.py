"""The generic trainer every sequential model in the kit uses (stage 3, "pretraining / fine-tuning").

:func:`fit` trains any :class:`~qbert4rec_lib.models.base.SequentialRecommender` on the training part
of a leave-one-out split (``split.train``: each user's items except the last two), evaluates on
the validation targets every ``eval_every`` epochs with the kit's full-ranking evaluator, stops
early when the monitored metric (validation NDCG@10) has not improved for ``patience``
evaluations, and **restores the best weights** before returning. The seed loop over
several runs (and the test scores) is :func:`~qbert4rec_lib.experiments.experiment.run_experiment`'s.

Choices, each a :class:`TrainConfig` field:

* Optimiser: AdamW (``weight_decay=0`` makes it Adam, the SASRec / BERT4Rec papers' choice),
  constant learning rate, optional gradient-norm clipping.
* Batches: sequences are shuffled every epoch with a seeded generator; each batch is left-padded
  to its own longest sequence (``trim_padding``), so models must accept any ``T <= max_len`` (the
  kit's models use right-aligned positions). ``length_buckets`` (off by default) sorts pools of
  ``bucket_pool`` batches by length first: much less padding, but batches of only-short or
  only-long sequences bias the updates. Measured on Beauty (SASRec-CE, dropout 0.5, lr 2e-3):
  best test NDCG@10 0.048 with buckets vs 0.058 without, so plain shuffling is the default.
* Every training sequence is kept, however short; a model decides what it learns from it (SASRec
  learns nothing from a one-item sequence, BERT4Rec can still mask it). All users are evaluated.
* Determinism: the model's :meth:`loss` receives a ``torch.Generator`` seeded from
  ``TrainConfig.seed`` (for its masks), and dropout draws from the global torch RNG, which
  :func:`fit` seeds inside ``torch.random.fork_rng`` (the caller's RNG state is left untouched).
  Same seed and same initial weights give the same loss curve on CPU.
* Models without trainable parameters (Popularity) are evaluated once and returned.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..config import seed_everything
from ..models.base import LossOutput, SequentialRecommender, pad_left
from .evaluate import EvalConfig, EvalResult, evaluate_split

__all__ = ["TrainConfig", "FitResult", "fit", "make_batches", "epoch_logger"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # (int) maximum number of passes over the training sequences
    batch_size: int = 256  # (int) sequences per optimiser step (SASRec / BERT4Rec papers: 128 / 256)
    lr: float = 2e-3  # (float) AdamW learning rate, constant
    weight_decay: float = 0.0  # (float) AdamW decoupled weight decay (0 = Adam)
    grad_clip: float = 5.0  # (float) max global gradient norm (0 = no clipping)
    patience: int = 5  # (int) evaluations without improvement before stopping (0 = never stop early)
    eval_every: int = 1  # (int) validate every this many epochs (and after the last one)
    monitor: str = "NDCG@10"  # (str) validation metric for early stopping and the best epoch
    max_len: int = 50  # (int) longest training sequence (the last max_len items are kept)
    seed: int = 0  # (int) seeds shuffling, masks (the loss generator) and dropout
    shuffle: bool = True  # (bool) reshuffle the training sequences every epoch
    length_buckets: bool = False  # (bool) group sequences of similar length into batches (faster, worse)
    bucket_pool: int = 50  # (int) batches per pool sorted by length when length_buckets
    trim_padding: bool = True  # (bool) pad each batch to its own longest sequence, not to max_len
    time_limit_s: float = 0.0  # (float) stop after the epoch that crosses this much wall time (0 = none)
    device: str = "cpu"  # (str) torch device for training and evaluation
    # mixed precision of the training forward: "off" | "bf16" | "fp16" (fp16 adds a GradScaler);
    # key-neutral at "off" (cache keys unchanged)
    amp: str = field(default="off", metadata={"key_neutral": "off"})

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={
            "epochs": "[1, inf)", "batch_size": "[1, inf)", "lr": "(0, inf)", "weight_decay": "[0, inf)",
            "grad_clip": "[0, inf)", "eval_every": "[1, inf)", "max_len": "[1, inf)", "bucket_pool": "[1, inf)",
            "time_limit_s": "[0, inf)"})
        for name in ("epochs", "batch_size", "eval_every", "max_len", "bucket_pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.amp not in ("off", "bf16", "fp16"):
            from ..config import ConfigError

            raise ConfigError(f"TrainConfig.amp must be one of ('off', 'bf16', 'fp16'), got {self.amp!r}")


@dataclass
class FitResult:
    """What :func:`fit` did: the learning curve and the best validation point."""

    history: list[dict]  # one entry per epoch: epoch, train_loss, parts, valid (metrics or None), seconds
    best_epoch: int  # epoch whose weights were restored (0 = untrained model)
    best_valid: dict[str, float]  # validation metrics at best_epoch
    seconds: float  # total wall time (training + validation)
    train_sequences_per_second: float  # training throughput, validation time excluded
    stop_reason: str = "epochs"  # "epochs" (ran them all), "patience" (early stop) or "time_limit"


def make_batches(lengths: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays, one per batch, for one epoch (shuffled / length-bucketed per ``cfg``)."""
    order = rng.permutation(len(lengths)) if cfg.shuffle else np.arange(len(lengths))
    if cfg.length_buckets:
        pool = cfg.batch_size * cfg.bucket_pool
        pools = [order[i : i + pool] for i in range(0, len(order), pool)]
        order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in pools])
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    if cfg.length_buckets and cfg.shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_logger(prefix: str, monitor: str = "NDCG@10", stream=None) -> Callable[[dict], None]:
    """A ``log`` callback for :func:`fit` that prints one flushed line per epoch, e.g.

    ``SASRec-CE seed 0 | epoch 12 | loss 7.1234 | valid NDCG@10 0.0312 (best 0.0315 @ 10) | 28.1 s + 1.3 s eval``

    Meant for long runs whose output goes to a file, where a progress bar is unreadable. An entry's
    ``phase`` (e.g. ``pretrain`` / ``finetune``) is printed after the prefix and tracked separately.
    """
    import sys

    bests: dict[str, dict] = {}

    def log(entry: dict) -> None:
        phase = entry.get("phase", "")
        best = bests.setdefault(phase, {"score": -math.inf, "epoch": 0})
        parts = [f"{prefix} {phase}".strip(), f"epoch {entry['epoch']}"]
        if entry.get("train_loss") is not None:
            parts.append(f"loss {entry['train_loss']:.4f}")
        valid = entry.get("valid")
        if valid and monitor in valid:
            if entry.get("best") is not None:  # from fit: counts the epochs before a resume too
                best.update(entry["best"])
            elif valid[monitor] > best["score"]:
                best.update(score=valid[monitor], epoch=entry["epoch"])
            parts.append(f"valid {monitor} {valid[monitor]:.4f} (best {best['score']:.4f} @ {best['epoch']})")
        timing = f"{entry.get('seconds', 0.0):.1f} s"
        if entry.get("valid_seconds") is not None:
            timing += f" + {entry['valid_seconds']:.1f} s eval"
        parts.append(timing)
        print(" | ".join(parts), file=stream or sys.stdout, flush=True)

    return log


def _has_trainable(model: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in model.parameters())


def fit(
    model: SequentialRecommender,
    split,
    cfg: TrainConfig = TrainConfig(),
    *,
    eval_cfg: EvalConfig = EvalConfig(),
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
    checkpoint_dir=None,
) -> FitResult:
    """Train ``model`` on ``split.train``, early-stop on validation ``cfg.monitor``, restore the best weights.

    ``log`` (e.g. ``print``) receives every epoch's history entry as it is produced.
    ``checkpoint_dir``: a folder for a resumable state, written atomically after every epoch (weights, best
    weights, optimizer moments, every RNG, the history; safetensors + JSON). A run started again with the same
    model, config and folder continues after the last finished epoch and ends exactly as an uninterrupted run
    would (same losses, same metrics, on CPU). The caller deletes the folder when the result is safely stored.
    """
    from . import distributed as ddp_hooks  # no-ops unless torchrun started a process group

    evaluate_split = ddp_hooks.evaluate_split  # = evaluate.evaluate_split in a single process
    start = time.perf_counter()
    model.to(cfg.device)
    if not _has_trainable(model):
        valid = evaluate_split(model, split, "valid", eval_cfg)
        entry = {"epoch": 0, "train_loss": None, "parts": {}, "valid": valid.metrics, "seconds": valid.seconds}
        if log:
            log(entry)
        return FitResult([entry], 0, valid.metrics, time.perf_counter() - start, math.nan, "untrainable")

    sequences = [np.asarray(s[-cfg.max_len :], dtype=np.int64) for s in split.train]
    lengths = np.array([len(s) for s in sequences])
    if lengths.max(initial=0) == 0:
        raise ValueError("fit: every training sequence is empty; nothing to train on")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    best_score, best_epoch, best_valid, best_state = -math.inf, 0, {}, None
    evals_since_best, train_seconds, sequences_seen, stop_reason = 0, 0.0, 0, "epochs"

    epochs = range(1, cfg.epochs + 1)
    progress = progress and ddp_hooks.is_main()  # [scale] one progress bar under DDP (rank 0's)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"fit {getattr(model, 'name', type(model).__name__)}")
    # under DDP: the model wrapped, rank r seeds dropout and masks with seed + 7919 r (rank 0 = seed)
    ddp = ddp_hooks.wrap(model) if ddp_hooks.active() else None
    # optional mixed precision (TrainConfig.amp); off = the previous code path exactly
    device_type = torch.device(cfg.device).type
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler(device_type, enabled=cfg.amp == "fp16")
    rank_seed = cfg.seed + ddp_hooks.RANK_SEED_STRIDE * ddp_hooks.rank()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rank_seed)
        loss_generator = torch.Generator(device=cfg.device).manual_seed(rank_seed)
        first_epoch, earlier_seconds = 1, 0.0
        saved = _load_checkpoint(checkpoint_dir, cfg, model, optimizer, rng, loss_generator) if checkpoint_dir else None
        if saved is not None:
            first_epoch = saved["epoch"] + 1
            history, best_epoch, best_valid = saved["history"], saved["best_epoch"], saved["best_valid"]
            best_score = saved["best_score"] if saved["best_score"] is not None else -math.inf
            best_state, evals_since_best = saved["best_state"], saved["evals_since_best"]
            train_seconds, sequences_seen = saved["train_seconds"], saved["sequences_seen"]
            stop_reason, earlier_seconds = saved["stop_reason"] or "epochs", saved.get("elapsed", 0.0)
            if log:
                print(f"fit: resumed from {checkpoint_dir} after epoch {saved['epoch']}", flush=True)
        for epoch in epochs:
            if epoch < first_epoch or (saved is not None and saved["stop_reason"]):
                continue
            epoch_start = time.perf_counter()
            model.train()
            # running sums stay on the device in float64 (no host sync per step; on CPU the same
            # float64 arithmetic, in the same order, as summing Python floats); non-finite losses are caught per epoch
            total, parts_sum, count = torch.zeros((), dtype=torch.float64, device=cfg.device), {}, 0
            for index in (make_batches(lengths, cfg, rng) if ddp is None else ddp_hooks.shard_batches(lengths, cfg, rng)):
                width = int(lengths[index].max()) if cfg.trim_padding else cfg.max_len
                batch = pad_left([sequences[i] for i in index], max(width, 1)).to(cfg.device)  # [B, T]
                with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    out = model.loss(batch, loss_generator) if ddp is None else LossOutput(*ddp(batch, loss_generator))
                optimizer.zero_grad(set_to_none=True)
                if out.loss.requires_grad:
                    scaler.scale(out.loss).backward()  # scaler disabled (amp != fp16): plain backward
                    if cfg.grad_clip > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                total += out.loss.detach().double() * len(index)
                for k, v in out.parts.items():  # floats or detached 0-dim tensors
                    v = torch.as_tensor(v, device=cfg.device).double() if isinstance(v, torch.Tensor) else float(v)
                    parts_sum[k] = parts_sum.get(k, 0.0) + v * len(index)
                count += len(index)
            total = float(total)  # one host sync per epoch
            parts_sum = {k: float(v) for k, v in parts_sum.items()}
            if not math.isfinite(total):
                raise FloatingPointError(f"fit: loss became {total} at epoch {epoch}")
            if ddp is not None:  # the epoch's loss over all ranks' sequences
                sums = ddp_hooks.all_reduce_sums({"total": total, "count": count, **{f"part.{k}": v for k, v in parts_sum.items()}})
                total, count = sums.pop("total"), int(sums.pop("count"))
                parts_sum = {k[5:]: v for k, v in sums.items()}
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            sequences_seen += count
            entry = {
                "epoch": epoch,
                "train_loss": total / count,
                "parts": {k: v / count for k, v in parts_sum.items()},
                "valid": None,
                "seconds": seconds,
            }
            out_of_time = bool(cfg.time_limit_s) and time.perf_counter() - start >= cfg.time_limit_s
            out_of_time = ddp_hooks.broadcast_flag(out_of_time)  # [scale] rank 0 decides for every rank
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time:
                valid = evaluate_split(model, split, "valid", eval_cfg)
                entry["valid"], entry["valid_seconds"] = valid.metrics, valid.seconds
                if cfg.monitor not in valid.metrics:
                    raise KeyError(f"TrainConfig.monitor {cfg.monitor!r} is not a metric; known: {sorted(valid.metrics)}")
                score = valid.metrics[cfg.monitor]
                if score > best_score:
                    best_score, best_epoch, best_valid = score, epoch, valid.metrics
                    best_state = copy.deepcopy(model.state_dict())
                    evals_since_best = 0
                else:
                    evals_since_best += 1
            history.append(entry)
            stop_now = ("patience" if cfg.patience and evals_since_best >= cfg.patience
                        else "time_limit" if out_of_time else None)
            if checkpoint_dir and ddp_hooks.is_main():  # [scale] rank 0 writes, atomically
                _save_checkpoint(checkpoint_dir, cfg, model, optimizer, rng, loss_generator, best_state, {
                    "epoch": epoch, "history": history, "best_epoch": best_epoch, "best_valid": best_valid,
                    "best_score": best_score if math.isfinite(best_score) else None,
                    "evals_since_best": evals_since_best, "train_seconds": train_seconds,
                    "sequences_seen": sequences_seen, "stop_reason": stop_now,
                    "elapsed": earlier_seconds + time.perf_counter() - start})
            if log:  # fit's own best (it survives a resume; the history entry itself stays as it was)
                log({**entry, "best": {"score": best_score, "epoch": best_epoch}})
            if progress:
                postfix = {"loss": f"{entry['train_loss']:.3f}"}
                if entry["valid"]:
                    postfix[cfg.monitor] = f"{entry['valid'][cfg.monitor]:.4f}"
                epochs.set_postfix(postfix)
            if stop_now:
                stop_reason = stop_now
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_valid=best_valid,
        seconds=earlier_seconds + time.perf_counter() - start,
        train_sequences_per_second=sequences_seen / max(train_seconds, 1e-9),
        stop_reason=stop_reason,
    )


# ---- resumable training state (safetensors + JSON, never pickle) ----------------------------------------------
def _save_checkpoint(folder, cfg: TrainConfig, model, optimizer, rng, loss_generator, best_state, scalars: dict) -> None:
    import json
    import os
    import shutil
    from pathlib import Path

    from safetensors.torch import save_file

    from ..keys import _jsonable

    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.loss"] = loss_generator.get_state()
    meta = {**scalars, "config": _jsonable(cfg), "numpy_rng": rng.bit_generator.state,
            "param_groups": opt["param_groups"], "has_best": best_state is not None,
            "optim_keys": {str(i): sorted(st) for i, st in opt["state"].items()}}
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(_jsonable(meta)), encoding="utf-8")
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder, cfg: TrainConfig, model, optimizer, rng, loss_generator) -> dict | None:
    """Restore a checkpoint written by :func:`_save_checkpoint` into ``model`` / ``optimizer`` / the RNGs and
    return its scalars (with ``best_state``); None when there is none. A checkpoint of another config is ignored
    (with a message); a damaged one is an error naming the folder (delete it to start over)."""
    import json
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from ..keys import _jsonable

    folder = Path(folder)
    if not (folder / "state.json").is_file():
        return None
    try:
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "state.safetensors"))
    except Exception as exc:
        raise ValueError(f"training checkpoint {folder} is damaged ({type(exc).__name__}: {exc}); "
                         "delete the folder to start this phase over") from exc
    if meta.get("config") != json.loads(json.dumps(_jsonable(cfg))):
        print(f"fit: ignoring the checkpoint in {folder}: it was written with another training config", file=sys.stderr)
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = ({k[5:]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None)
    state = {int(i): {name: tensors[f"optim.{i}.{name}"] for name in names} for i, names in meta["optim_keys"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    loss_generator.set_state(tensors["rng.loss"])
    rng.bit_generator.state = meta["numpy_rng"]
    return {**meta, "best_state": best_state}
