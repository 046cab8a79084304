"""Result records: one small JSON per finished (model, config, seed), meant to be committed.

A record holds the test/valid metrics, the protocol, per-phase learning curves and timings (no weights); it is
named by the run's cache key, so :func:`~qbert4rec_lib.experiments.runs.train_model` finds it again and a
multi-run table resumes from what has finished, even on another machine. :func:`runs_from_records` rebuilds
the runs of a folder without training anything or opening a dataset.
"""
from __future__ import annotations

import json
import time

from .evaluate import EvalResult
from .runs import ModelRun, _fit_from_json, _fit_json

__all__ = ["write_record", "read_record", "run_from_record", "runs_from_records"]


def _record_path(records_dir, name: str, seed: int, key: str):
    from pathlib import Path

    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return Path(records_dir) / f"{slug}__seed{seed}__{key}.json"


def _compact_history(history: list[dict]) -> list[dict]:
    keep = ("NDCG@10", "HR@10")
    return [{"epoch": e["epoch"], "train_loss": e.get("train_loss"), "seconds": round(e.get("seconds", 0.0), 3),
             "valid_seconds": round(e["valid_seconds"], 3) if e.get("valid_seconds") is not None else None,
             "valid": {k: e["valid"][k] for k in keep if k in e["valid"]} if e.get("valid") else None}
            for e in history]


def write_record(records_dir, run: ModelRun, key: str, dataset_name: str, config: dict, label: str | None = None,
                 groups: dict | None = None) -> None:
    """Write ``run``'s result record (atomic JSON): test/valid metrics, protocol, per-phase curves, timings, and
    ``groups``, the test metrics per group of users (:func:`~qbert4rec_lib.experiments.breakdown.test_groups`)."""
    from ..atomic import atomic_write_json
    from ..cache import library_versions
    from ..keys import _jsonable

    fits = {}
    for phase, f in run.fits.items():
        d = _fit_json(f)
        d["history"] = _compact_history(d["history"])
        fits[phase] = d
    path = _record_path(records_dir, run.name, run.seed, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {
        "model": run.name, "seed": run.seed, "dataset": dataset_name, "key": key, "label": label,
        "config": _jsonable(config),
        "test": run.test.metrics, "valid": run.valid.metrics, "protocol": run.test.protocol,
        "num_users": run.test.num_users, "train_seconds": sum(f.get("seconds", 0.0) for f in fits.values()),
        "fits": fits, "from_cache": run.from_cache, "versions": library_versions(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"test_groups": groups} if groups else {}),
    })


def read_record(records_dir, name: str, seed: int, key: str) -> dict | None:
    """The record of (``name``, ``seed``, config ``key``) in ``records_dir``, or None; a broken file is an error."""
    path = _record_path(records_dir, name, seed, key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        for field_name in ("model", "seed", "key", "test", "valid", "protocol", "fits"):
            record[field_name]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"result record {path} is unreadable ({type(exc).__name__}: {exc}); delete it to rerun") from exc
    if record["key"] != key or record["model"] != name or record["seed"] != seed:
        raise ValueError(f"result record {path} holds {record['model']} seed {record['seed']} key {record['key']}, "
                         f"not {name} seed {seed} key {key}")
    return record


def run_from_record(record: dict) -> ModelRun:
    test = EvalResult(record["test"], record.get("num_users", 0), record["protocol"], 0.0)
    valid = EvalResult(record["valid"], record.get("num_users", 0), record["protocol"].replace("test split", "valid split"), 0.0)
    phase_order = {"pretrain": 0, "finetune": 1, "train": 2}  # records store sorted keys; show phases in order
    fits = {k: _fit_from_json(record["fits"][k]) for k in sorted(record["fits"], key=lambda k: phase_order.get(k, 9))}
    return ModelRun(record["model"], record["seed"], None, fits, test, valid, True,
                    record.get("train_seconds", 0.0))


def runs_from_records(records_dir) -> dict[str, list[ModelRun]]:
    """Every record of a folder as runs, ``{model (or "model [label]"): [runs by seed]}``; nothing is trained and no
    dataset is opened (a notebook can show a committed table, e.g. Beauty's, without the data)."""
    from pathlib import Path

    runs: dict[str, list[ModelRun]] = {}
    for path in sorted(Path(records_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        name = record["model"] + (f" [{record['label']}]" if record.get("label") else "")
        runs.setdefault(name, []).append(run_from_record(record))
    return {k: sorted(v, key=lambda r: r.seed) for k, v in runs.items()}
