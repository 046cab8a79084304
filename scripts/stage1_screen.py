"""Screen stage-1 / stage-2 settings on the embedded default catalog by what their tokens say about the attributes
that drive its sequences, before training any sequence model (docs/results.md: "Where stage 1 loses it").

    python scripts/stage1_screen.py            # every variant below
    python scripts/stage1_screen.py default ids_raw_text

For each variant: the normalised mutual information between each token level and the generator's subcategory, brand
and colour (0 = nothing, 1 = the attribute itself). Stages 1-2 take seconds per variant on one thread (features come
from the stage cache; the first call builds them, about a minute).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from sklearn.metrics import normalized_mutual_info_score  # scikit-learn comes with umap-learn

from qbert4rec_lib import open_dataset
from qbert4rec_lib.experiments.presets import preset
from qbert4rec_lib.experiments.stages import semantic_ids
from qbert4rec_lib.experiments.study import study_config


def variants(cfg):
    """name -> ExperimentConfig: the smoke preset with one stage-1/2 setting changed (two of them are study rows)."""
    fusion = lambda **kw: replace(cfg, fusion=replace(cfg.fusion, **kw))  # noqa: E731
    return {
        "default": cfg,
        "ids_raw_text": study_config("ids_raw_text", cfg),
        "fusion_epochs_60": fusion(epochs=60),
        "fusion_epochs_200": fusion(epochs=200),
        "no_modality_pair_terms": fusion(modality_pair_weight=0.0),
        "no_modality_dropout": fusion(modality_dropout=0.0),
        "temperature_0.07": fusion(contrastive_temperature=0.07),
        "temperature_0.5": fusion(contrastive_temperature=0.5),
        "gate_off": fusion(gate="off"),
        "fusion_text_structural": study_config("fusion_text_structural", cfg),
        "text_only": fusion(modalities=("text",)),
        "codebook_32": replace(cfg, rqvae=replace(cfg.rqvae, codebook_size=32)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="variants (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds, cfg = open_dataset("default"), preset("smoke")
    table = variants(cfg)
    gt = ds.ground_truth
    attrs = ("subcategory", "brand", "colour")
    print("| variant | " + " | ".join(f"level {lv} {a}" for lv in (1, 2) for a in attrs) + " |")
    print("|---|" + "---|" * (2 * len(attrs)))
    for name in args.names or table:
        ids = semantic_ids(ds, table[name], progress=False).table.ids
        cells = [f"{normalized_mutual_info_score(gt[a], ids[:, lv - 1]):.2f}" for lv in (1, 2) for a in attrs]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
