"""Table of BERT4Rec-ID tuning records: one row per setting (seeds grouped), best validation NDCG@10 first.

Each record holds its run config and metrics. The folder defaults to the default catalog's tuning records; the Beauty
ones are in figures/results/records/beauty_bert4rec_tuning.

    .venv/bin/python scripts/bert4rec_tuning_table.py          # -> figures/results/default_bert4rec_tuning.md
    .venv/bin/python scripts/bert4rec_tuning_table.py figures/results/records/beauty_bert4rec_tuning
"""
import collections
import glob
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDER = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "figures/results/records/default_bert4rec_tuning"
if not FOLDER.is_dir():
    sys.exit(f"no such records folder: {FOLDER}")

rows = collections.defaultdict(list)
for f in sorted(glob.glob(str(FOLDER / '*.json'))):
    d = json.load(open(f)); m = d['config']['model']; t = d['config']['train']
    key = (t.get('lr'), m['dropout'], m['mask_ratio'], m['ft_ratio'], t.get('patience'))
    fit = d['fits']['train'] if isinstance(d['fits'], dict) and 'train' in d['fits'] else None
    best = fit.get('best_epoch') if isinstance(fit, dict) else None
    rows[key].append((d['seed'], d['valid']['NDCG@10'], d['test']['NDCG@10'], best))
print("| lr | dropout | mask ratio | last-item-only rows (ft_ratio) | patience | seeds | valid NDCG@10 | test NDCG@10 | best epochs |")
print("|---|---|---|---|---|---|---|---|---|")
for key, rs in sorted(rows.items(), key=lambda kv: -sum(r[1] for r in kv[1]) / len(kv[1])):
    v = sum(r[1] for r in rs) / len(rs); t = sum(r[2] for r in rs) / len(rs)
    print(f"| {key[0]:g} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {', '.join(str(r[0]) for r in rs)} | {v:.4f} | {t:.4f} | {', '.join(str(r[3]) for r in rs)} |")
