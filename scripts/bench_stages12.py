"""Benchmark stages 1 and 2 on Amazon Beauty (text + structural features): training time and ID health.

    .venv/bin/python scripts/bench_stages12.py [--data ../shared/data/amazon-beauty] [--threads 2]

Prints, for stage 1 (fusion) and stage 2 (RQ-VAE): total training time, median seconds per epoch,
and the quality figures the issue asks for: level-1 codebook usage, unique semantic IDs before and
after disambiguation, and level-1 purity against the top category (level-2 prefix against the
subcategory) next to a random assignment with the same code sizes. The RQ-VAE is also trained on the
raw text features ("no fusion" ablation) for comparison. Features come from ``build_features`` and
its cache (the first text encoding of Beauty takes minutes on 2 cores). Timings are single runs
(no cache) on this machine; read them as ratios between rows, not as absolute guarantees.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon-beauty"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (library default 1; 0 = torch's default)")
    parser.add_argument("--fusion-epochs", type=int, default=None, help="override FusionConfig.epochs")
    parser.add_argument("--rq-epochs", type=int, default=None, help="override RQVAEConfig.epochs")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--thread-check", action="store_true",
                        help="only time 2 fusion epochs and 5 RQ-VAE epochs with 1 and with 2 torch threads")
    args = parser.parse_args()

    import torch

    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.semantic.features import FeatureConfig, build_features, pooled
    from qbert4rec_lib.semantic.fusion import FusionConfig, train_fusion
    from qbert4rec_lib.semantic.code_health import category_purity, random_purity_baseline
    from qbert4rec_lib.semantic.quantize import RQVAEConfig, train_rqvae

    print(f"torch {torch.__version__}, training threads {args.threads or torch.get_num_threads()}, device {args.device}")

    t0 = time.perf_counter()
    ds = open_dataset(args.data)
    features = build_features(ds, FeatureConfig(modalities=("text", "image", "structural")), progress=False)
    feature_seconds = time.perf_counter() - t0
    cache_state = {m: f.meta.get("cache", "?") for m, f in features.modalities.items()}
    print(f"{ds.name}: {ds.num_items:,} items; modalities {sorted(features.modalities)} "
          f"(absent: {sorted(features.absent)}); load + features {feature_seconds:.1f} s, cache {cache_state}")

    fusion_cfg = FusionConfig()
    if args.fusion_epochs is not None:
        fusion_cfg = dataclasses.replace(fusion_cfg, epochs=args.fusion_epochs)
    rq_cfg = RQVAEConfig()
    if args.rq_epochs is not None:
        rq_cfg = dataclasses.replace(rq_cfg, epochs=args.rq_epochs)

    if args.thread_check:
        medians = {}
        for n in (1, 2):
            short = train_fusion(features, dataclasses.replace(fusion_cfg, epochs=2), progress=False, threads=n)
            rq = train_rqvae(short.embeddings, dataclasses.replace(rq_cfg, epochs=5), progress=False, threads=n)
            medians[n] = (np.median([h["seconds"] for h in short.history]), np.median([h["seconds"] for h in rq.history]))
            print(f"{n} thread(s): fusion {medians[n][0]:.2f} s/epoch, RQ-VAE {medians[n][1]:.3f} s/epoch")
        print(f"2 threads / 1 thread: fusion {medians[2][0] / medians[1][0]:.2f}x, RQ-VAE {medians[2][1] / medians[1][1]:.2f}x")
        return 0

    fusion = train_fusion(features, fusion_cfg, progress=False, device=args.device, threads=args.threads)
    print(f"fusion: {fusion.seconds:.1f} s for {fusion_cfg.epochs} epochs, mean exit depth {fusion.exit_depth.mean():.2f}, "
          f"exit depths {np.bincount(fusion.exit_depth, minlength=fusion_cfg.max_depth + 1)[1:].tolist()}")

    top = ds.items.top_categories(0)
    sub = ds.items.top_categories(1)
    rows = []
    sources = {"fused (stage 1)": fusion.embeddings, "raw text (no fusion)": pooled(features.modalities["text"])}
    results = {}
    for name, emb in sources.items():
        res = train_rqvae(emb, rq_cfg, progress=False, device=args.device, threads=args.threads)
        results[name] = res
        lv1 = res.health["levels"][0]
        rows.append({
            "source": name,
            "rq_seconds": res.seconds,
            "rq_epoch_median_s": float(np.median([h["seconds"] for h in res.history])),
            "K": res.codebook_size,
            "usage_l1": lv1["usage"],
            "perplexity_l1": lv1["perplexity"],
            "usage_l2": res.health["levels"][1]["usage"] if len(res.health["levels"]) > 1 else float("nan"),
            "usage_l3": res.health["levels"][2]["usage"] if len(res.health["levels"]) > 2 else float("nan"),
            "unique_before": res.health["unique_before"],
            "largest_group": res.health["largest_group"],
            "unique_after": len(np.unique(res.semantic_ids, axis=0)) / len(res.semantic_ids),
            "purity_l1_top": category_purity(res.codes[:, 0], top, ignore="(none)"),
            "random_l1_top": random_purity_baseline(res.codes[:, 0], top, ignore="(none)"),
            "purity_l2_sub": category_purity(res.codes[:, :2], sub, ignore="(none)"),
            "random_l2_sub": random_purity_baseline(res.codes[:, :2], sub, ignore="(none)"),
        })

    print()
    print("| stage | total s | median s/epoch | epochs |")
    print("|---|---|---|---|")
    print(f"| fusion (stage 1) | {fusion.seconds:.1f} | {np.median([h['seconds'] for h in fusion.history]):.2f} | {fusion_cfg.epochs} |")
    for r in rows:
        print(f"| RQ-VAE on {r['source']} | {r['rq_seconds']:.1f} | {r['rq_epoch_median_s']:.3f} | {rq_cfg.epochs} |")
    print()
    print("| RQ-VAE input | K | usage L1 / L2 / L3 | perplexity L1 | unique before | largest group | unique after "
          "| purity L1 vs top cat (random) | purity L1-L2 prefix vs subcat (random) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['K']} | {r['usage_l1']:.1%} / {r['usage_l2']:.1%} / {r['usage_l3']:.1%} "
              f"| {r['perplexity_l1']:.1f} | {r['unique_before']:.2%} | {r['largest_group']} | {r['unique_after']:.0%} "
              f"| {r['purity_l1_top']:.3f} ({r['random_l1_top']:.3f}) | {r['purity_l2_sub']:.3f} ({r['random_l2_sub']:.3f}) |")
    print()
    fused_row = rows[0]
    print(f"ratio fusion / RQ-VAE training time: {fusion.seconds / fused_row['rq_seconds']:.2f}")
    print(f"level-1 purity over random: {fused_row['purity_l1_top'] / fused_row['random_l1_top']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"fusion_seconds": fusion.seconds, "fusion": fusion.summary(),
                                               "rows": rows, "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
