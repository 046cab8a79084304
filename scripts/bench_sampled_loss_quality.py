"""What the sampled item loss gives up at a large catalog: full softmax vs sampled softmax (logQ-corrected), same steps.

``scripts/bench_item_loss.py`` times one step of each loss; ``figures/results/beauty_sampled_loss.md`` measured the
quality given up on Amazon Beauty (12k items, SASRec-CE to early stopping). This script measures it where the full
softmax starts to hurt: a generated catalog of ``--items`` items (default 100,000; users = 2 x items; the catalog and
its oracle semantic IDs of ``scripts/bench_scaling.py``). For each model it trains the same number of steps over the
same batches twice, once with ``item_loss="full"`` and once with ``item_loss="sampled"`` (``--negatives`` uniform
negatives shared by the batch, logQ correction), then ranks ``--eval-users`` sampled test users against all items
(exact full ranking) and prints test NDCG@10 / HR@10, the median step time and the training time of each, side by side.

A fixed, short budget (``--steps``), not training to convergence: it says how much ranking quality the cheaper loss
loses per step at this size, not where either would converge.

    python scripts/bench_sampled_loss_quality.py --items 100000 --steps 150 --models Q-Bert4Rec
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def build_model(name: str, num_items: int, ids, loss: str, negatives: int, item_head: str = "token_mlp"):
    import torch

    from qbert4rec_lib.models.baselines import SASRec, SASRecConfig
    from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig

    from bench_scaling import MAX_LEN

    torch.manual_seed(0)  # the same initial weights for both losses
    if name == "Q-Bert4Rec":
        from qbert4rec_lib.models.masking import FINETUNE_MASKS

        model = QBert4Rec(ids, config=QBertConfig(max_len=MAX_LEN, item_loss=loss, loss_negatives=negatives,
                                                  item_head=item_head))
        model.masking = FINETUNE_MASKS  # next-item training, as the kit fine-tunes
        return model
    if name == "SASRec-CE":
        return SASRec(num_items, SASRecConfig(max_len=MAX_LEN, item_loss=loss, loss_negatives=negatives))
    raise SystemExit(f"--models: {name!r} is not one of Q-Bert4Rec, SASRec-CE")


def main() -> None:
    import torch
    from dataclasses import replace

    from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate

    from bench_scaling import MAX_LEN, generate, make_split, peak_rss_gib, sample_users, train_steps

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=150, help="training steps of batch 256 for each loss")
    ap.add_argument("--negatives", type=int, default=1024)
    ap.add_argument("--models", nargs="*", default=["Q-Bert4Rec", "SASRec-CE"])
    ap.add_argument("--eval-users", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--item-head", default="token_mlp", choices=["token_mlp", "level_sum"],
                    help="Q-Bert4Rec's head (level_sum learns faster in few steps; see models/qbert_head.py)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    sequences, ids = generate(args.items, 2 * args.items)
    split = make_split(sequences, args.items)
    users = sample_users(split, args.eval_users)
    hist, targets = [split.test_history[u] for u in users], split.test_target[users]
    print(f"catalog: {args.items:,} items, {len(sequences):,} users ({time.perf_counter() - start:.0f} s)", flush=True)

    from qbert4rec_lib.experiments.breakdown import item_train_counts
    from qbert4rec_lib.models.baselines import Popularity

    floor = evaluate(Popularity(item_train_counts(split, args.items)), hist, targets, args.items, EvalConfig(),
                     max_len=MAX_LEN).metrics["NDCG@10"]  # the floor a trained model must clear
    print(f"Popularity: test NDCG@10 {floor:.4f}", flush=True)
    rows = []
    for name in args.models:
        for loss in ("full", "sampled"):
            model = build_model(name, args.items, ids, loss, args.negatives, args.item_head)
            times = train_steps(model, split, args.steps, lr=args.lr)
            attr = "config" if hasattr(model, "config") else "cfg"  # QBert4Rec.config, SASRec.cfg
            setattr(model, attr, replace(getattr(model, attr), item_loss="full"))  # evaluation scores every item
            res = evaluate(model, hist, targets, args.items, EvalConfig(), max_len=MAX_LEN)
            rows.append({"model": name, "loss": loss, "steps": args.steps, "median_step_s": statistics.median(times),
                         "train_s": sum(times), "NDCG@10": res.metrics["NDCG@10"], "HR@10": res.metrics["HR@10"],
                         "eval_s": res.seconds})
            print(json.dumps(rows[-1]), flush=True)

    lines = [f"{args.items:,} items, {2 * args.items:,} users (generated, `scripts/bench_scaling.py`'s catalog), "
             f"{args.steps} steps of batch 256 per run, lr {args.lr:g}, {args.threads} thread(s), Q-Bert4Rec head "
             f"{args.item_head}, "
             f"{args.eval_users:,} sampled test users ranked against all items; "
             f"`python scripts/bench_sampled_loss_quality.py {' '.join(sys.argv[1:])}` "
             f"({time.perf_counter() - start:.0f} s, peak RSS {peak_rss_gib():.2f} GiB); Popularity on the same users: "
             f"NDCG@10 {floor:.4f}", "",
             "| model | item loss | median step (s) | training (s) | test NDCG@10 | test HR@10 |", "|---|---|---|---|---|---|"]
    for r in rows:
        loss = "full softmax" if r["loss"] == "full" else f"sampled, {args.negatives} negatives, logQ"
        lines.append(f"| {r['model']} | {loss} | {r['median_step_s']:.2f} | {r['train_s']:.0f} | {r['NDCG@10']:.4f} | "
                     f"{r['HR@10']:.4f} |")
    for name in args.models:
        full, sampled = (next(r for r in rows if r["model"] == name and r["loss"] == k) for k in ("full", "sampled"))
        lines.append(f"\n{name}: sampled / full step time {sampled['median_step_s'] / full['median_step_s']:.2f} "
                     f"({full['median_step_s'] / sampled['median_step_s']:.1f}x faster), NDCG@10 "
                     f"{sampled['NDCG@10']:.4f} vs {full['NDCG@10']:.4f} "
                     f"({sampled['NDCG@10'] / full['NDCG@10'] - 1:+.0%}) after the same {args.steps} steps.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from qbert4rec_lib.atomic import atomic_write_json, atomic_write_text

        atomic_write_text(args.out + ".md", text + "\n")
        atomic_write_json(args.out + ".json", {"items": args.items, "steps": args.steps, "negatives": args.negatives,
                                               "item_head": args.item_head, "popularity_ndcg10": floor,
                                               "lr": args.lr, "eval_users": len(users), "rows": rows})


if __name__ == "__main__":
    main()
