"""Result records: one small JSON per finished (model, config, seed), read back instead of retraining."""
from __future__ import annotations

import dataclasses
import json

import pytest

from qbert4rec_lib import open_dataset
from qbert4rec_lib.experiments import run_experiment, smoke_config
from qbert4rec_lib.experiments.train import FitResult, TrainConfig, epoch_logger

TINY = dict(num_items=260, num_users=380)


@pytest.fixture(scope="module")
def tiny():
    return open_dataset("default", **TINY)


def _cfg(epochs=2):
    return dataclasses.replace(smoke_config(), baseline_train=TrainConfig(epochs=epochs, eval_every=1))


def test_records_are_written_read_back_and_missing_runs_listed(tiny, tmp_path, capsys):
    records = tmp_path / "records"
    first = run_experiment(tiny, _cfg(), models=["SASRec-CE", "Popularity"], seeds=[0], progress=False, log=None,
                           epoch_log=True, records_dir=records)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("SASRec-CE seed 0 | epoch")]
    assert len(lines) == 2 and "valid NDCG@10" in lines[0]  # one flushed line per epoch
    files = sorted(p.name for p in records.iterdir())
    assert len(files) == 2 and files[0].startswith("popularity__seed0__") and files[1].startswith("sasrec-ce__seed0__")
    record = json.loads((records / files[1]).read_text())
    assert record["test"] == first.runs["SASRec-CE"][0].test.metrics
    assert record["fits"]["train"]["stop_reason"] == "epochs" and len(record["fits"]["train"]["history"]) == 2
    assert "protocol" in record and record["config"]["train"]["epochs"] == 2

    # records only: the finished runs come back without training, the missing seed is listed, not trained
    again = run_experiment(tiny, _cfg(), models=["SASRec-CE", "Popularity"], seeds=[0, 1], progress=False, log=None,
                           records_dir=records, train=False)
    assert again.runs["SASRec-CE"][0].model is None
    assert again.runs["SASRec-CE"][0].test.metrics == first.runs["SASRec-CE"][0].test.metrics
    assert "Not finished yet (no record): SASRec-CE seed 1" in again.table_md
    assert "best epoch" in again.table_md and len(list(records.iterdir())) == 2

    # fresh, read from a record or from the cache: ModelRun.fits always holds FitResult objects
    cached = run_experiment(tiny, _cfg(), models=["SASRec-CE"], seeds=[0], progress=False, log=None)
    fresh, recorded, hit = first.runs["SASRec-CE"][0], again.runs["SASRec-CE"][0], cached.runs["SASRec-CE"][0]
    assert hit.from_cache and recorded.from_cache and not fresh.from_cache
    for run in (fresh, recorded, hit):
        assert set(run.fits) == {"train"} and isinstance(run.fits["train"], FitResult)
        f = run.fits["train"]
        assert (f.best_epoch, f.stop_reason, len(f.history)) == (fresh.fits["train"].best_epoch, "epochs", 2)
    assert hit.fits["train"].history == fresh.fits["train"].history  # the cache keeps the whole curve

    # another config is another record: a changed epoch cap does not reuse the old result
    with pytest.raises(ValueError, match="no finished runs.*SASRec-CE seed 0"):
        run_experiment(tiny, _cfg(epochs=1), models=["SASRec-CE"], seeds=[0], progress=False, log=None,
                       records_dir=records, train=False)


def test_a_broken_record_is_an_error_naming_it(tiny, tmp_path):
    records = tmp_path / "records"
    run_experiment(tiny, _cfg(1), models=["Popularity"], seeds=[0], progress=False, log=None, records_dir=records)
    path = next(records.iterdir())
    path.write_text("{not json")
    with pytest.raises(ValueError, match=path.name):
        run_experiment(tiny, _cfg(1), models=["Popularity"], seeds=[0], progress=False, log=None, records_dir=records)


def test_epoch_logger_tracks_the_best_per_phase(capsys):
    log = epoch_logger("Q seed 0")
    log({"epoch": 1, "train_loss": 2.0, "valid": {"NDCG@10": 0.1}, "seconds": 1.0, "valid_seconds": 0.5, "phase": "pretrain"})
    log({"epoch": 1, "train_loss": 1.0, "valid": {"NDCG@10": 0.05}, "seconds": 1.0, "phase": "finetune"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Q seed 0 pretrain | epoch 1 | loss 2.0000 | valid NDCG@10 0.1000 (best 0.1000 @ 1) | 1.0 s + 0.5 s eval"
    assert "(best 0.0500 @ 1)" in out[1] and out[1].startswith("Q seed 0 finetune")
    # after a resume the logger has not seen the earlier epochs: fit passes its own best along
    log({"epoch": 9, "valid": {"NDCG@10": 0.02}, "seconds": 1.0, "phase": "finetune", "best": {"score": 0.3, "epoch": 4}})
    assert "valid NDCG@10 0.0200 (best 0.3000 @ 4)" in capsys.readouterr().out


def test_study_table_is_assembled_from_labelled_records(tmp_path):
    from qbert4rec_lib.experiments import study_runs_from_records, study_table

    def record(label, seed, ndcg):
        fits = {"finetune": {"history": [], "best_epoch": 3, "stop_reason": "patience", "seconds": 1.0},
                "pretrain": {"history": [], "best_epoch": 50, "stop_reason": "patience", "seconds": 9.0}}
        return {"model": "Q-Bert4Rec", "seed": seed, "key": f"k{label}{seed}", "label": label, "fits": fits,
                "test": {"NDCG@10": ndcg, "HR@10": 2 * ndcg}, "valid": {"NDCG@10": ndcg, "HR@10": 2 * ndcg},
                "protocol": "leave-one-out, full ranking, test split", "num_users": 10}

    for i, (label, seed, ndcg) in enumerate([("no_pretrain", 0, 0.05), ("default", 1, 0.09), ("default", 0, 0.07)]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(record(label, seed, ndcg)))
    (tmp_path / "unlabelled.json").write_text(json.dumps({**record("x", 0, 0.1), "label": None}))
    runs = study_runs_from_records(tmp_path)
    assert all(isinstance(f, FitResult) for rs in runs.values() for r in rs for f in r.fits.values())
    assert list(runs) == ["default", "no_pretrain"]  # STUDY order; the unlabelled record is not a row
    assert [r.seed for r in runs["default"]] == [0, 1]
    table = study_table(runs)
    assert "| default |" in table and "0.0800 ± 0.0141" in table and "pretrain 50 (patience), finetune 3" in table
    # a baseline trained into the same folder becomes a reference row, first
    sas = {**record("x", 0, 0.095), "label": None, "model": "SASRec-CE", "key": "ks",
           "fits": {"train": {"history": [], "best_epoch": 20, "stop_reason": "patience", "seconds": 5.0}}}
    (tmp_path / "sasrec.json").write_text(json.dumps(sas))
    runs = study_runs_from_records(tmp_path)
    assert list(runs) == ["reference: SASRec-CE", "default", "no_pretrain"]
    assert "| reference: SASRec-CE | same protocol" in study_table(runs)


def test_study_rows_compose_and_a_record_must_match_its_row(tmp_path):
    """Rows compose with '+'; with ``base``, a labelled record whose stored config is not its row is an error that
    names the file (a row never shows a run of another configuration, e.g. one made under an earlier default)."""
    from qbert4rec_lib.cache import _jsonable, _key_view
    from qbert4rec_lib.experiments import study_config, study_runs_from_records
    from qbert4rec_lib.experiments.runs import run_config

    base = smoke_config()
    both = study_config("finetune_masked+hidden_128", base)
    assert both.qbert.hidden == 128 and both.finetune_masks.objective == "masked"
    assert base.finetune_masks.objective == "next_item"  # the default fine-tuning objective
    with pytest.raises(ValueError, match="unknown study row 'nope'"):
        study_config("finetune_masked+nope", base)

    def record(label, cfg, key_view=True):
        relevant = run_config("Q-Bert4Rec", cfg, ids_key="abc")
        fits = {"finetune": {"history": [], "best_epoch": 3, "stop_reason": "patience", "seconds": 1.0}}
        return {"model": "Q-Bert4Rec", "seed": 0, "key": "k", "label": label, "fits": fits,
                "config": _jsonable(_key_view(relevant) if key_view else relevant),
                "test": {"NDCG@10": 0.1, "HR@10": 0.2}, "valid": {"NDCG@10": 0.1, "HR@10": 0.2},
                "protocol": "leave-one-out", "num_users": 10}

    # stored with or without its key-neutral fields, a record of the row's own config matches
    (tmp_path / "a.json").write_text(json.dumps(record("finetune_masked+hidden_128", both)))
    (tmp_path / "b.json").write_text(json.dumps(record("default", base, key_view=False)))
    assert list(study_runs_from_records(tmp_path, base=base)) == ["default", "finetune_masked+hidden_128"]
    # a masked-fine-tuning run still labelled "default" (as before the default changed) is refused
    (tmp_path / "c.json").write_text(json.dumps(record("default", study_config("finetune_masked", base))))
    with pytest.raises(ValueError, match="c.json: its config is not study row 'default'"):
        study_runs_from_records(tmp_path, base=base)
    assert "default" in study_runs_from_records(tmp_path)  # without a base nothing is checked


def test_runs_that_differ_only_in_fine_tuning_share_the_cached_pretraining(tiny, tmp_path):
    """The pretraining phase has its own cache entry; a hit gives exactly the model a fresh pretraining gives."""
    from qbert4rec_lib.experiments import train_model

    base = dataclasses.replace(smoke_config(), pretrain=TrainConfig(epochs=2, eval_every=1, lr=2e-3),
                               finetune=TrainConfig(epochs=1, eval_every=1, lr=1e-3))
    other = dataclasses.replace(base, finetune=TrainConfig(epochs=1, eval_every=1, lr=5e-4))
    shared = tmp_path / "shared"
    first = train_model("Q-Bert4Rec", tiny, base, seed=0, cache_root=shared, progress=False)
    second = train_model("Q-Bert4Rec", tiny, other, seed=0, cache_root=shared, progress=False)
    assert len([p for p in (shared / "qbert-pretrain").iterdir() if p.is_dir()]) == 1  # one pretraining, both runs
    assert not second.from_cache and second.fits["pretrain"].history == first.fits["pretrain"].history
    # the same second run with nothing cached but the semantic IDs: identical result
    alone = tmp_path / "alone"
    import shutil

    for stage in (p for p in shared.iterdir() if p.name not in ("qbert-pretrain", "seqmodel")):
        shutil.copytree(stage, alone / stage.name)
    fresh = train_model("Q-Bert4Rec", tiny, other, seed=0, cache_root=alone, progress=False)
    assert fresh.test.metrics == second.test.metrics and fresh.valid.metrics == second.valid.metrics


def test_reference_rows_use_only_baseline_runs_of_the_preset(tmp_path):
    """With ``base``, a baseline record made under another setting (e.g. an earlier learning rate) stays on file but
    is not averaged into the preset's reference row."""
    from dataclasses import replace

    from qbert4rec_lib.cache import _jsonable
    from qbert4rec_lib.experiments import study_runs_from_records
    from qbert4rec_lib.experiments.runs import run_config

    base = smoke_config()
    old = replace(base, bert4rec_train=replace(base.bert4rec_train, lr=2e-3))

    def record(name, cfg, ndcg, label=None):
        fits = {"train": {"history": [], "best_epoch": 5, "stop_reason": "patience", "seconds": 1.0}}
        return {"model": name, "seed": 0, "key": f"k{ndcg}", "label": label, "fits": fits,
                "config": _jsonable(run_config(name, cfg, ids_key="abc")),
                "test": {"NDCG@10": ndcg, "HR@10": 0.2}, "valid": {"NDCG@10": ndcg, "HR@10": 0.2},
                "protocol": "leave-one-out, full ranking, test split", "num_users": 10}

    q = record("Q-Bert4Rec", base, 0.09, label="default")
    q["fits"] = {"finetune": {"history": [], "best_epoch": 3, "stop_reason": "patience", "seconds": 1.0}}
    for i, r in enumerate([q, record("BERT4Rec-ID", base, 0.064), record("BERT4Rec-ID", old, 0.051)]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    runs = study_runs_from_records(tmp_path, base)
    assert [r.test.metrics["NDCG@10"] for r in runs["reference: BERT4Rec-ID"]] == [0.064]
    assert len(study_runs_from_records(tmp_path)["reference: BERT4Rec-ID"]) == 2  # without a preset: every record


def test_content_channel_runs_are_keyed_apart_and_reload_exactly(tiny, tmp_path):
    """``qbert.content_channel``: the run (and its pretraining) gets keys of its own, with the content vectors in them;
    a cache hit scores exactly as the trained model (the content table is rebuilt from the features, not saved)."""
    from qbert4rec_lib.experiments import train_model

    base = dataclasses.replace(smoke_config(), pretrain=TrainConfig(epochs=2, eval_every=1, lr=2e-3),
                               finetune=TrainConfig(epochs=1, eval_every=1, lr=1e-3))
    on = dataclasses.replace(base, qbert=dataclasses.replace(base.qbert, content_channel="input_output"))
    plain = train_model("Q-Bert4Rec", tiny, base, seed=0, cache_root=tmp_path, progress=False)
    first = train_model("Q-Bert4Rec", tiny, on, seed=0, cache_root=tmp_path, progress=False)
    assert not first.from_cache and first.model.content_projection is not None
    assert len([p for p in (tmp_path / "qbert-pretrain").iterdir() if p.is_dir()]) == 2
    again = train_model("Q-Bert4Rec", tiny, on, seed=0, cache_root=tmp_path, progress=False)
    assert again.from_cache and again.test.metrics == first.test.metrics
    assert plain.test.metrics != first.test.metrics
