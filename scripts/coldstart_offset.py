"""Analysis: would a constant boost for new items lift cold-start HR@10 honestly?

Under the cold-start protocol (``qbert4rec_lib/experiments/coldstart.py``) the new items are the catalog's last
arrivals, i.e. its tail, and they never were a training target, so in a full ranking they sit below the warm items
even when the model orders them well among themselves (the table's "among new items" columns). A deployed system
knows which items are new, so one scalar ``offset`` added to every new item's score is a fair knob -- if it is
chosen on validation users of *both* kinds (a boost that helps cold users costs warm users).

For each seed this script loads the Q-Bert4Rec models the ``cold-start`` command trained (from the cache: run that
command first with the same preset and seeds), adds ``offset`` to the new items' scores and prints, per offset, the
validation NDCG@10 over all users (warm and cold validation items together, the honest selection criterion) and the
test HR@10 of warm and of cold users.

    .venv/bin/python scripts/coldstart_offset.py --seeds 3 4 5          # default catalog, smoke preset
    .venv/bin/python scripts/coldstart_offset.py ../shared/data/amazon-beauty --config beauty --seeds 0 \
        --sources fused raw_text --offsets -0.5 0 0.5 1 2                   # Beauty (its cold-start models cached)

The last column ranks each cold user's target among the new items only: an offset moves all new items together, so
it cannot change that ordering -- what it trades is warm users' accuracy for cold users'.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.experiments.coldstart_ids import cold_semantic_ids
    from qbert4rec_lib.experiments.coldstart_models import _set_cold_rows, train_cold_model
    from qbert4rec_lib.experiments.coldstart_split import COLD_EVAL, cold_start_split, evaluate_users
    from qbert4rec_lib.experiments.presets import preset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="default")
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--seeds", nargs="*", type=int, default=[3, 4, 5])
    parser.add_argument("--offsets", nargs="*", type=float, default=[0.0, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--path", default="content+structure", help="stage-1 path of the fused IDs' new items")
    parser.add_argument("--sources", nargs="*", default=["fused", "raw_text"], choices=["fused", "raw_text"],
                        help="which semantic IDs (each needs its cold-start model in the cache)")
    parser.add_argument("--by", default="time", choices=["time", "random"], help="which items are new")
    parser.add_argument("--path-neighbours", nargs="*", type=int, default=[10],
                        help="fused IDs: content neighbours of the content paths; the model is the one trained with "
                             "the default 10 (the cold rows never reach training), so each value only re-labels the "
                             "new items")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds, cfg = open_dataset(args.data), preset(args.config)
    cs = cold_start_split(ds, 0.1, by=args.by, seed=0, max_len=cfg.max_len)
    new = torch.as_tensor(cs.cold_items)
    warm_valid = np.setdiff1d(np.arange(ds.num_users), cs.cold_valid_users)
    print(f"{cs.describe()}\n")
    print("| IDs | seed | offset | valid NDCG@10, all users | test HR@10 warm users | test HR@10 cold users "
          "| test HR@10 cold users, among new items |")
    print("|---|---|---|---|---|---|---|")
    paths = {"fused": args.path, "raw_text": "frozen"}
    runs = [(s, k) for s in args.sources for k in (args.path_neighbours if s == "fused" else [10])]
    for source, k in runs:
        path = paths[source]
        trained = cold_semantic_ids(ds, cs, cfg, source)  # the IDs the model was trained with (warm rows)
        ids = trained if k == 10 else cold_semantic_ids(ds, cs, cfg, source, paths=(path,), content_k=k)
        if not np.array_equal(ids.tables[path][cs.warm_rows], trained.tables[path][cs.warm_rows]):
            raise SystemExit(f"path_neighbours {k}: stage 1-2 gave other warm IDs than the trained model's")
        width = trained.vocab_sizes[-1]
        if int(ids.tables[path][:, -1].max()) >= width:
            raise SystemExit(f"path_neighbours {k}: a new item's disambiguation token exceeds the trained model's "
                             f"table ({width} rows); train the model with these IDs (cold-start --path-neighbours)")
        label = f"{source} ({path}" + (f", {k} neighbours)" if source == "fused" else ")")
        for seed in args.seeds:
            model, _ = train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=seed, ids=trained)
            _set_cold_rows(model, ids.tables[path])
            score_all = model.score_all
            for offset in args.offsets:
                def boosted(histories, offset=offset):
                    scores = score_all(histories).clone()  # [B, N+1]
                    scores[:, new] += offset
                    return scores

                model.score_all = boosted
                hr = {k: evaluate_users(model, cs.split, users, COLD_EVAL).metrics["HR@10"]
                      for k, users in (("warm", cs.warm_users), ("cold", cs.cold_users))}
                hr["new"] = evaluate_users(model, cs.split, cs.cold_users, COLD_EVAL,
                                           candidates=cs.cold_items).metrics["HR@10"]
                valid = [evaluate_users(model, cs.split, users, COLD_EVAL, which="valid").metrics["NDCG@10"] * len(users)
                         for users in (warm_valid, cs.cold_valid_users)]
                print(f"| {label} | {seed} | {offset:g} | {sum(valid) / ds.num_users:.4f} | "
                      f"{hr['warm']:.4f} | {hr['cold']:.4f} | {hr['new']:.4f} |", flush=True)
            model.score_all = score_all


if __name__ == "__main__":
    main()
