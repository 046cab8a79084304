"""Experiments: the stages composed into trained, evaluated, cached runs, and the tables built from them.

Where to change what:

* a preset or a default of a run (epochs, patience, which models): ``experiments/presets.py``
* how stages 0-2 are chained into the semantic-ID table (fused / raw text / random IDs): ``experiments/stages.py``
* how a model is trained and cached (Q-Bert4Rec's pretrain -> fine-tune phases, the baselines): ``experiments/runs.py``
* the training loop, early stopping, checkpoints: ``experiments/train.py``
* the evaluation protocol (leave-one-out, full ranking, metrics): ``experiments/evaluate.py``
* committed result records (one JSON per finished run): ``experiments/records.py``
* the multi-seed results table and the ablations: ``experiments/experiment.py``; the study rows: ``experiments/study.py``
* cold-start items and the content-to-ID dial: ``experiments/coldstart.py`` (+ ``coldstart_*.py``);
  cross-domain transfer: ``experiments/crossdomain.py``

The names below are re-exported for convenience (``from qbert4rec_lib.experiments import run_experiment``).
"""
from .experiment import ABLATIONS, ExperimentResult, ablation_config, ablation_table, run_ablations, run_experiment
from .presets import (MODEL_NAMES, PRESETS, ExperimentConfig, beauty_config, beauty_quick_config, config_json, preset,
                      smoke_config)
from .records import read_record, run_from_record, runs_from_records, write_record
from .runs import ModelRun, train_model
from .stages import SemanticIDs, semantic_ids
from .study import STUDY, run_study, study_config, study_runs_from_records, study_table

__all__ = [
    "ExperimentConfig", "MODEL_NAMES", "PRESETS", "preset", "smoke_config", "beauty_config", "beauty_quick_config",
    "config_json", "SemanticIDs", "semantic_ids", "ModelRun", "train_model", "write_record", "read_record",
    "run_from_record", "runs_from_records", "ExperimentResult", "run_experiment", "ABLATIONS", "ablation_config",
    "run_ablations", "ablation_table", "STUDY", "study_config", "run_study", "study_runs_from_records", "study_table",
]
