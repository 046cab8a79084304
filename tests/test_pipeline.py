"""Pipeline composition: presets and the one-switch ablations (no training here)."""
from __future__ import annotations

import pytest

from qbert4rec_lib.experiments import ABLATIONS, PRESETS, ExperimentConfig, ablation_config, preset


def test_presets_are_distinct_and_named():
    configs = {name: preset(name) for name in PRESETS}
    assert len({repr(c) for c in configs.values()}) == len(PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'tiny'.*smoke, beauty, beauty-quick, full"):
        preset("tiny")


def test_beauty_preset_trains_to_early_stopping_and_quick_is_capped():
    cfg = preset("beauty")
    for phase in (cfg.pretrain, cfg.finetune, cfg.baseline_train, cfg.bert4rec_train):
        assert phase.time_limit_s == 0  # reproducible whatever the machine load
        assert phase.patience >= 5  # early stopping decides ...
        assert phase.epochs >= 40 * phase.eval_every * phase.patience // 10  # ... the epoch cap is generous
    quick = preset("beauty-quick")
    for phase in (quick.pretrain, quick.finetune, quick.baseline_train):
        assert phase.epochs <= 15
    # stages 1-2 keep the defaults, so the Beauty semantic IDs are the same as with the full preset
    for c in (cfg, quick):
        assert c.fusion == ExperimentConfig().fusion and c.rqvae == ExperimentConfig().rqvae


def test_each_ablation_flips_exactly_one_switch():
    base = preset("smoke")
    seen = {}
    for name in ABLATIONS:
        cfg = ablation_config(name, base)
        if name == "full":
            assert cfg == base
            continue
        assert cfg != base, name
        changed = [f for f in base.__dataclass_fields__ if getattr(cfg, f) != getattr(base, f)]
        assert len(changed) == 1, (name, changed)
        seen[name] = repr(cfg)
    assert len(set(seen.values())) == len(seen)  # no two ablations are the same experiment
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_config("no_such_thing", base)
