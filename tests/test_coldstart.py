"""Cold-start protocol: cold items absent from every training input, frozen new-item IDs, baselines (tiny catalog)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from qbert4rec_lib.experiments import coldstart_ids as CI
from qbert4rec_lib.experiments import coldstart_models as CM
from qbert4rec_lib.experiments import coldstart_split as CS
from qbert4rec_lib.models.baselines import BERT4RecID, BERT4RecConfig, Popularity, SASRec, SASRecConfig
from qbert4rec_lib.experiments import smoke_config
from qbert4rec_lib.semantic.quantize import extend_ids
from qbert4rec_lib.data.synthetic_folder import load_default
from qbert4rec_lib.experiments.train import TrainConfig

TINY = dict(num_items=240, num_users=360)


@pytest.fixture(scope="module")
def ds():
    return load_default(seed=41, **TINY)


@pytest.fixture(scope="module")
def tiny_cfg():
    cfg = smoke_config(0.1)
    return replace(cfg, features=replace(cfg.features, modalities=("text", "structural")),
                   fusion=replace(cfg.fusion, epochs=2), rqvae=replace(cfg.rqvae, epochs=3, kmeans_iters=10),
                   pretrain=TrainConfig(epochs=2, eval_every=1), finetune=TrainConfig(epochs=1),
                   baseline_train=TrainConfig(epochs=2), max_len=20)


def _all_train_items(cs):
    return np.concatenate([s for s in cs.split.train + cs.train_full if len(s)])


def test_time_split_holds_out_the_latest_items(ds):
    cs = CS.cold_start_split(ds, 0.1, by="time", max_len=20)
    first = CS.first_appearance(ds)
    assert len(cs.cold_items) == int(0.1 * ds.num_items)
    # every cold item arrives no earlier than every warm item
    assert first[cs.cold_items].min() >= first[np.setdiff1d(np.arange(1, ds.num_items + 1), cs.cold_items)].max()
    assert not np.isin(_all_train_items(cs), cs.cold_items).any()
    for hist in cs.split.valid_history + cs.split.test_history:
        assert not np.isin(hist, cs.cold_items).any()
    assert np.array_equal(cs.split.test_target, ds.split(max_len=0).test_target)  # targets kept
    assert np.isin(cs.split.test_target[cs.cold_users], cs.cold_items).all()
    assert not np.isin(cs.split.test_target[cs.warm_users], cs.cold_items).any()
    assert not np.isin(cs.train_split.valid_target, cs.cold_items).any()  # early stopping never sees a cold item
    assert len(cs.train_split.valid_target) + len(cs.cold_valid_users) == ds.num_users
    rnd = CS.cold_start_split(ds, 0.1, by="random", max_len=20)
    assert not np.array_equal(rnd.cold_items, cs.cold_items)
    with pytest.raises(ValueError, match="by must be"):
        CS.cold_start_split(ds, 0.1, by="popularity")


def test_cold_items_absent_from_stage_1_2_inputs_and_frozen_ids_valid(ds, tiny_cfg, monkeypatch):
    import qbert4rec_lib.semantic.features as F
    import qbert4rec_lib.semantic.fusion as FU
    import qbert4rec_lib.semantic.quantize as Q

    cs = CS.cold_start_split(ds, 0.15, by="time", max_len=20)
    seen = {}
    real_fusion, real_rqvae, real_struct = FU.train_fusion, Q.train_rqvae, F.structural_features

    def spy_fusion(features, cfg, **kw):
        seen["fusion_rows"] = {m: f.vectors.shape[0] for m, f in features.modalities.items()}
        seen["fusion_text"] = features.modalities["text"].vectors.copy()
        return real_fusion(features, cfg, **kw)

    def spy_rqvae(x, cfg, **kw):
        seen.setdefault("rqvae_rows", []).append(len(x))
        return real_rqvae(x, cfg, **kw)

    def spy_struct(train, num_items, **kw):
        seen["structural_items"] = np.concatenate([s for s in train if len(s)])
        return real_struct(train, num_items, **kw)

    monkeypatch.setattr(FU, "train_fusion", spy_fusion)
    monkeypatch.setattr(Q, "train_rqvae", spy_rqvae)
    monkeypatch.setattr(F, "structural_features", spy_struct)
    ids = CI.cold_semantic_ids(ds, cs, tiny_cfg, "fused", cache_root=None)
    n_warm = ds.num_items - len(cs.cold_items)
    assert set(seen["fusion_rows"].values()) == {n_warm}  # ID queries and contrastive batches: warm rows only
    text = F.build_features(ds, tiny_cfg.features, split=replace(cs.split, train=cs.train_full, max_len=0)
                            ).modalities["text"].vectors
    assert np.array_equal(seen["fusion_text"], text[cs.warm_rows])
    assert seen["rqvae_rows"] == [n_warm]  # RQ-VAE training set and k-means init: warm items only
    assert not np.isin(seen["structural_items"], cs.cold_items).any()  # co-occurrence: warm sequences only
    assert set(ids.paths) == set(CI.QUERY_PATHS)
    warm = ids.tables["content"][cs.warm_rows]
    for path, table in ids.tables.items():
        assert table.shape == (ds.num_items, 4)
        assert len(np.unique(table, axis=0)) == ds.num_items  # every item, cold included, has a unique ID
        assert (table < np.array(ids.vocab_sizes)).all() and (table >= 0).all()
        assert np.array_equal(table[cs.warm_rows], warm)  # warm IDs do not depend on the new-item path
    raw = CI.cold_semantic_ids(ds, cs, tiny_cfg, "raw_text")
    assert len(np.unique(raw.tables["frozen"], axis=0)) == ds.num_items


def test_new_item_path_gives_every_cold_item_a_unique_id(ds, tiny_cfg):
    cfg = replace(tiny_cfg, fusion=replace(tiny_cfg.fusion, id_dropout=0.5, id_consistency=1.0))
    cs = CS.cold_start_split(ds, 0.15, by="time", max_len=20)
    ids = CI.cold_semantic_ids(ds, cs, cfg, "fused", paths=(CI.NEW_ITEM_PATH, "mean"), cache_root=None)
    assert ids.paths == (CI.NEW_ITEM_PATH, "mean")
    table = ids.tables[CI.NEW_ITEM_PATH]
    assert len(np.unique(table, axis=0)) == ds.num_items and (table < np.array(ids.vocab_sizes)).all()
    assert np.array_equal(table[cs.warm_rows], ids.tables["mean"][cs.warm_rows])


def test_extend_ids_continues_the_disambiguation():
    old = np.array([[1, 2, 0], [1, 2, 1], [3, 4, 0]])
    new = extend_ids(old, np.array([[1, 2], [5, 5], [1, 2], [3, 4]]))
    assert new.tolist() == [[1, 2, 2], [5, 5, 0], [1, 2, 3], [3, 4, 1]]


@pytest.mark.parametrize("make", [lambda n: SASRec(n, SASRecConfig(hidden_size=16, max_len=8, inner_size=32)),
                                  lambda n: BERT4RecID(n, BERT4RecConfig(hidden_size=16, max_len=8, inner_size=32))])
def test_training_softmax_gives_cold_items_no_gradient(make):
    torch.manual_seed(0)
    n, cold = 30, torch.tensor([5, 17, 29])
    model = make(n)
    mask = torch.ones(n + 1, dtype=torch.bool)
    mask[0] = False
    mask[cold] = False
    model.train_item_mask = mask
    seqs = torch.randint(1, n + 1, (16, 8))
    seqs[torch.isin(seqs, cold)] = 1  # cold items never occur in training sequences
    model.loss(seqs, torch.Generator().manual_seed(0)).loss.backward()
    grad = model.backbone.item_embedding.weight.grad
    assert torch.all(grad[cold] == 0) and grad[:n + 1][mask].abs().sum() > 0
    if isinstance(model, BERT4RecID):
        assert torch.all(model.output_bias.grad[cold] == 0)
    model.zero_grad()
    model.train_item_mask = None  # without the mask a cold item is a negative: it gets pushed down
    model.loss(seqs, torch.Generator().manual_seed(0)).loss.backward()
    assert model.backbone.item_embedding.weight.grad[cold].abs().sum() > 0


def test_qbert_loss_ignores_cold_rows_of_the_id_table():
    from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig

    rng = np.random.default_rng(0)
    ids = np.concatenate([rng.integers(0, 6, (40, 2)), np.zeros((40, 1), np.int64)], 1)
    ids[:, 2] = np.arange(40) % 4
    cold = np.array([3, 11, 38])  # item ids
    cfg = QBertConfig(hidden=16, heads=2, max_len=8, dropout=0.0)
    seqs = torch.randint(1, 41, (12, 8))
    seqs[torch.isin(seqs, torch.as_tensor(cold))] = 1
    losses = []
    for variant, masked in ((0, True), (1, True), (1, False), (0, False)):
        table = ids.copy()
        if variant:
            table[cold - 1, :2] = rng.integers(0, 6, (len(cold), 2))  # other tokens for the cold items
        torch.manual_seed(0)
        model = QBert4Rec(table, (6, 6, 4), cfg)
        mask = torch.ones(41, dtype=torch.bool)
        mask[0] = False
        mask[cold] = False
        model.train_item_mask = mask if masked else None
        losses.append(float(model.loss(seqs, torch.Generator().manual_seed(0)).loss.detach()))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)  # masked: the cold rows do not matter
    assert losses[2] != pytest.approx(losses[3], abs=1e-6)  # unmasked they would (as negatives)


def test_id_baselines_know_nothing_about_cold_items(ds, tiny_cfg):
    from qbert4rec_lib.config import seed_everything

    cs = CS.cold_start_split(ds, 0.1, by="time", max_len=20)
    model, fits = CM.train_cold_model("SASRec-CE", ds, cs, tiny_cfg, seed=0)
    assert model.train_item_mask is None  # lifted after training
    from qbert4rec_lib.experiments.train import FitResult

    _, cached = CM.train_cold_model("SASRec-CE", ds, cs, tiny_cfg, seed=0)  # the cache hit gives the same fits
    assert list(fits) == list(cached) == ["train"] and all(isinstance(f, FitResult) for f in (*fits.values(), *cached.values()))
    assert cached["train"].history == fits["train"].history and cached["train"].best_epoch == fits["train"].best_epoch
    seed_everything(0)
    init = SASRec(ds.num_items, replace(tiny_cfg.sasrec, max_len=tiny_cfg.max_len))
    w, w0 = model.backbone.item_embedding.weight, init.backbone.item_embedding.weight
    assert torch.equal(w[cs.cold_items], w0[cs.cold_items])  # never updated: still the random initial rows
    assert not torch.equal(w[cs.warm_rows + 1], w0[cs.warm_rows + 1])
    pop = CS.evaluate_cold(Popularity(cs.split.train_item_counts()), cs)
    assert pop["cold"]["HR@50"] == 0.0 and pop["cold"]["median_rank"] > ds.num_items - len(cs.cold_items)


def test_content_knn_ranks_a_cold_item_by_its_content():
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(20, 8)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    vec[19] = vec[[2, 4]].mean(0) / np.linalg.norm(vec[[2, 4]].mean(0))  # item 20 (never seen) looks like 3 and 5
    knn = CM.ContentKNN(vec, k=2)
    scores = knn.score_all(torch.tensor([[0, 7, 3, 5]]))[0]  # history ends with items 3 and 5
    scores[[3, 5, 7]] = -torch.inf  # the evaluator excludes the history
    assert int(scores.argmax()) == 20
    assert float(scores[0]) == -np.inf


def test_cli_cold_start_writes_the_table(ds, tmp_path, capsys):
    import json

    from qbert4rec_lib.kit.cli import main

    out = tmp_path / "cold"
    rc = main(["cold-start", ds.source, "--seeds", "0", "1", "--fraction", "0.1", "--by", "random",
               "--models", "Content k-NN", "Popularity", "--set", 'features.modalities=["text"]', "--out", str(out)])
    assert rc == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["seeds"] == [0, 1] and set(payload["runs"]) == {"Content k-NN", "Popularity"}
    assert payload["mean_std"]["Popularity"]["cold"]["HR@10"]["mean"] == 0.0
    table = out.with_suffix(".md").read_text()
    assert "| Content k-NN |" in table and "cold median rank" in table and "drawn at random" in table
    assert "| Content k-NN |" in capsys.readouterr().out


def _fused_rows(valid_by_path: dict[str, list[tuple]], all_users: bool = True) -> dict[str, list[dict]]:
    """Fake cold-start rows: per path, one (median rank, NDCG@10[, all-user validation NDCG@10]) tuple per seed on
    cold validation users (the third value defaults to the second)."""
    metrics = lambda r, n: {"HR@10": n, "NDCG@10": n, "HR@50": 2 * n, "median_rank": r, "users": 140}  # noqa: E731
    return {f"Q-Bert4Rec (fused IDs, {p} query)": [
        {"seed": i, "cold_valid": metrics(t[0], t[1]), "cold": metrics(t[0], t[1]), "warm": metrics(t[0] / 2, 2 * t[1])}
        | ({"valid_all": metrics(t[0] / 2, t[-1])} if all_users else {}) for i, t in enumerate(v)]
        for p, v in valid_by_path.items()}


def test_choose_path_uses_the_validation_metric_it_is_given():
    from qbert4rec_lib.experiments.coldstart import choose_path

    # content+structure: best for the cold validation users by median rank, worst over all users
    rows = _fused_rows({"content": [(270.0, 0.034, 0.096), (256.0, 0.041, 0.094)],
                        "content+structure": [(250.0, 0.007, 0.087), (248.0, 0.012, 0.088)]})
    assert choose_path(rows) == choose_path(rows, "all_users_NDCG@10") == "content"  # the default: every user
    assert choose_path(rows, "median_rank") == "content+structure"  # lower median rank wins
    assert choose_path(rows, "NDCG@10") == "content"  # higher NDCG@10 wins
    assert choose_path({"SASRec-CE": rows["Q-Bert4Rec (fused IDs, content query)"]}) == ""  # no fused rows
    with pytest.raises(ValueError, match="select_by"):
        choose_path(rows, "MRR")
    old = _fused_rows({"content": [(270.0, 0.034)], "content+structure": [(250.0, 0.007)]}, all_users=False)
    with pytest.raises(ValueError, match="no all-user validation metrics.*median_rank"):
        choose_path(old)  # runs saved before the all-user rule: the error says what to do
    assert choose_path(old, "median_rank") == "content+structure"


def test_cold_start_table_re_tabulated_from_json_with_another_selection(tmp_path, capsys, monkeypatch):
    import json

    from qbert4rec_lib.experiments.coldstart import report_from_json
    from qbert4rec_lib.kit.cli import main

    rows = _fused_rows({"content": [(270.0, 0.034)], "content+structure": [(250.0, 0.007)]})
    payload = {"protocol": "P.", "seeds": [0], "chosen_path": "content", "chosen_by": "NDCG@10", "runs": rows}
    kept = report_from_json(payload)
    assert (kept.chosen_path, kept.chosen_by) == ("content", "NDCG@10")
    again = report_from_json(payload, select_by="median_rank")
    assert (again.chosen_path, again.chosen_by) == ("content+structure", "median_rank")
    assert "content+structure query) (chosen: best cold-validation median rank)" in again.table()
    with pytest.raises(ValueError, match="missing field 'runs'"):
        report_from_json({"seeds": [0]})
    path = tmp_path / "cold.json"
    path.write_text(json.dumps(payload))
    out = tmp_path / "again"
    assert main(["cold-start", "--from-json", str(path), "--out", str(out)]) == 0  # the saved choice is kept
    assert json.loads(out.with_suffix(".json").read_text())["chosen_path"] == "content"
    assert main(["cold-start", "--from-json", str(path), "--select-by", "median_rank", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["chosen_path"] == "content+structure"
    blocks = []  # the README block names the saved run's seeds, not the CLI's default --seeds
    monkeypatch.setattr("qbert4rec_lib.kit.reproduce.document_with_block", lambda marker: tmp_path / "README.md")
    monkeypatch.setattr("qbert4rec_lib.kit.reproduce.replace_readme_block", lambda body, marker, readme=None: blocks.append(body))
    assert main(["cold-start", "--from-json", str(path), "--update-readme", "results-x"]) == 0
    assert "(1 seed(s), " in blocks[0]
    path.write_text('{"runs": ')
    assert main(["cold-start", "--from-json", str(path)]) == 2
    assert f"{path}: line 1" in capsys.readouterr().err


def test_cold_start_rejects_bad_knobs_before_any_work(capsys):
    from qbert4rec_lib.experiments.coldstart import run_cold_start
    from qbert4rec_lib.kit.cli import main

    with pytest.raises(ValueError, match="path_neighbours must be >= 1, got 0"):
        run_cold_start(None, None, path_neighbours=0)  # fails before the dataset is touched
    with pytest.raises(SystemExit):
        main(["cold-start", "default", "--path-neighbours", "0"])
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_cold_start_runs_of_one_protocol_merge_seed_by_seed(tmp_path, capsys):
    import json

    from qbert4rec_lib.experiments.coldstart import merge_reports
    from qbert4rec_lib.kit.cli import main

    def run(seed, paths, knn):  # one process's saved run: its fused rows, and a content k-NN row
        rows = _fused_rows(paths)
        for r in rows.values():
            r[0]["seed"] = seed
        m = lambda n: {"HR@10": n, "NDCG@10": n, "HR@50": 2 * n, "median_rank": 100.0, "users": 140}  # noqa: E731
        rows["Content k-NN"] = [{"seed": seed, "cold": m(knn), "warm": m(0.05)}]
        return {"protocol": "P.", "seeds": [seed], "chosen_path": "content", "chosen_by": "all_users_NDCG@10",
                "runs": rows, "cold_items": [3, 7], "content_k": {str(seed): {"k": 3}}, "seconds": 10.0}

    a = run(0, {"content": [(270.0, 0.034)], "mean": [(300.0, 0.030)]}, 0.02)
    b = run(1, {"content": [(270.0, 0.020)], "mean": [(300.0, 0.040)]}, 0.02)
    merged = merge_reports([a, b])
    assert merged.seeds == [0, 1] and merged.seconds == 20.0
    assert [r["seed"] for r in merged.rows["Q-Bert4Rec (fused IDs, mean query)"]] == [0, 1]
    assert merged.chosen_path == "mean"  # chosen again over both seeds: mean 0.035 > content 0.027
    assert "| 2 |" in merged.table()
    again = merge_reports([a, a])  # the same run twice: nothing doubled
    assert again.seeds == [0] and len(again.rows["Content k-NN"]) == 1
    other = json.loads(json.dumps(a))
    other["runs"]["Content k-NN"][0]["cold"]["HR@10"] = 0.5
    with pytest.raises(ValueError, match="run 2 holds other numbers for 'Content k-NN' seed 0"):
        merge_reports([a, other])
    with pytest.raises(ValueError, match="b.json has another protocol than a.json"):
        merge_reports([a, b | {"protocol": "Q."}], ["a.json", "b.json"])
    with pytest.raises(ValueError, match="another new items"):
        merge_reports([a, b | {"cold_items": [3]}])
    with pytest.raises(ValueError, match="from 1 content neighbours, run 1 from 10"):  # another seed, other IDs
        merge_reports([a | {"ids": {"fused": {}}}, b | {"ids": {"fused": {"path_neighbours": 1}}}])
    files = []
    for name, payload in (("a.json", a), ("b.json", b)):
        files.append(tmp_path / name)
        files[-1].write_text(json.dumps(payload))
    out = tmp_path / "merged"
    assert main(["cold-start", "--from-json", *map(str, files), "--out", str(out)]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["seeds"] == [0, 1] and saved["chosen_path"] == "mean"


def test_dial_moves_transitions_from_attributes_to_item_specific_follow_ups():
    from qbert4rec_lib.data.synthetic import SyntheticConfig, generate
    from qbert4rec_lib.data.synthetic_folder import default_folder

    def attribute_share(cat):
        sub, brand = cat.attributes["subcategory"], cat.attributes["brand"]
        comp = {i: cat.labels["subcategory"].index(cat.complements[s]) for i, s in enumerate(cat.labels["subcategory"])}
        pairs = [(a, b) for s in cat.sequences for a, b in zip(s[:-1], s[1:])]
        return np.mean([sub[b] == comp[sub[a]] or brand[b] == brand[a] for a, b in pairs])

    small = dict(num_items=300, num_users=500)
    content, ids = generate(SyntheticConfig(**small)), generate(SyntheticConfig(id_driven=1.0, **small))
    assert attribute_share(content) > 0.45 and attribute_share(ids) < 0.25
    assert default_folder(SyntheticConfig(**small)) != default_folder(SyntheticConfig(id_driven=0.5, **small))
    with pytest.raises(ValueError, match="id_driven"):
        SyntheticConfig(id_driven=1.5)


def test_dial_table_lists_warm_and_cold_per_dial_value():
    from qbert4rec_lib.experiments.coldstart import dial_table

    def point(v, warm, cold):
        ms = lambda x: {"NDCG@10": {"mean": x, "std": 0.0}}  # noqa: E731
        return {"id_driven": v, "report": {"mean_std": {"Q-Bert4Rec": {"warm": ms(warm), "cold": ms(cold)}},
                                           "seeds": [0], "protocol": "P", "split": "S"}}

    table = dial_table([point(0.0, 0.1, 0.05), point(1.0, 0.2, 0.01)])
    assert "| model | id_driven 0 | id_driven 1 |" in table
    assert "| Q-Bert4Rec | 0.1000 / 0.0500 | 0.2000 / 0.0100 |" in table
    assert "Protocol: P" in table and "Split" not in table
    assert dial_table([]).startswith("(no dial points)")


def test_cold_start_training_is_watchable(ds, tiny_cfg, tmp_path, capsys):
    from qbert4rec_lib.experiments.coldstart import run_cold_start

    run_cold_start(ds, tiny_cfg, seeds=[0], models=("SASRec-CE",), cache_root=tmp_path, log=None, epoch_log=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cold start SASRec-CE seed 0")]
    assert [ln.split(" | ")[1] for ln in lines] == ["epoch 1", "epoch 2"], lines  # one line per epoch


def test_metadata_tokens_of_new_items_are_their_category_and_brand_and_leave_warm_ids_alone(ds):
    """The opt-in metadata row: a new item's tokens are its own category leaf and brand (known when it arrives);
    the warm items' IDs are those of a catalog without the new items (suffixes numbered warm-first)."""
    from qbert4rec_lib.experiments.coldstart_ids import metadata_cold_ids

    cs = CS.cold_start_split(ds, 0.1, by="time", seed=0, max_len=20)
    ids = metadata_cold_ids(ds, cs)
    table = ids.tables["metadata"]
    assert len({tuple(r) for r in table}) == ds.num_items  # unique
    leaf = np.array([p[-1] for p in ds.items.categories])
    for token in np.unique(table[:, 0]):
        assert len(set(leaf[table[:, 0] == token])) == 1
    warm = table[cs.warm_rows]
    for g in {tuple(r) for r in warm[:, :2]}:  # within every group, the warm items hold suffixes 0..k-1
        suffixes = np.sort(warm[(warm[:, :2] == g).all(axis=1), 2])
        assert suffixes.tolist() == list(range(len(suffixes)))
    assert set(ids.info["metadata"]) == {"new_items_with_an_unseen_category", "new_items_with_an_unseen_brand"}


class _Interrupt(Exception):
    pass


def test_an_interrupted_cold_start_training_resumes_to_the_same_model(ds, tiny_cfg, tmp_path):
    """Killed in the fine-tuning phase and started again: pretraining is not repeated, and the weights and curves are
    those of one uninterrupted run."""
    cfg = replace(tiny_cfg, finetune=TrainConfig(epochs=3))
    cs = CS.cold_start_split(ds, 0.1, by="time", max_len=20)
    ids = CI.cold_semantic_ids(ds, cs, cfg, "raw_text", cache_root=tmp_path / "ids")
    whole, whole_fits = CM.train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=0, ids=ids, cache_root=tmp_path / "a")

    def crash(entry):
        if entry["phase"] == "finetune" and entry["epoch"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        CM.train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=0, ids=ids, cache_root=tmp_path / "b", log=crash)
    ran = []
    resumed, fits = CM.train_cold_model("Q-Bert4Rec", ds, cs, cfg, seed=0, ids=ids, cache_root=tmp_path / "b",
                                        log=ran.append)
    assert [(e["phase"], e["epoch"]) for e in ran] == [("finetune", 3)]  # nothing before the interruption again
    for phase in ("pretrain", "finetune"):
        assert [e["train_loss"] for e in fits[phase].history] == [e["train_loss"] for e in whole_fits[phase].history]
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "b").glob("coldstart_model/*.partial"))  # the scratch folder goes with the write


def test_all_user_validation_is_every_user_warm_and_cold_together(ds):
    """``valid_all`` (the path rule's metric) ranks every user's validation item: its NDCG@10 is the user-weighted mean
    of the warm-validation and the cold-validation users' NDCG@10."""
    cs = CS.cold_start_split(ds, 0.1, by="time", max_len=20)
    model = Popularity(cs.split.train_item_counts())
    out = CS.evaluate_cold(model, cs)
    n = len(cs.split.valid_target)
    warm_valid = np.setdiff1d(np.arange(n), cs.cold_valid_users)
    warm = CS.evaluate_users(model, cs.split, warm_valid, CS.COLD_EVAL, which="valid").metrics["NDCG@10"]
    assert out["valid_all"]["users"] == n == ds.num_users and len(cs.cold_valid_users) > 0
    expected = (warm * len(warm_valid) + out["cold_valid"]["NDCG@10"] * len(cs.cold_valid_users)) / n
    assert out["valid_all"]["NDCG@10"] == pytest.approx(expected, abs=1e-9)


def test_cold_scores_are_ranked_like_a_model_with_those_scores(ds):
    """evaluate_cold_scores (the oracle rows) gives the same groups and numbers as evaluate_cold for a model that
    scores every user the same way (Popularity)."""
    cs = CS.cold_start_split(ds, 0.1, by="time", max_len=20)
    model = Popularity(cs.split.train_item_counts() + np.arange(ds.num_items + 1) * 1e-3)  # no ties among new items
    with torch.inference_mode():
        row = model.score_all(torch.zeros(1, 1, dtype=torch.long))[0].numpy().astype(np.float64)  # [N + 1]
    scores = np.tile(row, (ds.num_users, 1))
    by_model, by_scores = CS.evaluate_cold(model, cs), CS.evaluate_cold_scores(scores, scores, cs)
    assert set(by_scores) == set(by_model) == {"warm", "cold", "new_only", "cold_valid", "valid_all"}
    for group in by_model:
        assert by_scores[group] == pytest.approx(by_model[group], abs=1e-6), group
    assert by_scores["new_only"]["HR@10"] > by_scores["cold"]["HR@10"]  # the shelf hides every warm item


def test_cold_start_table_has_oracle_rows_on_a_generated_catalog_only(ds, tiny_cfg, tmp_path):
    """The generator's probabilities rank warm users' items far better than popularity; knowing a new item's own
    popularity or not changes only the new items' scores. A non-generated dataset gets no oracle rows."""
    from qbert4rec_lib.experiments.coldstart import ORACLE_ROWS, run_cold_start

    report = run_cold_start(ds, tiny_cfg, seeds=[0], models=("Popularity", *ORACLE_ROWS), cache_root=tmp_path, log=None)
    assert set(report.rows) == {"Popularity", *ORACLE_ROWS}
    exact, unknown = (report.rows[r][0] for r in ORACLE_ROWS)
    assert exact["warm"]["HR@10"] > report.rows["Popularity"][0]["warm"]["HR@10"] + 0.05
    assert exact["new_only"]["HR@10"] > report.rows["Popularity"][0]["new_only"]["HR@10"]
    assert exact["cold"] != unknown["cold"]  # the new items' own popularity mattered to their ranks
    plain = replace(ds, source=str(tmp_path / "not-generated"))
    lines = []
    report = run_cold_start(plain, tiny_cfg, seeds=[0], models=("Popularity", *ORACLE_ROWS), cache_root=tmp_path,
                            log=lines.append)
    assert set(report.rows) == {"Popularity"} and any("no oracle rows" in line for line in lines)


def test_similarity_helpers_count_leading_levels_and_cosines():
    from qbert4rec_lib.experiments.coldstart_similarity import last_item_cosine, shared_levels

    codes = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 3], [7, 2, 3]])  # [M, L]
    last = torch.tensor([[1, 2, 3], [7, 9, 9]])  # [B, L]
    # leading levels only: item 2 shares levels 1 and 3 with the first user's last item but counts 1
    assert shared_levels(codes, last).tolist() == [[3, 2, 1, 0], [0, 0, 0, 1]]
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # row = item id - 1
    cos = last_item_cosine(vectors, last=np.array([1, 1, 3]), target=np.array([2, 3, 3]))
    assert np.allclose(cos, [0.0, np.sqrt(0.5), 1.0])


def test_content_channel_row_trains_its_own_model_and_reloads_it(ds, tiny_cfg, tmp_path):
    """``Q-Bert4Rec + content channel``: its own cached model (the content vectors in the key: other vectors, another
    model), rows for every stage-1 path, a cache hit that scores exactly as the trained model, its best path marked."""
    from qbert4rec_lib.experiments.coldstart import CONTENT_CHANNEL, run_cold_start

    cfg = replace(tiny_cfg, fusion=replace(tiny_cfg.fusion, epochs=1))
    report = run_cold_start(ds, cfg, seeds=[0], models=(CONTENT_CHANNEL,), paths=("mean", "unknown"),
                            cache_root=tmp_path, log=None)
    assert set(report.rows) == {f"{CONTENT_CHANNEL} (fused IDs, {p} query)" for p in ("mean", "unknown")}
    assert report.chosen_path == ""  # the paper's rows choose the path; the extension's best is marked on its own
    assert report.table().count("(chosen: best") == 1
    again = run_cold_start(ds, cfg, seeds=[0], models=(CONTENT_CHANNEL,), paths=("mean", "unknown"),
                           cache_root=tmp_path, log=None)
    assert again.rows == report.rows
    cs = CS.cold_start_split(ds, 0.1, by="time", seed=0, max_len=cfg.max_len)
    ids = CI.cold_semantic_ids(ds, cs, cfg, "fused", paths=("mean", "unknown"), cache_root=tmp_path)
    on = replace(cfg, qbert=replace(cfg.qbert, content_channel="input_output"))
    with pytest.raises(ValueError, match="needs content vectors"):
        CM.train_cold_model("Q-Bert4Rec", ds, cs, on, seed=0, ids=ids, cache_root=tmp_path)
    vectors = np.random.default_rng(0).normal(size=(ds.num_items, 8)).astype(np.float32)
    model, fits = CM.train_cold_model("Q-Bert4Rec", ds, cs, on, seed=0, ids=ids, content=vectors, cache_root=tmp_path)
    assert model.content_projection.weight.shape[1] == 8 and fits["finetune"].history  # trained: a new key
    assert len(list((tmp_path / "coldstart_model").glob("*/meta.json"))) == 2
