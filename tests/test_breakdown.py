"""Per-group test metrics (experiments.breakdown): the groups, the metrics within them, the table, the CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from qbert4rec_lib.experiments.breakdown import breakdown, breakdown_table, item_train_counts, user_groups
from qbert4rec_lib.experiments.evaluate import metrics_from_ranks


def _split():
    # items 1..6; item 1 occurs 6 times in training, item 2 four times, items 3-4 once, items 5-6 never
    train = [np.array([1, 1, 2]), np.array([1, 2, 3]), np.array([1, 1, 2, 2]), np.array([1, 4])]
    test_target = np.array([1, 2, 3, 5, 1, 6, 4, 2])
    test_history = [np.arange(1, n + 1) for n in (2, 3, 4, 5, 6, 7, 8, 9)]
    return SimpleNamespace(train=train, test_target=test_target, test_history=test_history)


def test_item_train_counts():
    np.testing.assert_array_equal(item_train_counts(_split(), 6), [0, 6, 4, 1, 1, 0, 0])


def test_groups_split_users_by_target_popularity_without_splitting_a_value():
    labels, names = user_groups(_split(), 6, "target_popularity", n_groups=2)
    counts = item_train_counts(_split(), 6)[_split().test_target]  # [6, 4, 1, 0, 6, 0, 1, 4]
    assert names == ["training occurrences of the target: 0-1", "training occurrences of the target: 4-6"]
    np.testing.assert_array_equal(labels, (counts >= 4).astype(int))
    # many groups asked, few distinct values: never an empty group, every user in one
    labels, names = user_groups(_split(), 6, "target_popularity", n_groups=8)
    assert sorted(set(labels)) == list(range(len(names))) and len(names) <= 4


def test_groups_by_history_length_and_bad_grouping():
    labels, names = user_groups(_split(), 6, "history_length", n_groups=4)
    assert len(names) == 4 and np.bincount(labels).tolist() == [2, 2, 2, 2]
    assert names[0] == "items in the test history: 2-3"
    with pytest.raises(ValueError, match="unknown grouping"):
        user_groups(_split(), 6, "colour")


def test_breakdown_metrics_are_the_metrics_of_each_groups_users():
    labels, names = user_groups(_split(), 6, "target_popularity", n_groups=2)
    good_on_popular = np.where(labels == 1, 1, 50)  # rank 1 on popular targets, 50 on rare ones
    flat = np.full(8, 5)
    rows = breakdown({"A": good_on_popular, "B": flat}, labels, names)
    assert [r["users"] for r in rows] == [4, 4] and rows[0]["share"] == 0.5
    assert rows[1]["metrics"]["A"]["NDCG@10"] == 1.0 and rows[0]["metrics"]["A"]["NDCG@10"] == 0.0
    assert rows[0]["metrics"]["B"] == metrics_from_ranks(flat[labels == 0])
    table = breakdown_table(rows, reference="B").splitlines()
    assert table[0] == "| group | users | A NDCG@10 | B NDCG@10 | A / B |"
    assert table[2].endswith("| 0.00 |")  # A misses every rare target
    assert table[3].endswith(f"| {np.log2(6):.2f} |")  # NDCG 1 (rank 1) over 1 / log2(6) (rank 5)
    with pytest.raises(ValueError, match="one test rank per user"):
        breakdown({"A": good_on_popular[:3]}, labels, names)
    with pytest.raises(ValueError, match="record is None"):
        breakdown({"A": None}, labels, names)


def test_cli_breakdown_on_a_tiny_catalog(tmp_path, capsys):
    from qbert4rec_lib.data.synthetic import SyntheticConfig
    from qbert4rec_lib.data.synthetic_folder import generate_catalog
    from qbert4rec_lib.kit.cli import main

    folder = generate_catalog(SyntheticConfig(num_items=260, num_users=380), tmp_path / "catalog")
    out = tmp_path / "bd"
    argv = ["breakdown", str(folder), "--set", "baseline_train.epochs=1", "--models", "SASRec-CE", "Popularity",
            "--by", "target_popularity", "--groups", "3", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "bd.json").read_text())
    rows = payload["groups"]["target_popularity"]
    assert 2 <= len(rows) <= 3 and set(rows[0]["metrics"]) == {"SASRec-CE", "Popularity"}
    from qbert4rec_lib import open_dataset

    assert sum(r["users"] for r in rows) == open_dataset(str(folder)).num_users  # every test user, once
    pop = [r["metrics"]["Popularity"]["HR@10"] for r in rows]
    assert pop[-1] > pop[0]  # popularity can only serve users whose target is popular
    md = (tmp_path / "bd.md").read_text()
    assert "Popularity / SASRec-CE" in md and "Protocol:" in md
    capsys.readouterr()
    assert main(argv[:2] + ["--metric", "NDCG@7"]) == 2  # a metric the evaluator does not compute: a clear error
    assert "--metric 'NDCG@7'" in capsys.readouterr().err


def test_records_keep_per_group_metrics_and_a_table_assembles_from_them(tmp_path, capsys):
    import dataclasses

    from qbert4rec_lib import open_dataset
    from qbert4rec_lib.data.synthetic import SyntheticConfig
    from qbert4rec_lib.data.synthetic_folder import generate_catalog
    from qbert4rec_lib.experiments import run_experiment, smoke_config
    from qbert4rec_lib.experiments.breakdown import groups_from_records
    from qbert4rec_lib.experiments.train import TrainConfig
    from qbert4rec_lib.kit.cli import main

    ds = open_dataset(str(generate_catalog(SyntheticConfig(num_items=260, num_users=380), tmp_path / "catalog")))
    cfg = dataclasses.replace(smoke_config(), baseline_train=TrainConfig(epochs=1))
    records = tmp_path / "records"
    res = run_experiment(ds, cfg, models=["SASRec-CE", "Popularity"], seeds=[0, 1], progress=False, log=None,
                         records_dir=records)
    kept = [json.loads(p.read_text())["test_groups"] for p in sorted(records.glob("sasrec*.json"))]
    assert len(kept) == 2 and set(kept[0]) == {"target_popularity", "history_length"}
    assert sum(g["users"] for g in kept[0]["history_length"]) == ds.num_users

    rows = groups_from_records(records, "target_popularity")
    assert rows[0]["seeds"] == {"Popularity": 1, "SASRec-CE": 2}
    for g, row in enumerate(rows):  # the mean over the two seeds' records
        want = np.mean([k["target_popularity"][g]["metrics"]["NDCG@10"] for k in kept])
        assert row["metrics"]["SASRec-CE"]["NDCG@10"] == pytest.approx(want)
    # the groups' users add up to the users the whole-table metric was computed on
    assert sum(r["users"] for r in rows) == res.runs["SASRec-CE"][0].test.num_users

    assert main(["breakdown", "--from-records", str(records), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t.md").read_text()
    assert "means over seeds: Popularity 1, SASRec-CE 2" in md and "history length" in md

    # a record of another split is named, not averaged in
    other = json.loads(sorted(records.glob("sasrec*.json"))[0].read_text())
    other["test_groups"]["target_popularity"][0]["users"] += 1
    (records / "zz-other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="zz-other.json has other target_popularity groups"):
        groups_from_records(records, "target_popularity")


def test_evaluate_keeps_the_top_items_without_history_and_shares_count_them():
    import torch

    from qbert4rec_lib.experiments.breakdown import recommendation_shares, shares_table
    from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate

    class Fixed(torch.nn.Module):  # item i scores i: the top items are the largest ids not in the history
        def score_all(self, histories):
            scores = torch.arange(7, dtype=torch.float).repeat(len(histories), 1)  # [B, N + 1], N = 6
            scores[:, 0] = float("-inf")
            return scores

        def scoring(self):
            import contextlib
            return contextlib.nullcontext()

    histories = [np.array([1, 2]), np.array([3]), np.array([6]), np.array([1, 6, 5])]
    targets = np.array([3, 1, 2, 4])
    res = evaluate(Fixed(), histories, targets, 6, EvalConfig(), max_len=50, top_k=2)
    assert res.top_items.tolist() == [[6, 5], [6, 5], [5, 4], [4, 3]]  # the history is never recommended
    same = evaluate(Fixed(), histories, targets, 6, EvalConfig(), max_len=50)
    np.testing.assert_array_equal(same.ranks, res.ranks)  # keeping the top items changes no rank
    assert same.top_items is None
    with pytest.raises(ValueError, match="top_k"):
        evaluate(Fixed(), histories, targets, 6, EvalConfig(), max_len=50, top_k=7)

    split = _split()
    # items 5 and 6 never occur in training (count 0: the rarest group); item 1 is the most popular
    shares = recommendation_shares({"fixed": np.array([[5, 6]] * 8), "popular": np.array([[1, 2]] * 8)}, split, 6, 2)
    assert shares["groups"] == ["training occurrences of the target: 0-1", "training occurrences of the target: 4-6"]
    assert shares["test_items"] == [0.5, 0.5]
    assert shares["models"]["fixed"]["slot_share"] == [1.0, 0.0] and shares["models"]["fixed"]["coverage"] == 2 / 6
    assert shares["models"]["popular"]["slot_share"] == [0.0, 1.0] and shares["models"]["popular"]["mean_count"] == 5.0
    assert "| training occurrences of the target: 0-1 | 50.0% | 100.0% | 0.0% |" in shares_table(shares)
