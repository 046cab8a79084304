"""What holds the sequence models back on the embedded default catalog, measured (docs/results.md: "How far from the best
possible"): test NDCG@10 of the ceiling, its references and the trained models (seed 0), split by what drew each test
item (the previous item's complementary subcategory, its brand, or anything else), and how pure the learned semantic
IDs are in the attributes that drive the sequences (the paper's learned tokens and the RQ-VAE on raw text features).

    python scripts/default_catalog_diagnosis.py [--seed 0]

Reads the trained models from the stage cache (trains any that are missing: the smoke preset's Q-Bert4Rec on its
learned tokens and on metadata tokens, SASRec-CE).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score  # scikit-learn comes with umap-learn

from qbert4rec_lib import open_dataset
from qbert4rec_lib.data.oracle import fitted_structure_scores, generator_of, oracle_scores
from qbert4rec_lib.experiments.evaluate import evaluate_scores, per_user_metric
from qbert4rec_lib.experiments.presets import preset
from qbert4rec_lib.experiments.runs import train_model
from qbert4rec_lib.experiments.stages import semantic_ids
from qbert4rec_lib.experiments.study import study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds, cfg = open_dataset("default"), preset("smoke")
    split = ds.split(max_len=cfg.max_len)
    _, catalog = generator_of(ds)
    gt = ds.ground_truth
    sub, brand = (np.concatenate([[-1], gt[a]]) for a in ("subcategory", "brand"))  # [N + 1], 0 = padding
    subs = catalog.labels["subcategory"]
    complement = np.array([subs.index(catalog.complements[s]) for s in subs])
    prev, target = np.array([h[-1] for h in split.test_history]), split.test_target
    kind = np.where(sub[target] == complement[sub[prev]], "complement",
                    np.where(brand[target] == brand[prev], "same brand", "other"))
    ranks = {"ceiling": evaluate_scores(oracle_scores(ds, "test"), split).ranks,
             "without taste": evaluate_scores(oracle_scores(ds, "test", taste=False), split).ranks,
             "fitted form": evaluate_scores(fitted_structure_scores(ds, "test", max_len=cfg.max_len)[0], split).ranks}
    for label, name, row in (("SASRec-CE", "SASRec-CE", None), ("Q-Bert4Rec (learned tokens)", "Q-Bert4Rec", None),
                             ("Q-Bert4Rec (metadata tokens)", "Q-Bert4Rec", "ids_metadata"),
                             ("Popularity", "Popularity", None)):
        run = train_model(name, ds, study_config(row, cfg) if row else cfg, seed=args.seed, split=split,
                          progress=False)
        ranks[label] = run.test.ranks
    kinds = ("complement", "same brand", "other")
    print("| ranking | test NDCG@10 | " + " | ".join(f"{k} ({(kind == k).mean():.0%} of users)" for k in kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for label, r in ranks.items():
        v = per_user_metric(r, "NDCG@10")
        print(f"| {label} | {v.mean():.4f} | " + " | ".join(f"{v[kind == k].mean():.3f}" for k in kinds) + " |")
    print("\nPurity of the semantic IDs (share of items in the majority attribute value of their token prefix):")
    tokens = {"learned (stages 1-2, the default)": semantic_ids(ds, cfg, progress=False).table.ids,
              "RQ-VAE on raw text (no stage 1; row ids_raw_text)":
                  semantic_ids(ds, study_config("ids_raw_text", cfg), progress=False).table.ids}
    for source, ids in tokens.items():
        print(f"{source}:")
        for attr in ("top_category", "subcategory", "brand"):
            cells = []
            for depth in (1, 2):
                _, prefix = np.unique(ids[:, :depth], axis=0, return_inverse=True)
                prefix = prefix.ravel()
                cells.append(sum(np.bincount(gt[attr][prefix == p]).max() for p in np.unique(prefix)) / len(prefix))
            print(f"- {attr}: level 1 {cells[0]:.2f}, two-token prefix {cells[1]:.2f}")
    attrs = ("top_category", "subcategory", "brand", "colour")
    print("\nHow much each token level says about each attribute (normalised mutual information, 0 = nothing, "
          "1 = the attribute itself):\n")
    print("| tokens | level | " + " | ".join(attrs) + " |")
    print("|---|---|" + "---|" * len(attrs))
    for source, ids in tokens.items():
        for level in range(ids.shape[1] - 1):  # the last column is the disambiguation token
            print(f"| {source} | {level + 1} | "
                  + " | ".join(f"{normalized_mutual_info_score(gt[a], ids[:, level]):.2f}" for a in attrs) + " |")


if __name__ == "__main__":
    main()
