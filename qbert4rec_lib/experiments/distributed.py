"""Multi-process training through ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on GPUs) — issue 16.

Launch (the same command on a GPU machine with ``--device cuda``)::

    torchrun --standalone --nproc_per_node 2 -m qbert4rec_lib.experiments.distributed train default --config smoke \\
        --model SASRec-CE --seed 0 --out outputs/dist/sasrec.json

Without torchrun (no ``RANK`` / ``WORLD_SIZE`` in the environment) the same command trains in one process, and
:func:`qbert4rec_lib.experiments.train.fit` behaves exactly as it always did: every hook below is a no-op then.

Semantics (what ``fit`` does when a process group with more than one rank is active):

* **Data**: every epoch the global order is drawn from the seeded numpy generator (identical on every rank),
  cut into global batches of ``TrainConfig.batch_size x world_size`` sequences, and rank ``r`` trains on rows
  ``r, r + W, r + 2W, ...`` of each global batch (:func:`shard_batches`). So a global batch holds exactly the
  sequences a single-process run with ``batch_size x W`` would put in its batch, every user is seen once per
  epoch, and all ranks take the same number of steps (no rank waits for a missing step).
* **Batch size and learning rate**: ``TrainConfig.batch_size`` is the **per-rank** batch; the global batch is
  ``batch_size x world_size``. The learning rate is used **as configured** (no linear scaling rule): to reproduce a
  single-process run with batch ``B`` on ``W`` ranks, set ``batch_size = B / W``.
* **Gradients**: the model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel` (through
  :class:`LossModule`, because the kit's models train through ``loss()``, not ``forward()``), which averages the
  ranks' gradients. Each rank's loss is the mean over *its* predicted positions, so the step is the mean of the
  ranks' means, not the mean over all positions of the global batch — one reason the result differs slightly from
  a single-process run; the others are the per-rank RNG streams (rank ``r`` seeds dropout and its loss generator
  with ``seed + 7919 r``) and float summation order. ``find_unused_parameters=True``: Q-Bert4Rec's token-MLP head
  leaves the per-level heads unused.
* **Evaluation**: full ranking sharded by users (rank ``r`` ranks users ``r, r + W, ...``), the ranks gathered
  to every rank (:func:`evaluate_split`), metrics computed from all users on every rank: every rank sees identical
  metrics and takes the same early-stopping decision. With pessimistic ties (the default) the ranks equal a
  single-process evaluation of the same weights exactly; the time limit is decided by rank 0 and broadcast.
* **Artifacts**: checkpoints (``fit(checkpoint_dir=...)``) and the run's metrics JSON are written by rank 0 only,
  atomically (temporary file + ``os.replace``). Resuming a distributed run restores rank 0's RNG states on every
  rank, so it continues correctly but not bit-identically to an uninterrupted distributed run.
* **Failure**: a rank that dies (killed, out of memory, an exception) closes its gloo connections; the others fail
  in their next collective, torchrun stops the remaining workers and exits non-zero, naming the failed rank. Only
  complete files are ever in place (the JSON is written last, by rank 0). Collectives time out after
  ``QBERT4REC_DIST_TIMEOUT_S`` seconds (default 300).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["active", "rank", "world_size", "is_main", "init_from_env", "shard_batches", "LossModule", "wrap",
           "evaluate_split", "all_reduce_sums", "broadcast_flag", "barrier", "RANK_SEED_STRIDE", "main"]

RANK_SEED_STRIDE = 7919  # rank r seeds its dropout RNG and loss generator with seed + 7919 r (rank 0: the seed)


# ---- process group --------------------------------------------------------------------------------------------
def active() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); False when the
    environment names no group of more than one process (a plain single-process run)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    timeout = timedelta(seconds=float(os.environ.get("QBERT4REC_DIST_TIMEOUT_S", "300")))
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def barrier() -> None:
    if active():
        dist.barrier()


# ---- data sharding ------------------------------------------------------------------------------------------
def shard_batches(lengths: np.ndarray, cfg, rng: np.random.Generator) -> list[np.ndarray]:
    """This rank's batches for one epoch: global batches of ``cfg.batch_size x W`` drawn like
    :func:`qbert4rec_lib.experiments.train.make_batches` (same generator on every rank), rank ``r`` takes rows ``r::W`` of each.
    A last global batch with fewer than ``W`` rows is wrapped around so that no rank gets an empty batch."""
    from dataclasses import replace

    from .train import make_batches

    W, r = world_size(), rank()
    out = []
    for batch in make_batches(lengths, replace(cfg, batch_size=cfg.batch_size * W), rng):
        if len(batch) < W:
            batch = np.resize(batch, W)
        out.append(batch[r::W])
    return out


class LossModule(nn.Module):
    """``forward(batch, generator) = model.loss(batch, generator)``: what DDP wraps (it hooks ``forward``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None):
        out = self.model.loss(batch, generator)
        return out.loss, out.parts


def wrap(model: nn.Module) -> nn.Module:
    """``model`` inside :class:`LossModule` inside DDP (parameters broadcast from rank 0 once)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = next(iter(model.parameters())).device
    return DDP(LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=True, broadcast_buffers=False)


def all_reduce_sums(values: dict[str, float], device="cpu") -> dict[str, float]:
    """Sum scalar values (same keys on every rank) over the ranks; unchanged in a single process."""
    if not active():
        return values
    keys = sorted(values)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=backend_device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (decisions that depend on wall time)."""
    if not active():
        return flag
    obj = [flag]
    dist.broadcast_object_list(obj, src=0)
    return bool(obj[0])


# ---- sharded evaluation ---------------------------------------------------------------------------------------
def evaluate_split(model, split, which: str = "test", cfg=None, *, progress: bool = False):
    """:func:`qbert4rec_lib.experiments.evaluate.evaluate_split` with the users sharded over the ranks and the ranks gathered:
    every rank returns the same :class:`~qbert4rec_lib.experiments.evaluate.EvalResult` (all users' ranks, in user order)."""
    from .evaluate import EvalConfig, EvalResult, evaluate, evaluate_split as evaluate_one, metrics_from_ranks

    cfg = cfg or EvalConfig()
    if not active():
        return evaluate_one(model, split, which, cfg, progress=progress)
    if which not in ("valid", "test"):
        raise ValueError(f"evaluate_split: which must be 'valid' or 'test', got {which!r}")
    start = time.perf_counter()
    histories = split.valid_history if which == "valid" else split.test_history
    targets = np.asarray(split.valid_target if which == "valid" else split.test_target)
    users = np.arange(len(targets))[rank():: world_size()]
    max_len = split.max_len or max(len(h) for h in histories)
    if len(users):
        local = evaluate(model, [histories[u] for u in users], targets[users], split.num_items, cfg,
                         max_len=max_len, split_name=which, progress=progress and is_main())
        local_ranks, protocol = local.ranks, local.protocol
    else:
        local_ranks, protocol = np.zeros(0, dtype=np.int64), None
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, (users, local_ranks, protocol))
    ranks = np.empty(len(targets), dtype=np.int64)
    for part_users, part_ranks, _ in gathered:
        ranks[part_users] = part_ranks
    protocol = next(p for _, _, p in gathered if p is not None)
    return EvalResult(metrics=metrics_from_ranks(ranks, cfg), num_users=len(targets), protocol=protocol,
                      seconds=time.perf_counter() - start, ranks=ranks)


# ---- the torchrun entry point -----------------------------------------------------------------------------------
def _train(args) -> int:
    from dataclasses import replace

    from ..atomic import atomic_write_text
    from ..keys import _jsonable
    from ..kit.commands import _experiment_config, _open
    from ..config import seed_everything
    from .runs import _baseline_train, _build, _content, _fit_json
    from .stages import semantic_ids
    from .train import epoch_logger, fit

    cfg = _experiment_config(args)  # bad --set values fail before any process-group work
    if args.device != "cpu":
        dev = args.device
        if dev == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda: CUDA is not available on this machine")
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        cfg = replace(cfg, pretrain=replace(cfg.pretrain, device=dev), finetune=replace(cfg.finetune, device=dev),
                      baseline_train=replace(cfg.baseline_train, device=dev),
                      bert4rec_train=replace(cfg.bert4rec_train, device=dev) if cfg.bert4rec_train else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_from_env(args.device)
    r, W = rank(), world_size()
    print(f"rank {r} pid {os.getpid()} world {W}", flush=True)
    start = time.perf_counter()
    dataset = _open(args.data, args.name)
    split = dataset.split(max_len=cfg.max_len)
    ids = None
    if args.model == "Q-Bert4Rec":  # stages 1-2 through the cache: rank 0 builds it, the others then read it
        if is_main():
            ids = semantic_ids(dataset, cfg, progress=False)
        barrier()
        if ids is None:
            ids = semantic_ids(dataset, cfg, progress=False)
    seed_everything(args.seed)
    model = _build(args.model, dataset, split, cfg, ids, _content(cfg, dataset) if args.model == "Q-Bert4Rec" else None)
    log = epoch_logger(f"{args.model} seed {args.seed} rank {r}/{W}") if is_main() else None
    fits = {}
    phase_log = (lambda phase: (lambda e: log({**e, "phase": phase}))) if log else (lambda phase: None)
    if args.model == "Q-Bert4Rec":
        if cfg.do_pretrain:
            model.masking = cfg.pretrain_masks
            fits["pretrain"] = fit(model, split, replace(cfg.pretrain, seed=args.seed, max_len=cfg.max_len),
                                   eval_cfg=cfg.eval, progress=False, log=phase_log("pretrain"))
        model.masking = cfg.finetune_masks
        fits["finetune"] = fit(model, split, replace(cfg.finetune, seed=args.seed, max_len=cfg.max_len),
                               eval_cfg=cfg.eval, progress=False, log=phase_log("finetune"))
    else:
        fits["train"] = fit(model, split, replace(_baseline_train(args.model, cfg), seed=args.seed, max_len=cfg.max_len),
                            eval_cfg=cfg.eval, progress=False, log=log)
    valid = evaluate_split(model, split, "valid", cfg.eval)
    test = evaluate_split(model, split, "test", cfg.eval)
    train_cfg = cfg.finetune if args.model == "Q-Bert4Rec" else _baseline_train(args.model, cfg)
    if is_main():
        payload = {
            "model": args.model, "dataset": dataset.name, "data": args.data, "seed": args.seed,
            "world_size": W, "per_rank_batch": train_cfg.batch_size, "global_batch": train_cfg.batch_size * W,
            "lr": train_cfg.lr, "lr_rule": "as configured (no scaling with the world size)",
            "backend": dist.get_backend() if active() else None,
            "valid": valid.metrics, "test": test.metrics, "protocol": test.protocol,
            "fits": {k: _fit_json(f) for k, f in fits.items()}, "seconds": time.perf_counter() - start,
            "config": _jsonable(cfg),
        }
        import json

        if args.out:
            atomic_write_text(args.out, json.dumps(_jsonable(payload, finite=True), indent=2) + "\n")
        print(f"{args.model} seed {args.seed} on {W} process(es): test "
              + ", ".join(f"{k} {test.metrics[k]:.4f}" for k in ("NDCG@10", "HR@10") if k in test.metrics)
              + (f"; wrote {args.out}" if args.out else ""), flush=True)
    barrier()
    return 0


def main(argv=None) -> int:
    from .presets import MODEL_NAMES, PRESETS

    parser = argparse.ArgumentParser(prog="python -m qbert4rec_lib.experiments.distributed",
                                     description="Multi-process training (launch with torchrun; see the module doc)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model with DDP, evaluate (sharded), rank 0 writes --out JSON")
    p.add_argument("data", nargs="?", default="default", help='"default" (embedded catalog) or a data folder')
    p.add_argument("--name", default=None, help="dataset name in a folder holding several")
    p.add_argument("--config", default="smoke", choices=list(PRESETS))
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field")
    p.add_argument("--model", default="SASRec-CE", choices=[m for m in MODEL_NAMES if m != "Popularity"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: one GPU per rank (LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank (0 = torch's default)")
    p.add_argument("--out", default=None, help="the run's metrics JSON (written by rank 0, atomically)")
    args = parser.parse_args(argv)
    try:
        return _train(args)
    except KeyboardInterrupt:
        print(f"error: rank {rank()}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # one line naming the rank; torchrun adds which worker failed
        hint = " (another rank probably died: see torchrun's summary)" if active() and isinstance(exc, RuntimeError) else ""
        print(f"error: rank {rank()}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group cannot always be torn down cleanly
                pass


if __name__ == "__main__":
    sys.exit(main())
