"""The whole Q-Bert4Rec pipeline, stage by stage, cached: features -> fusion -> RQ-VAE -> sequence models.

This module only *composes* the stage modules; it adds no modelling of its own:

    build_features (features.py)  ->  run_fusion (fusion.py, stage 1)  ->  run_quantize (quantize.py, stage 2)
        ->  QBert4Rec pretrain (multi-mask mixture) -> fine-tune (tail emphasis)  (qbert.py, masking.py, stage 3)
        ->  evaluate (evaluate.py): leave-one-out, full ranking, history excluded

plus the baselines (Popularity, SASRec-CE, BERT4Rec over item IDs) trained by the same ``train.fit`` with the same
early stopping and evaluated by the same evaluator. Every trained model is cached (safetensors weights + JSON
history) under ``stage_dir("seqmodel", ...)`` keyed by the dataset, the semantic-ID table, the config and the
seed, so the notebooks and the CLI reuse each other's work and an interrupted multi-seed run resumes.

The ablations are one config switch each (:data:`ABLATIONS`):

* ``no_injection``: RQ-VAE directly on the raw text features (no stage 1);
* ``text_only``: stage 1 fuses the text modality only;
* ``fixed_depth``: stage 1 with the gate off (every item runs all blocks);
* ``random_ids``: the fused semantic IDs shuffled across items (same shape and vocabulary, no semantics);
* ``mask_<strategy>``: pretraining with one mask strategy instead of the mixture;
* ``no_pretrain``: fine-tuning only, from random initialisation;
* ``item_id_embedding`` / ``item_bias`` (variants, not removals): add an item-ID input embedding / a learned
  per-item score bias — ID features that help a single catalog but neither transfer nor reach cold items.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch

from ..models.baselines import BERT4RecConfig, SASRecConfig
from ..cache import stable_hash, stage_dir
from ..config import seed_everything
from .evaluate import EvalConfig, EvalResult, evaluate_split, results_table
from ..semantic.features import FeatureConfig, FeatureSet, build_features, pooled
from ..semantic.fusion import FusionConfig, FusionResult, run_fusion
from ..models.masking import FINETUNE_MASKS, PRETRAIN_MASKS, STRATEGIES, MaskConfig, only
from ..models.qbert import QBert4Rec, QBertConfig
from ..semantic.quantize import QuantizeResult, RQVAEConfig, SemanticIDTable, run_quantize
from .train import FitResult, TrainConfig, fit

__all__ = [
    "ExperimentConfig",
    "SemanticIDs",
    "semantic_ids",
    "ModelRun",
    "train_model",
    "MODEL_NAMES",
    "run_experiment",
    "ExperimentResult",
    "ABLATIONS",
    "STUDY",
    "study_config",
    "run_study",
    "study_table",
    "study_runs_from_records",
    "ablation_config",
    "run_ablations",
    "smoke_config",
    "beauty_config",
    "beauty_quick_config",
    "preset",
    "PRESETS",
]

MODEL_NAMES = ("Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID", "Popularity")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every knob of one end-to-end run (each stage's own frozen config, plus the ablation switches)."""

    features: FeatureConfig = FeatureConfig()  # stage 0: which modalities, which encoders
    fusion: FusionConfig = FusionConfig()  # stage 1: cross-modal semantic injection
    rqvae: RQVAEConfig = RQVAEConfig()  # stage 2: semantic quantization
    qbert: QBertConfig = QBertConfig()  # stage 3: the encoder over semantic-ID tokens
    pretrain_masks: MaskConfig = PRETRAIN_MASKS  # stage 3 pretraining: the multi-mask mixture
    finetune_masks: MaskConfig = FINETUNE_MASKS  # stage 3 fine-tuning: next-item (tail) emphasis
    pretrain: TrainConfig = TrainConfig(epochs=60, patience=5)  # optimisation of the pretraining phase
    finetune: TrainConfig = TrainConfig(epochs=40, lr=1e-3, patience=5)  # optimisation of the fine-tuning phase
    baseline_train: TrainConfig = TrainConfig(epochs=100, patience=5)  # optimisation of SASRec-CE (and BERT4Rec-ID)
    bert4rec_train: TrainConfig | None = None  # optimisation of BERT4Rec-ID; None = baseline_train
    sasrec: SASRecConfig = SASRecConfig()  # SASRec-CE architecture and dropout (max_len comes from max_len)
    bert4rec: BERT4RecConfig = BERT4RecConfig()  # BERT4Rec-ID architecture and masking (max_len from max_len)
    eval: EvalConfig = EvalConfig()  # leave-one-out, full ranking, history excluded, pessimistic ties
    max_len: int = 50  # history length of every model (and of the split)
    semantic_source: str = "fused"  # "fused" (stages 1+2) | "raw_text" (RQ-VAE on text: no injection) | "random"
    do_pretrain: bool = True  # False = fine-tune from scratch (ablation)

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={"max_len": "[1, inf)"})  # and every section is a config of its class
        if self.semantic_source not in ("fused", "raw_text", "random"):
            raise ValueError(f"ExperimentConfig.semantic_source must be fused|raw_text|random, got {self.semantic_source!r}")


def smoke_config(epochs_scale: float = 1.0) -> ExperimentConfig:
    """Small, CPU-friendly settings for the embedded default (what the notebooks' defaults use)."""
    e = lambda n: max(1, int(round(n * epochs_scale)))  # noqa: E731
    return ExperimentConfig(
        fusion=FusionConfig(epochs=e(20)),
        rqvae=RQVAEConfig(epochs=e(60)),
        # every model to early stopping (the caps are never what stops them): on this catalog Q-Bert4Rec's best
        # pretraining epoch is ~100, SASRec-CE's ~28, BERT4Rec-ID's ~18 (seed 0). Pretraining gets a long patience
        # (20 evaluations = 40 epochs): BERT-style training plateaus before it improves again; on the overview's tiny
        # catalog (500 items) patience 8 stopped Q-Bert4Rec at epoch 32 with test NDCG@10 0.050 (below Popularity's
        # 0.075), patience 20 at epoch 144 with 0.092; on the default catalog both stop at the same best epoch (106).
        pretrain=TrainConfig(epochs=e(300), patience=20, eval_every=2),
        finetune=TrainConfig(epochs=e(100), lr=1e-3, patience=5),
        baseline_train=TrainConfig(epochs=e(300), patience=10, eval_every=2),
        # BERT4Rec-ID at its best validation setting of a small sweep on this catalog (2 seeds each, records in
        # figures/results/records/default_bert4rec_tuning): dropout 0.3 valid NDCG@10 0.057 (test 0.051) vs 0.2
        # 0.053 (0.049), 0.5 0.053 (0.047), mask ratio 0.6 0.053 (0.049), last-item-only rows 0.049 (0.044),
        # patience 20 = patience 10. Every setting sits near Popularity (test 0.048) here.
        bert4rec=BERT4RecConfig(dropout=0.3, attn_dropout=0.3),
    )


# ---- stages 0-2: semantic IDs --------------------------------------------------------------
class SemanticIDs(NamedTuple):
    features: FeatureSet
    fusion: FusionResult | None  # None when the RQ-VAE ran on raw text (no injection)
    quantize: QuantizeResult
    table: SemanticIDTable  # what the sequence model reads (shuffled for the random-ID ablation)
    source: str  # "fused" | "raw_text" | "random"
    key: str  # content key of the table (keys the trained sequence models)


def semantic_ids(dataset, cfg: ExperimentConfig = ExperimentConfig(), *, split=None, cache_root=None,
                 progress: bool = True) -> SemanticIDs:
    """Run (or load from the cache) features -> fusion -> RQ-VAE for ``dataset``."""
    features = build_features(dataset, cfg.features, split=split, cache_root=cache_root, progress=progress)
    fusion = None
    if cfg.semantic_source == "raw_text":
        if "text" not in features.modalities:
            raise ValueError(f"semantic_source='raw_text' needs text features; {dataset.name!r} has none "
                             f"({features.absent.get('text', '')})")
        text = pooled(features.modalities["text"])
        quant = run_quantize(dataset, text, cfg.rqvae, cache_root=cache_root, progress=progress,
                             source_key=stable_hash("raw_text", features.modalities["text"].meta.get("key", ""),
                                                    features.dataset_fingerprint, cfg.features))
    else:
        fusion = run_fusion(dataset, features, cfg.fusion, cache_root=cache_root, progress=progress)
        quant = run_quantize(dataset, fusion, cfg.rqvae, cache_root=cache_root, progress=progress)
    table = quant.table
    if cfg.semantic_source == "random":
        perm = np.random.default_rng(cfg.rqvae.seed + 12345).permutation(len(table.ids))
        table = SemanticIDTable(table.ids[perm].copy(), table.vocab_sizes)
    key = stable_hash(cfg.semantic_source, quant.key, hashlib_ids(table.ids))
    return SemanticIDs(features, fusion, quant, table, cfg.semantic_source, key)


def hashlib_ids(ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


# ---- stage 3 and the baselines: one cached trainer -----------------------------------------
@dataclass
class ModelRun:
    """A trained (or loaded) model, its learning curves and its test result."""

    name: str
    seed: int
    model: torch.nn.Module | None  # None when the run was read from a result record (no weights)
    fits: dict[str, FitResult]  # phase -> FitResult (fresh, or rebuilt from the cache / a record's JSON)
    test: EvalResult
    valid: EvalResult
    from_cache: bool = False
    seconds: float = 0.0

    def curves(self) -> dict[str, list[dict]]:
        """Phase -> per-epoch history, in training order (pretrain before finetune, whatever order a JSON
        record or cache file stored them in)."""
        order = {"pretrain": 0, "finetune": 1, "train": 2}
        phases = sorted(self.fits, key=lambda p: order.get(p, 3))
        return {p: self.fits[p].history for p in phases}


def _fit_json(f: FitResult) -> dict:
    return {"history": f.history, "best_epoch": f.best_epoch, "best_valid": f.best_valid, "seconds": f.seconds,
            "train_sequences_per_second": f.train_sequences_per_second, "stop_reason": f.stop_reason}


def _fit_from_json(d: dict) -> FitResult:
    """The :class:`FitResult` that :func:`_fit_json` stored (cache meta, result record); fields older files
    lack read as unknown: no metrics, 0 s, NaN throughput, stop reason "?"."""
    return FitResult(d["history"], d["best_epoch"], d.get("best_valid", {}), d.get("seconds", 0.0),
                     d.get("train_sequences_per_second", float("nan")), d.get("stop_reason", "?"))


def _build(name: str, dataset, split, cfg: ExperimentConfig, ids: SemanticIDs | None):
    from ..models.baselines import BERT4RecID, Popularity, SASRec

    if name == "Q-Bert4Rec":
        return QBert4Rec(ids.table.ids, ids.table.vocab_sizes, replace(cfg.qbert, max_len=cfg.max_len))
    if name == "SASRec-CE":
        return SASRec(dataset.num_items, replace(cfg.sasrec, max_len=cfg.max_len))
    if name == "BERT4Rec-ID":
        return BERT4RecID(dataset.num_items, replace(cfg.bert4rec, max_len=cfg.max_len))
    if name == "Popularity":
        return Popularity(split.train_item_counts())
    raise ValueError(f"unknown model {name!r}; known: {MODEL_NAMES}")


def _baseline_train(name: str, cfg: ExperimentConfig) -> TrainConfig:
    if name == "BERT4Rec-ID" and cfg.bert4rec_train is not None:
        return cfg.bert4rec_train
    return cfg.baseline_train


def _phase_log(log: Callable[[dict], None] | None, phase: str) -> Callable[[dict], None] | None:
    return None if log is None else (lambda entry: log({**entry, "phase": phase}))


def train_model(name: str, dataset, cfg: ExperimentConfig = ExperimentConfig(), *, seed: int = 0, split=None,
                ids: SemanticIDs | None = None, cache_root=None, progress: bool = True, init_from=None,
                log: Callable[[dict], None] | None = None, records_dir=None, train: bool = True,
                record_label: str | None = None) -> ModelRun | None:
    """Train ``name`` (one of :data:`MODEL_NAMES`) on ``dataset`` with ``seed``, or load it from the cache.

    Q-Bert4Rec runs two phases through ``train.fit``: pretraining with ``cfg.pretrain_masks`` (skipped when
    ``cfg.do_pretrain`` is False) and fine-tuning with ``cfg.finetune_masks``, each early-stopped on
    validation NDCG@10. ``init_from`` (a QBert4Rec) copies catalog-independent weights before training
    (cross-domain transfer; see :func:`qbert4rec_lib.models.qbert.transfer_weights`).

    ``records_dir``: a folder of small JSON result records (metrics, curves, config, timings; no weights),
    one per (model, config, seed), meant to be committed. A matching record is returned as it is (``model`` is
    None, nothing is trained); otherwise the run's record is written there when it finishes, so a long
    multi-run table resumes from what has finished even on another machine.
    """
    from safetensors.torch import load_file, save_file

    split = split if split is not None else dataset.split(max_len=cfg.max_len)
    if name == "Q-Bert4Rec" and ids is None:
        ids = semantic_ids(dataset, cfg, split=None, cache_root=cache_root, progress=progress)
    relevant = {"max_len": cfg.max_len, "eval": cfg.eval}
    if name == "Q-Bert4Rec":
        relevant |= {"ids": ids.key, "qbert": cfg.qbert, "pretrain": cfg.pretrain if cfg.do_pretrain else None,
                     "pretrain_masks": cfg.pretrain_masks if cfg.do_pretrain else None,
                     "finetune": cfg.finetune, "finetune_masks": cfg.finetune_masks,
                     "init_from": hashlib_state(init_from) if init_from is not None else None}
    elif name != "Popularity":
        relevant |= {"train": _baseline_train(name, cfg),
                     "model": replace(cfg.sasrec if name == "SASRec-CE" else cfg.bert4rec, max_len=cfg.max_len)}
    split_key = stable_hash([hashlib_ids(np.concatenate(split.train or [np.zeros(0, np.int64)]))],
                            split.valid_target.tolist(), split.test_target.tolist())
    store = stage_dir("seqmodel", dataset.fingerprint(), split_key, name, relevant, seed, root=cache_root)
    if records_dir is not None:
        record = read_record(records_dir, name, seed, store.key)
        if record is not None:
            return run_from_record(record)
    if not train:  # records only: report what is missing instead of training it
        return None
    with store.lock():  # a concurrent process training the same model: wait for it, then load its weights
        seed_everything(seed)
        model = _build(name, dataset, split, cfg, ids)
        t0 = time.perf_counter()
        if store.usable(require=("model.safetensors",)):  # a missing / damaged file: reported, then rebuilt
            meta = store.meta()
            from ..cache import CacheError

            weights = store.load_safetensors("model.safetensors")  # never fresh weights on a hit
            try:  # the saved weights load exactly, or the error names the file
                model.load_state_dict(weights)
            except RuntimeError as exc:
                raise CacheError(store.path / "model.safetensors", f"does not fit {name}: {exc}") from None
            fits, from_cache = {k: _fit_from_json(f) for k, f in meta["fits"].items()}, True
        else:
            fits = {}
            if name == "Q-Bert4Rec":
                if init_from is not None:
                    from ..models.qbert import transfer_weights

                    transfer_weights(init_from, model)
                if cfg.do_pretrain:  # its own cache entry: runs that differ only in fine-tuning share it
                    fits["pretrain"] = _pretrain_phase(model, dataset, split, split_key, cfg, seed, relevant,
                                                       cache_root=cache_root, progress=progress, log=log)
                model.masking = cfg.finetune_masks
                fits["finetune"] = fit(model, split, replace(cfg.finetune, seed=seed, max_len=cfg.max_len),
                                       eval_cfg=cfg.eval, progress=progress, log=_phase_log(log, "finetune"),
                                       checkpoint_dir=store.partial() / "finetune")
            else:
                fits["train"] = fit(model, split, replace(_baseline_train(name, cfg), seed=seed, max_len=cfg.max_len),
                                    eval_cfg=cfg.eval, progress=progress, log=log,
                                    checkpoint_dir=store.partial() / "train")
            from_cache = False
        valid = evaluate_split(model, split, "valid", cfg.eval)
        test = evaluate_split(model, split, "test", cfg.eval)
        if not from_cache:
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            store.write({}, {"model": name, "seed": seed, "config": relevant, "dataset": dataset.name,
                             "fits": {k: _fit_json(f) for k, f in fits.items()},
                             "valid": valid.metrics, "test": test.metrics, "protocol": test.protocol},
                        binary={"model.safetensors": lambda p: save_file(weights, p)})
    run = ModelRun(name, seed, model, fits, test, valid, from_cache, time.perf_counter() - t0)
    if records_dir is not None:
        write_record(records_dir, run, store.key, dataset.name, relevant, label=record_label)
    return run


def _pretrain_phase(model, dataset, split, split_key: str, cfg: ExperimentConfig, seed: int, relevant: dict, *,
                    cache_root=None, progress: bool = False, log=None) -> FitResult:
    """Q-Bert4Rec's pretraining, cached under a key without the fine-tuning settings (so a study row that changes
    only fine-tuning reuses the pretrained weights). The weights are the best-validation ones :func:`fit` restores;
    fine-tuning seeds its own RNGs, so a hit here gives the same final model as a fresh pretraining."""
    from safetensors.torch import save_file

    from ..cache import CacheError

    key = {k: relevant[k] for k in ("max_len", "eval", "ids", "qbert", "pretrain", "pretrain_masks", "init_from")}
    pre = stage_dir("qbert-pretrain", dataset.fingerprint(), split_key, key, seed, root=cache_root)
    with pre.lock():
        if pre.usable(require=("model.safetensors",)):
            try:
                model.load_state_dict(pre.load_safetensors("model.safetensors"))
            except RuntimeError as exc:
                raise CacheError(pre.path / "model.safetensors", f"does not fit Q-Bert4Rec: {exc}") from None
            return _fit_from_json(pre.meta()["fit"])
        model.masking = cfg.pretrain_masks
        result = fit(model, split, replace(cfg.pretrain, seed=seed, max_len=cfg.max_len), eval_cfg=cfg.eval,
                     progress=progress, log=_phase_log(log, "pretrain"), checkpoint_dir=pre.partial() / "pretrain")
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        pre.write({}, {"seed": seed, "config": key, "dataset": dataset.name, "fit": _fit_json(result)},
                  binary={"model.safetensors": lambda p: save_file(weights, p)})
        return result


# ---- result records: one small committed JSON per finished (model, config, seed) -------------------------
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


def write_record(records_dir, run: ModelRun, key: str, dataset_name: str, config: dict, label: str | None = None) -> None:
    """Write ``run``'s result record (atomic JSON): test/valid metrics, protocol, per-phase curves, timings."""
    from ..cache import _jsonable, atomic_write_json, library_versions

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


def hashlib_state(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- the results table ---------------------------------------------------------------------
@dataclass
class ExperimentResult:
    runs: dict[str, list[ModelRun]]  # model name -> one run per seed
    table_md: str  # markdown table (mean ± std) with the protocol under it
    seconds: float
    ids: SemanticIDs | None = None

    def as_dict(self) -> dict:
        return {name: {"seeds": [r.seed for r in runs],
                       "test": [r.test.metrics for r in runs], "valid": [r.valid.metrics for r in runs],
                       "protocol": runs[0].test.protocol} for name, runs in self.runs.items()}


def run_experiment(dataset, cfg: ExperimentConfig = ExperimentConfig(), *, models: Sequence[str] = MODEL_NAMES,
                   seeds: Iterable[int] = (0, 1, 2), cache_root=None, progress: bool = True,
                   log: Callable[[str], None] | None = print, epoch_log: bool = False,
                   records_dir=None, train: bool = True) -> ExperimentResult:
    """Train and evaluate ``models`` on ``dataset`` for each seed (same split, same evaluator).

    ``epoch_log``: print one flushed line per epoch (for runs whose output goes to a file).
    ``records_dir``: read finished runs from / write them to result records (see :func:`train_model`).
    ``train=False``: assemble the table from the records (and cache) only; missing runs are listed, not trained.
    """
    from .train import epoch_logger

    t0 = time.perf_counter()
    split = dataset.split(max_len=cfg.max_len)
    ids = semantic_ids(dataset, cfg, cache_root=cache_root, progress=progress) if "Q-Bert4Rec" in models else None
    runs: dict[str, list[ModelRun]] = {}
    missing: list[str] = []
    for name in models:
        seeds_here = (0,) if name == "Popularity" else tuple(seeds)  # popularity is deterministic
        for seed in seeds_here:
            run = train_model(name, dataset, cfg, seed=seed, split=split, ids=ids, cache_root=cache_root,
                              progress=progress, records_dir=records_dir, train=train,
                              log=epoch_logger(f"{name} seed {seed}") if epoch_log else None)
            if run is None:
                missing.append(f"{name} seed {seed}")
                if log:
                    log(f"{name} seed {seed}: no record yet (not trained: records only)")
                continue
            runs.setdefault(name, []).append(run)
            if log:
                log(f"{name} seed {seed}: test NDCG@10 {run.test.metrics['NDCG@10']:.4f} HR@10 "
                    f"{run.test.metrics['HR@10']:.4f} ({'record' if run.model is None else 'cache' if run.from_cache else f'{run.seconds:.0f} s'})")
    if not runs:
        raise ValueError(f"no finished runs to tabulate (missing: {', '.join(missing)})")
    table = results_table({n: [r.test for r in rs] for n, rs in runs.items()}, ("NDCG@10", "HR@10", "NDCG@5", "HR@1", "MRR"))
    table += _training_lines(runs)
    if missing:
        table += f"Not finished yet (no record): {', '.join(missing)}.\n"
    return ExperimentResult(runs, table, time.perf_counter() - t0, ids)


def _training_lines(runs: dict[str, list[ModelRun]]) -> str:
    """One line per trained model: best epoch(s), what stopped each phase, training time (from the fit records)."""
    lines = []
    for name, rs in runs.items():
        if name == "Popularity":
            continue
        per_seed = []
        for r in rs:
            phases = []
            for phase in r.curves():
                f = r.fits[phase]
                phases.append(f"{phase} best epoch {f.best_epoch} of {len(f.history)} ({f.stop_reason}, "
                              f"{f.seconds / 60:.0f} min)")
            per_seed.append(f"seed {r.seed}: " + "; ".join(phases))
        lines.append(f"- {name}: " + " | ".join(per_seed))
    return ("\nTraining (best epoch of the epochs run, what stopped it, wall time):\n" + "\n".join(lines) + "\n") if lines else ""


# ---- ablations -----------------------------------------------------------------------------
ABLATIONS: dict[str, str] = {
    "full": "Q-Bert4Rec as configured (fused semantic IDs, mixture pretraining, fine-tuning)",
    "no_injection": "no semantic injection: RQ-VAE on the raw text features",
    "text_only": "semantic injection from the text modality only",
    "fixed_depth": "fusion with fixed depth (gate off)",
    "random_ids": "random semantic IDs (the fused IDs shuffled across items)",
    **{f"mask_{s}": f"pretraining with the {s} mask only" for s in STRATEGIES},
    "no_pretrain": "no pretraining: fine-tuning from random initialisation",
    "item_id_embedding": "variant: also add a learned item-ID embedding to the input (not transferable)",
    "item_bias": "variant: a learned per-item score bias (an ID feature: not transferable, no cold start)",
}


def ablation_config(name: str, cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with one switch flipped (see :data:`ABLATIONS`)."""
    if name == "full":
        return cfg
    if name == "no_injection":
        return replace(cfg, semantic_source="raw_text")
    if name == "text_only":
        return replace(cfg, fusion=replace(cfg.fusion, modalities=("text",)))
    if name == "fixed_depth":
        return replace(cfg, fusion=replace(cfg.fusion, gate="off"))
    if name == "random_ids":
        return replace(cfg, semantic_source="random")
    if name.startswith("mask_") and name[5:] in STRATEGIES:
        return replace(cfg, pretrain_masks=only(name[5:], cfg.pretrain_masks))
    if name == "no_pretrain":
        return replace(cfg, do_pretrain=False)
    if name == "item_id_embedding":
        return replace(cfg, qbert=replace(cfg.qbert, add_item_id_embedding=True))
    if name == "item_bias":
        return replace(cfg, qbert=replace(cfg.qbert, item_bias=True))
    raise ValueError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")


def run_ablations(dataset, cfg: ExperimentConfig = ExperimentConfig(), names: Sequence[str] = tuple(ABLATIONS), *,
                  seed: int = 0, cache_root=None, progress: bool = True,
                  log: Callable[[str], None] | None = print) -> dict[str, ModelRun]:
    """Q-Bert4Rec under each ablation (one seed); returns name -> run (test metrics in ``run.test``)."""
    split = dataset.split(max_len=cfg.max_len)
    out = {}
    for name in names:
        acfg = ablation_config(name, cfg)
        ids = semantic_ids(dataset, acfg, cache_root=cache_root, progress=progress)
        out[name] = train_model("Q-Bert4Rec", dataset, acfg, seed=seed, split=split, ids=ids, cache_root=cache_root,
                                progress=progress)
        if log:
            m = out[name].test.metrics
            log(f"ablation {name}: test NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f}")
    return out


def ablation_table(runs: dict[str, ModelRun], metrics: Sequence[str] = ("NDCG@10", "HR@10")) -> str:
    lines = ["| ablation | what changes | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, run in runs.items():
        lines.append(f"| {name} | {ABLATIONS.get(name, '')} | " + " | ".join(f"{run.test.metrics[m]:.4f}" for m in metrics) + " |")
    protocol = next(iter(runs.values())).test.protocol if runs else ""
    return "\n".join(lines) + f"\n\nProtocol: {protocol}. One seed.\n"


# ---- the study: what makes Q-Bert4Rec competitive ------------------------------------------------------
def _q(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    return replace(cfg, qbert=replace(cfg.qbert, **changes))


def _mask_ratio(cfg: ExperimentConfig, ratio: float) -> ExperimentConfig:
    return replace(cfg, pretrain_masks=replace(cfg.pretrain_masks, cloze_ratio=ratio,
                                               max_mask_fraction=min(1.0, max(cfg.pretrain_masks.max_mask_fraction,
                                                                              ratio + 0.2))))


STUDY: dict[str, tuple[str, Callable[[ExperimentConfig], ExperimentConfig]]] = {
    "default": ("Q-Bert4Rec as configured", lambda c: c),
    "head_level_sum": ("item score = sum of per-level token logits (the kit's first head)",
                       lambda c: _q(c, item_head="level_sum")),
    "head_token_mlp": ("item score = g(h) . MLP(concat of token embeddings) + prior (no per-item parameter)",
                       lambda c: _q(c, item_head="token_mlp")),
    "input_item_vector": ("input item = its token-derived vector v_i (tied with the output head) instead of the "
                          "sum of its level embeddings", lambda c: _q(c, input_embedding="item_vector")),
    **{f"mask_ratio_{r}": (f"pretraining Cloze ratio {r} (cap raised to ratio + 0.2)",
                           (lambda r: lambda c: _mask_ratio(c, r))(r)) for r in (0.2, 0.4, 0.6)},
    "pretrain_last_item_0.5": ("pretraining also masks each row's last item with probability 0.5 (RecBole's "
                               "ft_ratio rows: the test question seen during pretraining)",
                               lambda c: replace(c, pretrain_masks=replace(c.pretrain_masks,
                                                                           always_mask_last_prob=0.5))),
    **{f"finetune_crop_{p}": (f"fine-tuning rows cut to a random prefix with probability {p} (sliding windows: "
                              "the last-item target moves over every position)",
                              (lambda p: lambda c: replace(c, finetune_masks=replace(c.finetune_masks,
                                                                                     prefix_crop_prob=p)))(p))
       for p in (0.5, 1.0)},
    "crop_0.5": ("pretraining and fine-tuning rows cut to a random prefix with probability 0.5",
                 lambda c: replace(c, pretrain_masks=replace(c.pretrain_masks, prefix_crop_prob=0.5),
                                   finetune_masks=replace(c.finetune_masks, prefix_crop_prob=0.5))),
    "ids_raw_text": ("semantic IDs from the RQ-VAE on raw text features (no stage-1 injection)",
                     lambda c: replace(c, semantic_source="raw_text")),
    "finetune_mixture": ("fine-tuning with the pretraining mixture (no next-item emphasis)",
                         lambda c: replace(c, finetune_masks=c.pretrain_masks)),
    "no_pretrain": ("fine-tuning only, from random initialisation", lambda c: replace(c, do_pretrain=False)),
    "hidden_128": ("width 128 (default 64)", lambda c: _q(c, hidden=128)),
    "layers_3": ("3 encoder layers (default 2)", lambda c: _q(c, layers=3)),
    "dropout_0.1": ("dropout 0.1 (default 0.2)", lambda c: _q(c, dropout=0.1)),
    **{f"dropout_{p}": (f"dropout {p} (default 0.2)", (lambda p: lambda c: _q(c, dropout=p))(p)) for p in (0.3, 0.4, 0.5)},
    "lr_1e-3": ("pretraining learning rate 1e-3 (default 2e-3)",
                lambda c: replace(c, pretrain=replace(c.pretrain, lr=1e-3))),
    "lr_4e-3": ("pretraining learning rate 4e-3 (default 2e-3)",
                lambda c: replace(c, pretrain=replace(c.pretrain, lr=4e-3))),
    "hybrid_item_bias": ("HYBRID, not Q-Bert4Rec: + a learned per-item score bias (an ID feature)",
                         lambda c: _q(c, item_bias=True)),
    "hybrid_item_id_embedding": ("HYBRID, not Q-Bert4Rec: + a learned per-item input embedding (an ID feature)",
                                 lambda c: _q(c, add_item_id_embedding=True)),
}


def study_config(name: str, cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` changed as the study row ``name`` says (see :data:`STUDY`)."""
    if name not in STUDY:
        raise ValueError(f"unknown study row {name!r}; known: {', '.join(STUDY)}")
    return STUDY[name][1](cfg)


def run_study(dataset, cfg: ExperimentConfig, names: Sequence[str] = tuple(STUDY), *, seeds: Sequence[int] = (0,),
              records_dir=None, cache_root=None, epoch_log: bool = False,
              log: Callable[[str], None] | None = print) -> dict[str, list[ModelRun]]:
    """Q-Bert4Rec under each study row and seed, each trained to early stopping; finished runs come from
    ``records_dir`` (so an interrupted study resumes and a table can be assembled on another machine)."""
    from .train import epoch_logger

    split = dataset.split(max_len=cfg.max_len)
    out: dict[str, list[ModelRun]] = {}
    for name in names:
        rcfg = study_config(name, cfg)
        ids = None
        for seed in seeds:
            if ids is None:
                ids = semantic_ids(dataset, rcfg, cache_root=cache_root, progress=False)
            run = train_model("Q-Bert4Rec", dataset, rcfg, seed=seed, split=split, ids=ids, cache_root=cache_root,
                              progress=False, records_dir=records_dir, record_label=name,
                              log=epoch_logger(f"study {name} seed {seed}") if epoch_log else None)
            out.setdefault(name, []).append(run)
            if log:
                m = run.test.metrics
                log(f"study {name} seed {seed}: test NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} "
                    f"({'record' if run.model is None else f'{run.seconds:.0f} s'})")
    return out


def study_runs_from_records(records_dir) -> dict[str, list[ModelRun]]:
    """The study rows a records folder holds (records written by :func:`run_study` carry their row name), in
    :data:`STUDY` order; nothing is trained. Use it to tabulate a study whose runs were made earlier or elsewhere."""
    from pathlib import Path

    rows: dict[str, list[ModelRun]] = {}
    for path in sorted(Path(records_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("label"):
            rows.setdefault(record["label"], []).append(run_from_record(record))
        elif record["model"] != "Q-Bert4Rec":  # a baseline trained into the same folder: a reference row
            rows.setdefault(f"reference: {record['model']}", []).append(run_from_record(record))
    if not any(k in STUDY for k in rows):
        raise ValueError(f"no labelled study records in {records_dir}")
    order = {name: i for i, name in enumerate(STUDY)} | {k: -1 for k in rows if k.startswith("reference: ")}
    return {k: sorted(rows[k], key=lambda r: r.seed) for k in sorted(rows, key=lambda k: order.get(k, len(order)))}


def _best_epochs(run: ModelRun) -> str:
    parts = []
    for phase in run.curves():
        f = run.fits[phase]
        parts.append(f"{phase} {f.best_epoch} ({f.stop_reason})")
    return ", ".join(parts)


def study_table(runs: dict[str, list[ModelRun]], metrics: Sequence[str] = ("NDCG@10", "HR@10")) -> str:
    """Markdown: row | what changes | metrics (mean ± std over seeds) | valid NDCG@10 | best epochs (stop reason)."""
    from .evaluate import aggregate

    lines = ["| row | what changes | " + " | ".join(metrics) + " | valid NDCG@10 | best epoch (stop) | seeds |",
             "|---|---|" + "---|" * len(metrics) + "---|---|---|"]
    for name, rs in runs.items():
        agg, vagg = aggregate([r.test for r in rs]), aggregate([r.valid for r in rs])
        cell = lambda ms: f"{ms[0]:.4f} ± {ms[1]:.4f}" if len(rs) > 1 else f"{ms[0]:.4f}"  # noqa: E731
        what = STUDY[name][0] if name in STUDY else "same protocol, the baseline's own preset settings"
        lines.append(f"| {name} | {what} | " + " | ".join(cell(agg[m]) for m in metrics)
                     + f" | {cell(vagg['NDCG@10'])} | {'; '.join(_best_epochs(r) for r in rs)} | {len(rs)} |")
    protocol = next(iter(runs.values()))[0].test.protocol if runs else ""
    return "\n".join(lines) + f"\n\nProtocol: {protocol}. Each run trained to early stopping on validation NDCG@10.\n"


def config_json(cfg: ExperimentConfig) -> str:
    from ..cache import _jsonable

    return json.dumps(_jsonable(dataclasses.asdict(cfg)), indent=2)


def beauty_quick_config() -> ExperimentConfig:
    """Amazon Beauty for a quick look: the full stage-1/2 settings, sequence models capped by *epochs*.

    The caps (SASRec-CE / BERT4Rec-ID 15 epochs, Q-Bert4Rec 5 pretraining + 8 fine-tuning epochs) stop every
    model while it is still improving on validation, so its numbers are a floor for each model, not a comparison
    of converged models; use ``beauty`` for that.
    """
    return ExperimentConfig(
        pretrain=TrainConfig(epochs=5, patience=3),
        finetune=TrainConfig(epochs=8, lr=1e-3, patience=3),
        baseline_train=TrainConfig(epochs=15, patience=3),
    )


def beauty_config() -> ExperimentConfig:
    """Amazon Beauty, every model trained to early stopping on validation NDCG@10 (converged vs converged).

    Patience is counted in evaluations; the epoch caps are generous so that they are never the reason a run
    stops (each run's ``stop_reason`` and best epoch are recorded). BERT-style models need many more epochs than
    SASRec-CE (Klenitskiy & Vasilev 2023 on Beauty: best epoch 87 vs 6), so they are validated every 2 epochs
    with a longer patience. SASRec-CE uses dropout 0.5 (the setting that reached the highest validation NDCG@10
    in the kit's earlier sweep, see :class:`~qbert4rec_lib.models.baselines.SASRec`).
    """
    return ExperimentConfig(
        pretrain=TrainConfig(epochs=600, patience=10, eval_every=2),
        finetune=TrainConfig(epochs=200, lr=1e-3, patience=5),
        baseline_train=TrainConfig(epochs=400, patience=10),
        bert4rec_train=TrainConfig(epochs=800, patience=15, eval_every=2),
        sasrec=SASRecConfig(dropout=0.5, attn_dropout=0.5),
    )


PRESETS = ("smoke", "beauty", "beauty-quick", "full")


def preset(name: str) -> ExperimentConfig:
    """Named configurations: ``"smoke"`` (minutes on 2 CPU cores, the notebooks' default), ``"beauty"``
    (Amazon Beauty, every model to early stopping, :func:`beauty_config`), ``"beauty-quick"`` (epoch-capped,
    :func:`beauty_quick_config`) or ``"full"`` (the library defaults)."""
    if name == "smoke":
        return smoke_config(1.0)
    if name == "beauty":
        return beauty_config()
    if name == "beauty-quick":
        return beauty_quick_config()
    if name == "full":
        return ExperimentConfig()
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")


# ---- cold start ----------------------------------------------------------------------------
# The protocol, the new-item path through stages 1-2, the baselines and the warm/cold table live in coldstart.py.
from .coldstart import ColdStart, cold_start_split, evaluate_users  # noqa: E402,F401  (re-exported)
