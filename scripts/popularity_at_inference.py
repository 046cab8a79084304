"""Analysis: is Q-Bert4Rec's lean towards popular items a calibration error that inference can undo?

``breakdown`` measured that Q-Bert4Rec (token_mlp head, no per-item parameter) gives most of its top-10 slots to
popular items and loses to SASRec-CE on rarely seen test items. If that lean were a miscalibrated popularity term,
turning it down at inference would lift validation NDCG@10. This script loads the trained Q-Bert4Rec of one seed
(from the cache: it trains it when the run is not cached) and re-ranks validation and test users with

- ``prior_scale`` a: ``s(i) = g(h) . v_i + a * prior_i`` (a = 1 is the model; ``prior_i`` is the content prior
  the item MLP computes from the item's tokens), and
- ``logpop_penalty`` b: ``s(i) - b * log(1 + n_i)`` with ``n_i`` the item's training occurrences (a diagnostic
  that reads item counts, so not a pure semantic-ID model),

printing validation and test NDCG@10 and the catalog coverage of the test top-10 lists. Choose on validation.

    .venv/bin/python scripts/popularity_at_inference.py default --config smoke --seed 0
    .venv/bin/python scripts/popularity_at_inference.py ../shared/data/amazon-beauty --config beauty --seed 1 \\
        --semantic-ids figures/results/semantic_ids/amazon-beauty --out figures/results/beauty_popularity_at_inference_seed1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.experiments.breakdown import item_train_counts
    from qbert4rec_lib.experiments.evaluate import evaluate, protocol_text
    from qbert4rec_lib.experiments.presets import preset
    from qbert4rec_lib.experiments.runs import train_model
    from qbert4rec_lib.experiments.stages import semantic_ids

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="default")
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--semantic-ids", default=None, help="pinned semantic IDs (as for `experiment`)")
    parser.add_argument("--prior-scales", nargs="*", type=float, default=[1.0, 0.75, 0.5, 0.25, 0.0])
    parser.add_argument("--logpop-penalties", nargs="*", type=float, default=[0.1, 0.2, 0.4])
    parser.add_argument("--out", default=None, help="also write the table here (OUT.md) and its rows (OUT.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    ds, cfg = open_dataset(args.data), preset(args.config)
    split = ds.split(max_len=cfg.max_len)
    ids = semantic_ids(ds, cfg, progress=False, pinned=args.semantic_ids)
    run = train_model("Q-Bert4Rec", ds, cfg, seed=args.seed, split=split, ids=ids, progress=False)
    model, d = run.model, run.model.config.hidden
    if model.item_encoder is None:
        raise SystemExit("this analysis needs the token_mlp head (its prior_i column)")
    log_counts = torch.tensor(np.log1p(item_train_counts(split, ds.num_items)[1:]), dtype=torch.float32)  # [N]
    with torch.no_grad():
        base = model.item_vectors()  # [N, d + 1]: v_i and prior_i

    rows = []
    settings = [("prior_scale", a) for a in args.prior_scales] + [("logpop_penalty", b) for b in args.logpop_penalties]
    for kind, value in settings:
        vectors = base.clone()
        vectors[:, d] = vectors[:, d] * value if kind == "prior_scale" else vectors[:, d] - value * log_counts
        model._scoring_vectors = vectors  # what score_all reads inside model.scoring()
        try:
            valid = evaluate(model, split.valid_history, split.valid_target, ds.num_items, cfg.eval,
                             max_len=cfg.max_len, split_name="valid")
            test = evaluate(model, split.test_history, split.test_target, ds.num_items, cfg.eval,
                            max_len=cfg.max_len, top_k=10)
        finally:
            model._scoring_vectors = None
        coverage = len(np.unique(test.top_items)) / ds.num_items
        rows.append((kind, value, valid.metrics["NDCG@10"], test.metrics["NDCG@10"], coverage))
        print(f"{kind} {value}: valid NDCG@10 {rows[-1][2]:.4f} | test NDCG@10 {rows[-1][3]:.4f} | "
              f"test top-10 coverage {coverage:.3f}", flush=True)

    lines = [f"Q-Bert4Rec, {ds.name}, config `{args.config}`, seed {args.seed} "
             f"(`python scripts/popularity_at_inference.py {' '.join(sys.argv[1:])}`, {time.perf_counter() - start:.0f} s)",
             "", "| inference change | value | valid NDCG@10 | test NDCG@10 | test top-10 catalog coverage |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v:g} | {va:.4f} | {te:.4f} | {cov:.1%} |" for k, v, va, te, cov in rows]
    best = max(rows, key=lambda r: r[2])
    lines += ["", f"Best on validation: {best[0]} {best[1]:g}. Protocol: {protocol_text(cfg.eval, 'test', ds.num_items)}"]
    if args.out:
        from qbert4rec_lib.atomic import atomic_write_json, atomic_write_text

        out = str(args.out).removesuffix(".md")
        atomic_write_text(out + ".md", "\n".join(lines) + "\n")
        atomic_write_json(out + ".json", {
            "dataset": ds.name, "config": args.config, "seed": args.seed, "command": " ".join(sys.argv),
            "protocol": protocol_text(cfg.eval, "test", ds.num_items), "best_on_validation": [best[0], best[1]],
            "rows": [{"change": k, "value": v, "valid_ndcg10": va, "test_ndcg10": te, "test_top10_coverage": cov}
                     for k, v, va, te, cov in rows]})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
