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
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.experiments.coldstart_ids import cold_semantic_ids
    from qbert4rec_lib.experiments.coldstart_models import _set_cold_rows, train_cold_model
    from qbert4rec_lib.experiments.coldstart_similarity import shared_levels, similarity_breakdown
    from qbert4rec_lib.experiments.coldstart_split import COLD_EVAL, cold_start_split, evaluate_users
    from qbert4rec_lib.experiments.presets import preset

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
    out = [f"# Where content k-NN beats the semantic IDs on new items ({ds.name}, {args.by} split)", "",
           f"Command: `.venv/bin/python scripts/coldstart_similarity.py {' '.join(sys.argv[1:])}`", "",
           "Evaluation only, on the cold-start command's cached models "
           "(`qbert4rec_lib.experiments.coldstart_similarity`)."]
    for path in args.paths:
        out += ["", f"## Stage-1 path `{path}`", "", similarity_breakdown(ds, cfg, by=args.by, seed=args.seed,
                                                                          path=path).table()]
    if args.bonuses:
        cs = cold_start_split(ds, 0.1, by=args.by, seed=0, max_len=cfg.max_len)
        ids = cold_semantic_ids(ds, cs, cfg, "fused")
        model, _ = train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=args.seed, ids=ids)
        warm_valid = np.setdiff1d(np.arange(ds.num_users), cs.cold_valid_users)
        out += ["", "## Match bonus: b x (leading levels shared with the last item), every item alike", "",
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
                      for name, group in (("warm", cs.warm_users), ("cold", cs.cold_users))}
                new = evaluate_users(model, cs.split, cs.cold_users, COLD_EVAL,
                                     candidates=cs.cold_items).metrics["HR@10"]
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
