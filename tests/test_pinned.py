"""Pinned semantic IDs: written by one machine, read by another; every mismatch is named, the keys are unchanged."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from qbert4rec_lib import open_dataset
from qbert4rec_lib.experiments.pinned import export_semantic_ids, load_semantic_ids
from qbert4rec_lib.experiments import run_experiment, semantic_ids, smoke_config
from qbert4rec_lib.experiments.train import TrainConfig

TINY = dict(num_items=260, num_users=380)


@pytest.fixture(scope="module")
def tiny():
    return open_dataset("default", **TINY)


@pytest.fixture(scope="module")
def built(tiny):
    cfg = smoke_config()
    return cfg, semantic_ids(tiny, cfg, progress=False)


def test_round_trip_keeps_table_and_key(tiny, built, tmp_path):
    cfg, ids = built
    folder = export_semantic_ids(ids, tiny, cfg, tmp_path / "pinned")
    meta = json.loads((folder / "ids.json").read_text())
    assert meta["made_on"]["cpu"] and meta["dataset"] == tiny.name
    loaded = semantic_ids(tiny, cfg, pinned=folder)
    assert loaded.key == ids.key and loaded.source == ids.source
    np.testing.assert_array_equal(loaded.table.ids, ids.table.ids)
    assert loaded.table.vocab_sizes == ids.table.vocab_sizes and loaded.fusion is None


def test_a_run_on_pinned_ids_is_the_same_run(tiny, built, tmp_path):
    """Same table, same key: a record written from built IDs is found when the IDs are pinned (no training)."""
    cfg, ids = built
    cfg = dataclasses.replace(cfg, pretrain=TrainConfig(epochs=1), finetune=TrainConfig(epochs=1))
    folder = export_semantic_ids(ids, tiny, cfg, tmp_path / "pinned")
    records = tmp_path / "records"
    first = run_experiment(tiny, cfg, models=["Q-Bert4Rec"], seeds=[0], progress=False, log=None, records_dir=records)
    again = run_experiment(tiny, cfg, models=["Q-Bert4Rec"], seeds=[0], progress=False, log=None, records_dir=records,
                           train=False, pinned_ids=folder)
    assert again.runs["Q-Bert4Rec"][0].test.metrics == first.runs["Q-Bert4Rec"][0].test.metrics


def test_mismatches_are_named(tiny, built, tmp_path):
    cfg, ids = built
    folder = export_semantic_ids(ids, tiny, cfg, tmp_path / "pinned")
    other = open_dataset("default", seed=5, **TINY)
    with pytest.raises(ValueError, match=r"ids\.json: field 'dataset_fingerprint'"):
        load_semantic_ids(folder, other, cfg)
    changed = dataclasses.replace(cfg, rqvae=dataclasses.replace(cfg.rqvae, codebook_size=cfg.rqvae.codebook_size * 2))
    with pytest.raises(ValueError, match=r"field 'stage_recipe' differs"):
        load_semantic_ids(folder, tiny, changed)
    with pytest.raises(ValueError, match=r"field 'source'"):
        load_semantic_ids(folder, tiny, dataclasses.replace(cfg, semantic_source="raw_text"))
    table = np.load(folder / "ids.npy")
    table[0, 0] = (table[0, 0] + 1) % cfg.rqvae.codebook_size
    np.save(folder / "ids.npy", table)
    with pytest.raises(ValueError, match=r"ids\.npy: content does not match field 'ids_sha256_16'"):
        load_semantic_ids(folder, tiny, cfg)
    (folder / "ids.json").write_text('{"format": "qbert4rec-semantic-ids/1",\n  "key": }')
    with pytest.raises(ValueError, match=r"ids\.json line 2: not JSON"):
        load_semantic_ids(folder, tiny, cfg)
    with pytest.raises(ValueError, match=r"does not exist"):
        load_semantic_ids(tmp_path / "nowhere", tiny, cfg)
