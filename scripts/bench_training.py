"""Benchmark: training throughput and full-ranking evaluation time on Amazon Beauty (CPU).

Prints, per model, training sequences/s and targets/s (medians of ``--repeats`` timed slices of
``--batches`` batches, after a warm-up) and the time to rank all items for all 22,363 test users
(median of ``--repeats``), next to the RecBole 1.2.1 figures measured on the same kind of machine
(``shared/notes/speed.md``: SASRec-CE 554 targets/s, BERT4Rec 236 targets/s, 24-28 s to evaluate).

A "target" is one predicted next item. SASRec predicts every position of a sequence in one pass
(``len - 1`` targets); RecBole feeds one prefix per row, so its targets/s is rows/s and its epoch
holds the same 131,413 targets as ours. BERT4Rec-style models predict only masked positions.

``--curve`` instead trains SASRec-CE with the kit's defaults for at most ``--minutes`` (default 10)
and prints the learning curve (validation NDCG@10 per epoch) and the final test metrics.

    .venv/bin/python scripts/bench_training.py                 # throughput + eval table
    .venv/bin/python scripts/bench_training.py --curve         # SASRec-CE, 10 minutes, learning curve

Q-Bert4Rec is timed with *random* semantic IDs (4 levels: 3 x 256 + a disambiguation level): its
speed does not depend on which IDs it gets. It is timed twice: as trained (the encoder runs per
length group, ``QBertConfig.group_by_length``) and along the previous path (one pass over each
batch padded to its longest row), so the speed-up is a ratio measured in one run. Other engineers share the CPU: run it once, quietly.
On a shared 2-core machine, torch's default 2 threads are several times *slower* than
``--threads 1`` (the OpenMP threads wait on each other whenever one is descheduled); the
thread count is printed with the results.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qbert4rec_lib.models.baselines import BERT4RecID, Popularity, SASRec  # noqa: E402
from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate_split  # noqa: E402
from qbert4rec_lib.models.base import pad_left  # noqa: E402
from qbert4rec_lib.experiments.train import TrainConfig, fit, make_batches  # noqa: E402

RECBOLE = {  # shared/notes/speed.md, same machine kind, batch 256, hidden 64, 2 layers, max length 50
    "SASRec-CE": {"targets_per_s": 554, "epoch_s": 237, "eval_s": 24.5},
    "BERT4Rec-ID": {"targets_per_s": 236, "epoch_s": 557, "eval_s": 27.0},
    "Popularity": {"eval_s": 15.0},
}


def load_split(path: Path, max_len: int):
    try:
        from qbert4rec_lib.data.loaders import load_dataset

        dataset = load_dataset(path)
        return dataset.split(max_len), dataset.num_items
    except ImportError:  # the loader module is not there: read user_sequence.txt directly
        from qbert4rec_lib.data.dataset import LeaveOneOutSplit

        ids: dict[str, int] = {}
        seqs = []
        for line in open(path / "user_sequence.txt", encoding="utf-8"):
            parts = line.split()
            seqs.append(np.array([ids.setdefault(a, len(ids) + 1) for a in parts[1:]], dtype=np.int64))

        def cut(a):
            return a[-max_len:]

        split = LeaveOneOutSplit(
            [cut(s[:-2]) for s in seqs], [cut(s[:-2]) for s in seqs], np.array([s[-2] for s in seqs]),
            [cut(s[:-1]) for s in seqs], np.array([s[-1] for s in seqs]), len(ids), max_len,
        )
        return split, len(ids)


def random_semantic_ids(num_items: int, seed: int = 0) -> np.ndarray:
    """[N, 4]: three random 256-way levels + an occurrence index that keeps every tuple unique."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, 256, size=(num_items, 3))
    last = np.zeros(num_items, dtype=np.int64)
    counts: dict[tuple, int] = {}
    for k, p in enumerate(map(tuple, prefix)):
        last[k] = counts.get(p, 0)
        counts[p] = last[k] + 1
    return np.concatenate([prefix, last[:, None]], axis=1)


def build_models(split, num_items: int) -> dict:
    torch.manual_seed(0)
    models = {"Popularity": Popularity.from_split(split), "SASRec-CE": SASRec(num_items),
              "BERT4Rec-ID": BERT4RecID(num_items)}
    try:
        from qbert4rec_lib.models.qbert import QBert4Rec

        from qbert4rec_lib.models.qbert import QBertConfig

        ids = random_semantic_ids(num_items)
        models["Q-Bert4Rec (random IDs)"] = QBert4Rec(ids)
        # the previous training path, side by side: one pass over the batch padded to its longest row
        torch.manual_seed(0)
        models["Q-Bert4Rec, one padded pass (old path)"] = QBert4Rec(ids, config=QBertConfig(group_by_length=False))
    except Exception as exc:  # another engineer's module: report, don't fail the benchmark
        print(f"(Q-Bert4Rec skipped: {type(exc).__name__}: {exc})")
    return models


def time_training(model, split, cfg: TrainConfig, batches: int, repeats: int) -> dict:
    """The same inner loop as :func:`qbert4rec_lib.experiments.train.fit`, timed over fixed slices of batches."""
    sequences = [np.asarray(s[-cfg.max_len:], dtype=np.int64) for s in split.train]
    lengths = np.array([len(s) for s in sequences])
    order = make_batches(lengths, cfg, np.random.default_rng(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()

    def step(index) -> float:
        batch = pad_left([sequences[i] for i in index], int(lengths[index].max()))  # [B, T]
        out = model.loss(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return float(out.parts.get("targets", float("nan")))

    for index in order[:2]:  # warm-up
        step(index)
    seq_rates, target_rates = [], []
    for r in range(repeats):
        chunk = order[2 + r * batches: 2 + (r + 1) * batches]
        start = time.perf_counter()
        targets = sum(step(index) for index in chunk)
        seconds = time.perf_counter() - start
        seq_rates.append(sum(len(i) for i in chunk) / seconds)
        target_rates.append(targets / seconds)
    per_epoch_targets = float(sum(max(0, n - 1) for n in lengths))
    return {
        "sequences_per_s": statistics.median(seq_rates),
        "targets_per_s": statistics.median(target_rates),
        "epoch_s": len(sequences) / statistics.median(seq_rates),
        "sasrec_targets_per_epoch": per_epoch_targets,
    }


def time_evaluation(model, split, repeats: int) -> float:
    return statistics.median(evaluate_split(model, split, "test", EvalConfig()).seconds for _ in range(repeats))


def bench(args) -> None:
    split, num_items = load_split(Path(args.data), 50)
    print(f"Beauty: {split.num_users:,} users, {num_items:,} items; torch threads {torch.get_num_threads()}")
    cfg = TrainConfig()
    rows = []
    for name, model in build_models(split, num_items).items():
        train = None if name == "Popularity" else time_training(model, split, cfg, args.batches, args.repeats)
        eval_s = time_evaluation(model, split, args.repeats)
        rows.append((name, train, eval_s))
        print(f"  {name}: done", flush=True)

    def fmt(x, spec=",.0f"):
        return "–" if x is None or x != x else format(x, spec)

    print("\n| model | train seq/s | train targets/s | epoch (s) | × RecBole targets/s | eval 22,363 users (s) "
          "| × faster than RecBole eval |")
    print("|---|---|---|---|---|---|---|")
    for name, train, eval_s in rows:
        ref = RECBOLE.get(name, {})
        tps = train["targets_per_s"] if train else None
        ratio = tps / ref["targets_per_s"] if tps and "targets_per_s" in ref else None
        eval_ratio = ref["eval_s"] / eval_s if "eval_s" in ref else None
        print(f"| {name} | {fmt(train and train['sequences_per_s'])} | {fmt(tps)} | "
              f"{fmt(train and train['epoch_s'], '.1f')} | {fmt(ratio, '.1f')} | {eval_s:.2f} | {fmt(eval_ratio, '.1f')} |")
    rates = {name: train["sequences_per_s"] for name, train, _ in rows if train}
    new, old = rates.get("Q-Bert4Rec (random IDs)"), rates.get("Q-Bert4Rec, one padded pass (old path)")
    if new and old:
        print(f"\nQ-Bert4Rec training speed-up from length groups: {new / old:.2f}x ({new:,.0f} vs {old:,.0f} seq/s)")
    print(f"\nMedians of {args.repeats}; training slices of {args.batches} batches of {cfg.batch_size} after 2 warm-up "
          f"batches; evaluation = full ranking over all {num_items:,} items, history excluded, test split. "
          f"Peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB.")


def curve(args) -> None:
    split, num_items = load_split(Path(args.data), 50)
    torch.manual_seed(args.seed)
    model = SASRec(num_items)
    cfg = TrainConfig(seed=args.seed, time_limit_s=args.minutes * 60)
    print(f"SASRec-CE on Beauty, {model.cfg}, {cfg}; torch threads {torch.get_num_threads()}")
    print("| epoch | train loss | epoch (s) | valid NDCG@10 | valid HR@10 | elapsed (s) |\n|---|---|---|---|---|---|")
    start = time.perf_counter()

    def log(e):
        v = e["valid"] or {}
        print(f"| {e['epoch']} | {e['train_loss']:.4f} | {e['seconds']:.1f} | {v.get('NDCG@10', float('nan')):.4f} "
              f"| {v.get('HR@10', float('nan')):.4f} | {time.perf_counter() - start:.0f} |", flush=True)

    result = fit(model, split, cfg, progress=False, log=log)
    test = evaluate_split(model, split, "test")
    print(f"\nbest epoch {result.best_epoch} (stopped: {result.stop_reason}), {result.seconds:.0f} s, "
          f"{result.train_sequences_per_second:,.0f} training sequences/s")
    print(f"test: {test}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon-beauty"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed training slice")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--curve", action="store_true", help="train SASRec-CE for --minutes, print the curve")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.data) / "user_sequence.txt").is_file():
        sys.exit(f"Beauty data not found at {args.data} (pass --data)")
    curve(args) if args.curve else bench(args)


if __name__ == "__main__":
    main()
