"""How long must Q-Bert4Rec pretrain? Fine-tuned validation / test NDCG@10 against the pretraining budget.

Reads Q-Bert4Rec result records (``experiments.records``) made with the same settings except the pretraining epoch
cap and patience, groups them by the pretraining budget (``pretrain.epochs`` with ``patience 0`` = a fixed budget;
``patience > 0`` = early stopping) and prints one row per budget: fine-tuned valid / test NDCG@10 (mean over seeds,
each seed listed), the best pretraining epoch and the pretraining seconds. The records of the table in
``figures/results/default_pretrain_budget.md`` were made on the default catalog with::

    python -m qbert4rec_lib study default --config smoke --threads 1 --rows default --seeds S \
        --set pretrain.epochs=N --set pretrain.patience=0 --records RECORDS     # N = 20 40 60 80, S = 0 1

and the early-stopping row is the study's ``default`` row (figures/results/records/default_study_2026-12-04).

    .venv/bin/python scripts/pretrain_budget.py figures/results/records/default_pretrain_budget \
        figures/results/records/default_study_2026-12-04 --label default --seeds 0 1 \
        --out figures/results/default_pretrain_budget.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def budget(record: dict) -> tuple[int, str]:
    """(epochs, "fixed" | "early stopping") of a record's pretraining phase."""
    pre = record["config"]["pretrain"]
    return (int(pre["epochs"]), "fixed" if int(pre["patience"]) == 0 else f"early stopping (patience {pre['patience']})")


def main() -> None:
    from qbert4rec_lib.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="record folders")
    parser.add_argument("--label", default="default", help="study row label of the records to use")
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    groups: dict[tuple[int, str], list[dict]] = {}
    for folder in args.folders:
        for path in sorted(Path(folder).glob("*q-bert4rec__*.json")):
            r = json.loads(path.read_text(encoding="utf-8"))
            if r.get("label") != args.label or (args.seeds is not None and r["seed"] not in args.seeds):
                continue
            groups.setdefault(budget(r), []).append(r)
    if not groups:
        raise SystemExit(f"no Q-Bert4Rec records labelled {args.label!r} in {args.folders}")
    lines = ["| pretraining | epochs run (best) | pretraining s | fine-tuned valid NDCG@10 | test NDCG@10 | seeds |",
             "|---|---|---|---|---|---|"]
    for (epochs, kind), recs in sorted(groups.items(), key=lambda kv: (kv[0][1] != "fixed", kv[0][0])):
        recs.sort(key=lambda r: r["seed"])
        pre = [r["fits"]["pretrain"] for r in recs]
        valid = [r["valid"]["NDCG@10"] for r in recs]
        test = [r["test"]["NDCG@10"] for r in recs]
        name = f"{epochs} epochs, fixed" if kind == "fixed" else f"{kind}, cap {epochs}"
        each = lambda xs: " / ".join(f"{x:.4f}" for x in xs)  # noqa: E731
        runs = " / ".join(f"{len(p['history'])} ({p['best_epoch']})" for p in pre)
        seconds = " / ".join(f"{p['seconds']:.0f}" for p in pre)
        seeds = ", ".join(str(r["seed"]) for r in recs)
        lines.append(f"| {name} | {runs} | {seconds} | {statistics.mean(valid):.4f} ({each(valid)}) | "
                     f"{statistics.mean(test):.4f} ({each(test)}) | {seeds} |")
    protocol = recs[0]["protocol"]
    lines += ["", f"Fine-tuning as configured in every row (next-item, early stopping on validation NDCG@10), from the "
              f"best pretraining checkpoint. Protocol: {protocol}."]
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
