"""Analysis: where does content k-NN beat the semantic IDs on new items, and do the IDs keep what it uses?

Evaluation only, on the models the ``cold-start`` command trained (run it first with the same preset, split and seed;
they load from the stage cache). For the users whose test item is new (cold users):

1. **By closeness to the last item.** Each cold user's target gets the cosine of its content vector (text + image, as
   content k-NN uses) with the user's last history item; per band of that cosine, the share of cold users and the
   among-new-items HR@10 (the target ranked among the new items only) of content k-NN and of Q-Bert4Rec's fused IDs.
2. **What the IDs keep.** How often the target shares its leading 1, 2, 3 codebook levels with the last item, for all
   cold users and for content k-NN's hits (target in its top 10 of all items) and misses.
3. **A semantic-ID match bonus** (``--bonuses``): every item, warm or new alike, gets ``b`` x (number of leading
   levels it shares with the user's last item) added to Q-Bert4Rec's score -- a content-similarity signal read off the
   IDs alone. ``b`` is a knob only if chosen on all users' validation NDCG@10 (the printed column); test HR@10 of warm
   and cold users and among new items beside it.

    .venv/bin/python scripts/coldstart_similarity.py ../shared/data/amazon-beauty --config beauty --by time --seed 0 \
        --bonuses 0 0.5 1 2 4 --out figures/results/coldstart_similarity_beauty.md
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BANDS = (-1.0, 0.5, 0.7, 0.8, 0.9, 1.01)


def shared_levels(codes: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``[B, N + 1]``: how many leading levels of each item's codes (``codes`` ``[N + 1, L]``) equal those of each
    user's last item (``last`` ``[B, L]``)."""
    same = codes[None, :, :] == last[:, None, :]  # [B, N + 1, L]
    return torch.cumprod(same.to(torch.int8), dim=2).sum(dim=2)


def main() -> None:
    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.experiments.coldstart_ids import cold_semantic_ids, content_vectors
    from qbert4rec_lib.experiments.coldstart_models import ContentKNN, _choose_k, _set_cold_rows, train_cold_model
    from qbert4rec_lib.experiments.coldstart_split import COLD_EVAL, cold_start_split, evaluate_users
    from qbert4rec_lib.experiments.presets import preset
    from qbert4rec_lib.semantic.features import build_features

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="default")
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--by", default="time", choices=["time", "random"], help="which items are new")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the cached Q-Bert4Rec")
    parser.add_argument("--paths", nargs="*", default=["content+structure", "mean"],
                        help="stage-1 paths of the new items' fused IDs")
    parser.add_argument("--bonuses", nargs="*", type=float, default=[], help="match-bonus values b (0 = the model)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    ds, cfg = open_dataset(args.data), preset(args.config)
    cs = cold_start_split(ds, 0.1, by=args.by, seed=0, max_len=cfg.max_len)
    users = cs.cold_users
    last = np.array([cs.split.test_history[u][-1] for u in users])  # item ids
    target = cs.split.test_target[users]
    full = replace(cs.split, train=cs.train_full, max_len=0)
    vectors = content_vectors(build_features(ds, cfg.features, split=full))  # [N, D], row = id - 1
    k, _ = _choose_k(vectors, cs.train_split)  # content k-NN's neighbourhood, chosen on validation as in the table
    knn = ContentKNN(vectors, k)
    knn_new = evaluate_users(knn, cs.split, users, COLD_EVAL, candidates=cs.cold_items).ranks
    knn_hit = evaluate_users(knn, cs.split, users, COLD_EVAL).ranks <= 10
    a, b = vectors[last - 1], vectors[target - 1]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)

    ids = cold_semantic_ids(ds, cs, cfg, "fused")
    model, _ = train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=args.seed, ids=ids)
    q_new = {}
    for path in args.paths:
        _set_cold_rows(model, ids.tables[path])
        q_new[path] = evaluate_users(model, cs.split, users, COLD_EVAL, candidates=cs.cold_items).ranks

    out = [f"# Where content k-NN beats the semantic IDs on new items ({ds.name}, {args.by} split)", "",
           f"Command: `.venv/bin/python scripts/coldstart_similarity.py {' '.join(sys.argv[1:])}`", "",
           f"{cs.describe()}. Q-Bert4Rec: fused IDs, seed {args.seed}, the cold-start command's cached model; content "
           f"k-NN with k = {k} (chosen on validation). Evaluation only.", "",
           "## 1. Cold users by the cosine of their target with their last item (content vectors)", "",
           "| cosine band | share of cold users | content k-NN: HR@10 among new | "
           + " | ".join(f"Q-Bert4Rec ({p}): HR@10 among new" for p in args.paths) + " |",
           "|---|---|---|" + "---|" * len(args.paths)]
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        band = (cosine >= lo) & (cosine < hi)
        if band.any():
            cells = [f"{np.mean(r[band] <= 10):.4f}" for r in [knn_new] + [q_new[p] for p in args.paths]]
            out.append(f"| [{max(lo, -1):g}, {min(hi, 1):g}{']' if hi > 1 else ')'} | {band.mean():.3f} | "
                       + " | ".join(cells) + " |")
    out += ["", "## 2. Leading codebook levels the target shares with the last item", "",
            "| IDs | levels | all cold users | content k-NN hits | content k-NN misses |", "|---|---|---|---|---|"]
    for path in args.paths:
        table = ids.tables[path]
        for depth in (1, 2, 3):
            same = np.all(table[target - 1, :depth] == table[last - 1, :depth], axis=1)
            out.append(f"| fused, {path} | 1-{depth} | {same.mean():.3f} | {same[knn_hit].mean():.3f} | "
                       f"{same[~knn_hit].mean():.3f} |")
    out.append(f"\nContent k-NN's hits: {int(knn_hit.sum())} of {len(users):,} cold users.")

    if args.bonuses:
        warm_valid = np.setdiff1d(np.arange(ds.num_users), cs.cold_valid_users)
        out += ["", "## 3. Match bonus: b x (leading levels shared with the last item), every item alike", "",
                "| path | b | valid NDCG@10, all users | warm HR@10 | cold HR@10 | cold HR@10 among new |",
                "|---|---|---|---|---|---|"]
        base = model.score_all
        for path in args.paths:
            table = ids.tables[path]
            _set_cold_rows(model, table)
            codes = torch.as_tensor(np.vstack([np.full((1, table.shape[1]), -1), table])[:, :-1])  # [N + 1, L - 1]
            for bonus in args.bonuses:
                def scored(histories, bonus=bonus, codes=codes):
                    scores = base(histories)  # [B, N + 1], a fresh tensor
                    return scores if bonus == 0 else scores + bonus * shared_levels(codes, codes[histories[:, -1]])

                model.score_all = scored
                hr = {name: evaluate_users(model, cs.split, group, COLD_EVAL).metrics["HR@10"]
                      for name, group in (("warm", cs.warm_users), ("cold", users))}
                new = evaluate_users(model, cs.split, users, COLD_EVAL, candidates=cs.cold_items).metrics["HR@10"]
                valid = sum(evaluate_users(model, cs.split, group, COLD_EVAL, which="valid").metrics["NDCG@10"]
                            * len(group) for group in (warm_valid, cs.cold_valid_users)) / ds.num_users
                out.append(f"| {path} | {bonus:g} | {valid:.4f} | {hr['warm']:.4f} | {hr['cold']:.4f} | {new:.4f} |")
                print(out[-1], flush=True)
        model.score_all = base
    out.append(f"\n({time.perf_counter() - started:.0f} s)")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        from qbert4rec_lib.atomic import atomic_write_text

        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
