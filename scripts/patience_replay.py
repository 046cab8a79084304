"""Replay early stopping with a shorter patience on the pretraining histories a stage cache already holds.

Every cached Q-Bert4Rec pretraining records its validation NDCG@10 at each evaluation. Stopping after ``p``
evaluations without improvement would have kept the best value seen up to that point; this script replays that for
each ``p`` and prints how many runs would have ended on a lower best, by how much, and how many epochs each would have
saved. Nothing is trained. Runs that hit their epoch cap are left out (their patience never acted).

    QBERT4REC_CACHE=<cache> .venv/bin/python scripts/patience_replay.py --patience 8 10 12 15
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path


def replay(history: list[dict], patience: int, monitor: str = "NDCG@10") -> tuple[float, int]:
    """(best validation value, last epoch run) had training stopped after ``patience`` evaluations without a new best."""
    best, waited, last = float("-inf"), 0, 0
    for entry in history:
        if not entry.get("valid"):
            continue
        value, last = entry["valid"][monitor], entry["epoch"]
        if value > best:
            best, waited = value, 0
        else:
            waited += 1
            if waited >= patience:
                break
    return best, last


def pretraining_histories(cache: Path):
    """Yield (folder, history, configured patience) of every finished pretraining phase under ``cache``."""
    for meta_path in sorted(cache.glob("*/*/meta.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        fit = meta.get("fit") or (meta.get("fits") or {}).get("pretrain")
        config = (meta.get("config") or {}).get("pretrain") or {}
        if isinstance(fit, dict) and fit.get("history") and config.get("patience"):
            if len(fit["history"]) < config.get("epochs", 0):  # stopped by patience, not by the cap
                yield meta_path.parent, fit["history"], int(config["patience"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=os.environ.get("QBERT4REC_CACHE", ".cache"), help="stage cache folder")
    parser.add_argument("--patience", type=int, nargs="+", default=[8, 10, 12, 15])
    args = parser.parse_args()
    runs = list(pretraining_histories(Path(args.cache)))
    if not runs:
        raise SystemExit(f"no finished pretraining histories under {args.cache}")
    print(f"{len(runs)} pretraining runs stopped by patience under {args.cache} "
          f"(configured patience: {sorted({p for _, _, p in runs})} evaluations)")
    print("| patience (evaluations) | runs ending lower | largest loss of best valid NDCG@10 | median loss | "
          "mean epochs saved |\n|---|---|---|---|---|")
    for p in args.patience:
        losses, saved = [], []
        for _, history, configured in runs:
            full_best, full_last = replay(history, configured)
            best, last = replay(history, p)
            losses.append(full_best - best)
            saved.append(full_last - last)
        lower = sum(loss > 1e-12 for loss in losses)
        print(f"| {p} | {lower} of {len(runs)} | {max(losses):.4f} | {statistics.median(losses):.4f} | "
              f"{statistics.mean(saved):.1f} |")


if __name__ == "__main__":
    main()
