"""Beam search vs exact full ranking on Amazon Beauty (12,101 items) with the trained Q-Bert4Rec (a script, not a test).

Loads Q-Bert4Rec seed 0 of the ``beauty`` preset from the stage cache (trained by ``experiment``/``study`` on this
machine; on a cache miss it is trained first, which takes over an hour), then evaluates the test split exactly and with
beam search at several widths, timing each (one thread), and prints a markdown table. The default ``token_mlp`` head
ranks prefixes by the mean item score below them (see :mod:`qbert4rec_lib.experiments.retrieval`).

    python scripts/bench_beam_beauty.py ../shared/data/amazon-beauty --semantic-ids figures/results/semantic_ids/amazon-beauty
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> int:
    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.experiments import preset, semantic_ids
    from qbert4rec_lib.experiments.evaluate import evaluate_split
    from qbert4rec_lib.experiments.retrieval import PrefixTrie, evaluate_split_beam
    from qbert4rec_lib.experiments.runs import train_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--semantic-ids", default=None)
    ap.add_argument("--beams", nargs="*", type=int, default=[10, 50, 200])
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds, cfg = open_dataset(args.data), preset("beauty")
    split = ds.split(max_len=cfg.max_len)
    ids = semantic_ids(ds, cfg, pinned=args.semantic_ids, progress=False)
    run = train_model("Q-Bert4Rec", ds, cfg, seed=0, split=split, ids=ids, progress=False)  # a cache hit here
    if not run.from_cache:
        print("note: Q-Bert4Rec was trained now (no cached model on this machine)", file=sys.stderr)
    model = run.model.eval()
    t0 = time.perf_counter()
    exact = evaluate_split(model, split, "test", cfg.eval)
    rows = [("exact full ranking", time.perf_counter() - t0, exact.metrics)]
    trie = PrefixTrie.from_model(model) if hasattr(PrefixTrie, "from_model") else None
    for width in args.beams:
        t0 = time.perf_counter()
        res = evaluate_split_beam(model, split, "test", cfg.eval, beam_width=width, trie=trie)
        rows.append((f"beam {width}", time.perf_counter() - t0, res.metrics))
    base = rows[0][1]
    print(f"Amazon Beauty, {ds.num_items:,} items, {len(split.test_target):,} test users, Q-Bert4Rec seed 0 "
          f"({cfg.qbert.item_head} head), 1 thread\n")
    print("| method | seconds | x faster than exact | NDCG@10 | HR@10 |\n|---|---|---|---|---|")
    for name, sec, m in rows:
        print(f"| {name} | {sec:.1f} | {base / sec:.1f} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
