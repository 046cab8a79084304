"""Where a model wins and where it loses: test metrics per group of users.

One number per model hides *whom* a model serves. The test users are split into groups of about equal size by

- ``target_popularity``: how often the user's test item occurs in the training sequences (what every model was
  trained on) -- rare targets in the first group, the most popular in the last;
- ``history_length``: how many items the user's test history holds (at most the model window ``max_len``) --
  short histories first;

and every model's test metrics are computed within each group from its per-user ranks (the same evaluator, the same
protocol: :func:`~qbert4rec_lib.experiments.evaluate.metrics_from_ranks`). A semantic-ID model has no per-item
parameter, so the popularity grouping asks a concrete question: does it lose on popular items (whose popularity an ID
embedding memorises) or on rare ones (which it should help, through their tokens)?

    from qbert4rec_lib.experiments.breakdown import user_groups, breakdown, breakdown_table
    labels, names = user_groups(split, dataset.num_items, "target_popularity")
    rows = breakdown({name: run.test.ranks for name, run in runs.items()}, labels, names)
    print(breakdown_table(rows, reference="SASRec-CE"))

Every result record (:mod:`~qbert4rec_lib.experiments.records`) also keeps its model's per-group test metrics
(:func:`test_groups`, five groups per grouping), so a table over seeds can be assembled later without the weights
(:func:`groups_from_records`).

CLI: ``python -m qbert4rec_lib breakdown DATA --config ... --models Q-Bert4Rec SASRec-CE --seed 0 --out F`` (the
models of one seed, from the cache), or ``breakdown --from-records FOLDER`` (means over the records' seeds).
"""
from __future__ import annotations

import numpy as np

from .evaluate import EvalConfig, metrics_from_ranks

__all__ = ["GROUPINGS", "item_train_counts", "user_groups", "breakdown", "breakdown_table", "test_groups",
           "groups_from_records", "recommendation_shares", "shares_table"]

GROUPINGS = ("target_popularity", "history_length")


def item_train_counts(split, num_items: int) -> np.ndarray:
    """int64 ``[N + 1]``: occurrences of each item id in the training sequences (index 0 = padding, always 0)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    if split.train:
        np.add.at(counts, np.concatenate([np.asarray(s, dtype=np.int64) for s in split.train]), 1)
    counts[0] = 0
    return counts


def _group_values(split, num_items: int, by: str) -> tuple[np.ndarray, str]:
    if by == "target_popularity":
        return item_train_counts(split, num_items)[np.asarray(split.test_target)], "training occurrences of the target"
    if by == "history_length":
        return np.array([len(h) for h in split.test_history], dtype=np.int64), "items in the test history"
    raise ValueError(f"unknown grouping {by!r}; choose one of {GROUPINGS}")


def _cuts(values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sorted group boundaries (each the first value of a group after the first) at the quantiles of ``values``."""
    if len(values) == 0:
        raise ValueError("no test users to group")
    cuts = np.unique(np.quantile(values, np.arange(1, n_groups) / n_groups, method="higher"))  # upper-exclusive
    return cuts[cuts > values.min()]  # a cut at the minimum would leave an empty first group


def user_groups(split, num_items: int, by: str, n_groups: int = 5) -> tuple[np.ndarray, list[str]]:
    """Each test user's group (int ``[U]``, 0 = smallest values) and the groups' names.

    Groups are ranges of whole values cut at the quantiles ``1/n, 2/n, ...`` of the users' values, so they hold
    about equal numbers of users; a value shared by many users is never split (then there are fewer groups).
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    values, what = _group_values(split, num_items, by)
    cuts = _cuts(values, n_groups)
    labels = np.searchsorted(cuts, values, side="right")  # [U] group index
    names = []
    for g in range(len(cuts) + 1):  # named by the smallest and largest value its users have
        lo, hi = int(values[labels == g].min()), int(values[labels == g].max())
        names.append(f"{what}: {lo}" if lo == hi else f"{what}: {lo}-{hi}")
    return labels, names


def breakdown(ranks: dict[str, np.ndarray], labels: np.ndarray, names: list[str],
              eval_cfg: EvalConfig = EvalConfig()) -> list[dict]:
    """One row per group: ``{"group", "users", "share", "metrics": {model: {metric: value}}}``.

    ``ranks``: model name -> 1-based test rank per user (``EvalResult.ranks``), all over the same users as ``labels``.
    """
    labels = np.asarray(labels)
    for name, r in ranks.items():
        if r is None or len(r) != len(labels):
            raise ValueError(f"{name}: needs one test rank per user ({len(labels)}), got "
                             f"{'none' if r is None else len(r)} (EvalResult.ranks of a run read from a record is None)")
    rows = []
    for g, group in enumerate(names):
        members = labels == g
        if not members.any():
            continue
        rows.append({"group": group, "users": int(members.sum()), "share": float(members.mean()),
                     "metrics": {name: metrics_from_ranks(np.asarray(r)[members], eval_cfg) for name, r in ranks.items()}})
    return rows


def breakdown_table(rows: list[dict], metric: str = "NDCG@10", reference: str | None = None) -> str:
    """Markdown: one line per group, one column per model (``metric``), and each model's ratio to ``reference``."""
    if not rows:
        raise ValueError("breakdown_table: no rows")
    models = list(rows[0]["metrics"])
    others = [m for m in models if m != reference] if reference in models else []
    head = ["group", "users"] + [f"{m} {metric}" for m in models] + [f"{m} / {reference}" for m in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        vals = {m: row["metrics"][m][metric] for m in models}
        ratios = [f"{vals[m] / vals[reference]:.2f}" if vals[reference] > 0 else "-" for m in others]
        lines.append("| " + " | ".join([row["group"], f"{row['users']:,} ({row['share']:.0%})"]
                                       + [f"{vals[m]:.4f}" for m in models] + ratios) + " |")
    return "\n".join(lines)


def test_groups(split, num_items: int, ranks: np.ndarray, eval_cfg: EvalConfig = EvalConfig(),
                n_groups: int = 5) -> dict[str, list[dict]]:
    """One model's per-group test metrics as a result record keeps them: ``{grouping: [{"group", "users",
    "metrics"}, ...]}`` for every grouping of :data:`GROUPINGS`."""
    out = {}
    for by in GROUPINGS:
        labels, names = user_groups(split, num_items, by, n_groups)
        out[by] = [{"group": r["group"], "users": r["users"], "metrics": r["metrics"]["model"]}
                   for r in breakdown({"model": ranks}, labels, names, eval_cfg)]
    return out


def groups_from_records(records_dir, by: str) -> list[dict]:
    """Rows as :func:`breakdown` returns them, each model's metrics the mean over the seeds of its records in
    ``records_dir`` (records written before the records kept groups are skipped). All records must share the groups
    (the same dataset and split); a record that does not is named."""
    import json
    from pathlib import Path

    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {GROUPINGS}")
    per_model: dict[str, list[list[dict]]] = {}
    groups, first = None, None
    for path in sorted(Path(records_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        rows = record.get("test_groups", {}).get(by)
        if not rows:
            continue
        these = [(r["group"], r["users"]) for r in rows]
        if groups is None:
            groups, first = these, path.name
        elif these != groups:
            raise ValueError(f"result record {path} has other {by} groups than {first}: another dataset or split")
        name = record["model"] + (f" [{record['label']}]" if record.get("label") else "")
        per_model.setdefault(name, []).append(rows)
    if groups is None:
        raise ValueError(f"no result record in {records_dir} keeps per-group metrics (records written since 2026-12-04 do)")
    total = sum(users for _, users in groups)
    out = []
    for g, (group, users) in enumerate(groups):
        metrics = {name: {m: float(np.mean([seed_rows[g]["metrics"][m] for seed_rows in runs]))
                          for m in runs[0][g]["metrics"]} for name, runs in per_model.items()}
        out.append({"group": group, "users": users, "share": users / total, "metrics": metrics,
                    "seeds": {name: len(runs) for name, runs in per_model.items()}})
    return out


def recommendation_shares(top_items: dict[str, np.ndarray], split, num_items: int, n_groups: int = 5) -> dict:
    """How popular each model's recommendations are, on the ``target_popularity`` groups of :func:`user_groups`.

    ``top_items``: model -> ``[U, k]`` item ids (``evaluate(..., top_k=k).top_items``). Returns the groups' names,
    the share of the users' test items in each group (what a perfect recommender would show) and, per model, the
    share of all top-k slots given to items of each group (an item belongs to the group whose range holds its
    training count), the catalog coverage (distinct recommended items / N) and the mean training count of the
    recommended items.
    """
    counts = item_train_counts(split, num_items)
    values = counts[np.asarray(split.test_target)]
    labels, names = user_groups(split, num_items, "target_popularity", n_groups)
    cuts = _cuts(values, n_groups)
    out = {"groups": names, "test_items": (np.bincount(labels, minlength=len(names)) / len(labels)).tolist(),
           "models": {}}
    for name, top in top_items.items():
        top = np.asarray(top)
        if top.ndim != 2 or len(top) != len(values):
            raise ValueError(f"{name}: needs [users, k] top items for {len(values)} users, got shape {top.shape}")
        slot_groups = np.searchsorted(cuts, counts[top.ravel()], side="right")
        out["models"][name] = {"slot_share": (np.bincount(slot_groups, minlength=len(names)) / top.size).tolist(),
                               "coverage": len(np.unique(top)) / num_items, "mean_count": float(counts[top].mean()),
                               "k": int(top.shape[1])}
    return out


def shares_table(shares: dict) -> str:
    """Markdown: per popularity group, the share of test items and each model's share of its top-k slots; then each
    model's catalog coverage."""
    models = list(shares["models"])
    k = shares["models"][models[0]]["k"] if models else 0
    head = ["group", "share of test items"] + [f"{m}: share of top-{k} slots" for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, group in enumerate(shares["groups"]):
        lines.append("| " + " | ".join([group, f"{shares['test_items'][g]:.1%}"]
                                       + [f"{shares['models'][m]['slot_share'][g]:.1%}" for m in models]) + " |")
    lines += ["", "Catalog coverage (distinct items in all top-%d lists): " % k + ", ".join(
        f"{m} {v['coverage']:.1%} (mean training count of a recommended item {v['mean_count']:.1f})"
        for m, v in shares["models"].items()) + "."]
    return "\n".join(lines)
