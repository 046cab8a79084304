"""One-off migration (2026-12-04), kept for the record: re-key the default catalog's result records after
``Dataset.fingerprint`` stopped hashing absolute image paths (old 98b041807e129005 -> new 21c88a871f7a81a6).

For every record of dataset 'synthetic' under figures/results/records/: rebuild the key view of its stored config,
check that it reproduces the record's key under the OLD fingerprint, then write it under the NEW one. Q-Bert4Rec
records are re-keyed only when the semantic IDs rebuilt now are identical to the ones the record was trained on.
Usage (from the repository root): .venv/bin/python scripts/migrations/rekey_default_records_2026_12_04.py OLD [--write]
"""
import json, sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from qbert4rec_lib import open_dataset
from qbert4rec_lib.data.dataset import Dataset
from qbert4rec_lib.experiments.presets import preset
from qbert4rec_lib.experiments.runs import hashlib_ids
from qbert4rec_lib.experiments.stages import semantic_ids
from qbert4rec_lib.experiments.study import study_config
from qbert4rec_lib.keys import KEY_NEUTRAL, _jsonable, stable_hash
from qbert4rec_lib.experiments.records import _record_path
from qbert4rec_lib.atomic import atomic_write_json

OLD = sys.argv[1]
WRITE = "--write" in sys.argv
ds = open_dataset("default")
NEW = ds.fingerprint()
base = preset("smoke")
TYPES = {"eval": base.eval, "qbert": base.qbert, "pretrain": base.pretrain, "finetune": base.finetune,
         "pretrain_masks": base.pretrain_masks, "finetune_masks": base.finetune_masks, "train": base.pretrain}


def strip(d, proto):
    if d is None or not hasattr(proto, "__dataclass_fields__"):
        return d
    out = {}
    for f in fields(proto):
        if f.name not in d:
            continue
        v = d[f.name]
        if KEY_NEUTRAL in f.metadata and v == _jsonable(f.metadata[KEY_NEUTRAL]):
            continue
        sub = getattr(proto, f.name)
        out[f.name] = strip(v, sub) if hasattr(sub, "__dataclass_fields__") and isinstance(v, dict) else v
    extra = set(d) - {f.name for f in fields(proto)}
    if extra:
        raise ValueError(f"unknown fields {extra}")
    return out


def key_view(cfg_json, name):
    kv = {}
    for k, v in cfg_json.items():
        proto = TYPES.get(k)
        if k == "model":
            proto = base.sasrec if name == "SASRec-CE" else base.bert4rec
        kv[k] = strip(v, proto) if proto is not None else v
    return kv


split_keys = {}
def split_key(max_len):
    if max_len not in split_keys:
        sp = ds.split(max_len=max_len)
        split_keys[max_len] = stable_hash([hashlib_ids(np.concatenate(sp.train))], sp.valid_target.tolist(),
                                          sp.test_target.tolist())
    return split_keys[max_len]


# semantic-ID keys: old (fingerprint patched back, cache hit) -> new (rebuilt), tables must be identical
ids_map = {}
for source_cfg in (base, study_config("ids_raw_text", base)):
    orig = Dataset.fingerprint
    Dataset.fingerprint = lambda self: OLD
    try:
        old_ids = semantic_ids(ds, source_cfg, progress=False)
    finally:
        Dataset.fingerprint = orig
    new_ids = semantic_ids(ds, source_cfg, progress=False)
    same = np.array_equal(old_ids.table.ids, new_ids.table.ids)
    print(f"ids {source_cfg.semantic_source}: {old_ids.key} -> {new_ids.key} (tables identical: {same})", flush=True)
    if same:
        ids_map[old_ids.key] = new_ids.key

moved = skipped = 0
for path in sorted(Path("figures/results/records").glob("*/*.json")):
    rec = json.loads(path.read_text())
    if rec.get("dataset") != "synthetic":
        continue
    name, seed, cfg_json = rec["model"], rec["seed"], rec["config"]
    kv = key_view(cfg_json, name)
    sk = split_key(cfg_json["max_len"])
    if stable_hash("seqmodel", NEW, sk, name, kv, seed) == rec["key"]:
        continue  # already migrated
    if stable_hash("seqmodel", OLD, sk, name, kv, seed) != rec["key"]:
        print(f"SKIP {path}: key not reproduced from its config", flush=True); skipped += 1; continue
    new_cfg = dict(cfg_json)
    if name == "Q-Bert4Rec":
        if cfg_json["ids"] not in ids_map:
            print(f"SKIP {path}: semantic-ID key {cfg_json['ids']} unknown", flush=True); skipped += 1; continue
        new_cfg["ids"] = ids_map[cfg_json["ids"]]
        kv["ids"] = new_cfg["ids"]
    new_key = stable_hash("seqmodel", NEW, sk, name, kv, seed)
    out = _record_path(path.parent, name, seed, new_key)
    print(f"{path.parent.name}/{path.name} -> {out.name}", flush=True)
    if WRITE:
        rec["key"], rec["config"] = new_key, new_cfg
        atomic_write_json(out, rec)
        path.unlink()
    moved += 1
print(f"{moved} record(s) re-keyed{'' if WRITE else ' (dry run)'}, {skipped} skipped; fingerprint {OLD} -> {NEW}")
