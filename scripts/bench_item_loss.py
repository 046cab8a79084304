"""Item-level loss cost: full softmax vs chunked (exact) vs sampled (logQ) per training step (a script, not a test).

For SASRec-CE and Q-Bert4Rec (token_mlp head) at two catalog sizes, times forward + backward + optimiser step on
one fixed batch of random left-padded sequences (lengths 3..50, batch 256, 1 thread) and prints the median of the
timed steps, side by side in one run. Measures cost only: what the sampled loss gives up in quality needs training
runs (not here).

    python scripts/bench_item_loss.py --items 12101 200000
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import torch


def step_seconds(model, batch: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = model.loss(batch, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from qbert4rec_lib.models.base import pad_left
    from qbert4rec_lib.models.baselines import SASRec, SASRecConfig
    from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", nargs="*", type=int, default=[12101, 200000])
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    losses = {"full": {}, "chunked": dict(item_loss="chunked"), "sampled 1024": dict(item_loss="sampled")}
    print("| items | model | " + " | ".join(f"{k} (s/step)" for k in losses) + " | sampled speed-up |")
    print("|---|---|" + "---|" * (len(losses) + 1))
    for n in args.items:
        rng = np.random.default_rng(0)
        batch = pad_left([rng.integers(1, n + 1, size=int(rng.integers(3, 51))) for _ in range(256)], 50)
        codes = np.stack([rng.integers(0, 256, n), rng.integers(0, 256, n), rng.integers(0, 256, n),
                          np.zeros(n, dtype=np.int64)], axis=1)
        for name, build in (("SASRec-CE", lambda kw: SASRec(n, replace(SASRecConfig(), **kw))),
                            ("Q-Bert4Rec", lambda kw: QBert4Rec(codes, config=replace(QBertConfig(), **kw)))):
            row = {}
            for label, kw in losses.items():
                torch.manual_seed(0)
                row[label] = step_seconds(build(kw), batch, args.steps)
            print(f"| {n:,} | {name} | " + " | ".join(f"{v:.3f}" for v in row.values())
                  + f" | {row['full'] / row['sampled 1024']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
