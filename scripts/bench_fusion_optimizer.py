"""Benchmark: why stage 1 (fusion) grows faster than the catalog, and the sparse optimiser that fixes it.

The per-item ID-query table ``q`` is ``[N, width]``. With the default ``FusionConfig.query_optimizer="adamw"`` its
embedding gradient is a dense ``[N, width]`` tensor and AdamW updates every row at every step, so one step costs
O(N) and one epoch (N / batch steps) O(N^2). ``query_optimizer="sparse_adam"`` gives the table sparse gradients and
a lazy Adam (:class:`torch.optim.SparseAdam`: only the batch's rows move; no weight decay on ``q``).

Part 1 times single training steps (forward+backward, then the optimiser step; medians of ``--steps`` after two
warm-up steps) for both settings at each ``--sizes`` value, alternating the settings in one run, on random inputs
shaped like the kit's encoders' output (text 384, image 64, structural 64). Part 2 trains stage 1 on the embedded
default catalog with the ``smoke`` preset's settings under both optimisers and prints what each costs in quality:
the final training loss and the subcategory purity of each item's 10 nearest fused neighbours.

    .venv/bin/python scripts/bench_fusion_optimizer.py                  # both parts, 1 thread
    .venv/bin/python scripts/bench_fusion_optimizer.py --sizes 10000 --no-quality
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPTIMISERS = ("adamw", "sparse_adam")
DIMS = {"text": 384, "image": 64, "structural": 64}


def step_times(n: int, optimiser: str, steps: int) -> tuple[float, float]:
    """Median seconds of (forward + backward, optimiser step) of one stage-1 training step at ``n`` items."""
    from qbert4rec_lib.semantic.epochs import EpochLoop
    from qbert4rec_lib.semantic.fusion import FusionConfig, multi_view_loss
    from qbert4rec_lib.semantic.fusion_model import FusionModel

    cfg = FusionConfig(query_optimizer=optimiser)
    torch.manual_seed(0)
    model = FusionModel(n, DIMS, cfg)
    loop = EpochLoop(model, cfg, n, desc="bench", progress=False)
    optimisers = [o for o in (loop.optimizer, loop.sparse_optimizer) if o is not None]
    present = torch.ones(cfg.batch_size, len(DIMS), dtype=torch.bool)
    backward, update = [], []
    for i in range(steps + 2):
        rows = torch.randint(0, n, (cfg.batch_size,))
        feats = {m: torch.randn(cfg.batch_size, 1, d) for m, d in DIMS.items()}
        t0 = time.perf_counter()
        out = model(rows, feats, present, hard_exit=False)
        loss = multi_view_loss(out, present, model.modality_names, cfg).loss
        for o in optimisers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        for o in optimisers:
            o.step()
        t2 = time.perf_counter()
        if i >= 2:
            backward.append(t1 - t0)
            update.append(t2 - t1)
    return statistics.median(backward), statistics.median(update)


def quality(optimiser: str) -> dict:
    from qbert4rec_lib.data.synthetic_folder import load_default
    from qbert4rec_lib.experiments.presets import preset
    from qbert4rec_lib.semantic.features import ModalityFeatures, build_features
    from qbert4rec_lib.semantic.fusion import train_fusion
    from qbert4rec_lib.semantic.similarity import neighbour_purity

    ds, cfg = load_default(), preset("smoke")
    features = build_features(ds, cfg.features, split=ds.split(max_len=cfg.max_len), progress=False)
    result = train_fusion(features, replace(cfg.fusion, query_optimizer=optimiser), progress=False)
    fused = ModalityFeatures("fused", result.embeddings[:, None, :], np.ones(len(result.embeddings), bool), {})
    return {"seconds": result.seconds, "final_loss": result.history[-1]["loss"],
            "purity": neighbour_purity(fused, ds.ground_truth["subcategory"], k=10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 50_000, 200_000])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per (size, optimiser), after 2 warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-quality", action="store_true", help="skip part 2 (the default catalog)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); batch 256, width 128 (FusionConfig defaults)\n")
    print("| items | optimiser | forward+backward (ms) | optimiser step (ms) | step (ms) | epoch (s, N/256 steps) |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        steps_per_epoch = -(-n // 256)
        totals = {}
        for optimiser in OPTIMISERS:
            fb, up = step_times(n, optimiser, args.steps)
            totals[optimiser] = fb + up
            print(f"| {n:,} | {optimiser} | {fb * 1e3:.1f} | {up * 1e3:.1f} | {(fb + up) * 1e3:.1f} | "
                  f"{steps_per_epoch * (fb + up):.1f} |", flush=True)
        print(f"| {n:,} | ratio adamw / sparse_adam | | | {totals['adamw'] / totals['sparse_adam']:.1f}x | |",
              flush=True)
    if not args.no_quality:
        print("\nDefault catalog (1,296 items), smoke settings (20 epochs):")
        print("| optimiser | training (s) | final loss | fused 10-NN subcategory purity |\n|---|---|---|---|")
        for optimiser in OPTIMISERS:
            q = quality(optimiser)
            print(f"| {optimiser} | {q['seconds']:.1f} | {q['final_loss']:.4f} | {q['purity']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
