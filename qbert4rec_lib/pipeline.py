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

from .cache import stable_hash, stage_dir
from .config import seed_everything
from .evaluate import EvalConfig, EvalResult, evaluate_split, results_table
from .features import FeatureConfig, FeatureSet, build_features, pooled
from .fusion import FusionConfig, FusionResult, run_fusion
from .masking import FINETUNE_MASKS, PRETRAIN_MASKS, STRATEGIES, MaskConfig, only
from .qbert import QBert4Rec, QBertConfig
from .quantize import QuantizeResult, RQVAEConfig, SemanticIDTable, run_quantize
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
    "ablation_config",
    "run_ablations",
    "smoke_config",
    "beauty_config",
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
    baseline_train: TrainConfig = TrainConfig(epochs=100, patience=5)  # optimisation of SASRec / BERT4Rec-ID
    eval: EvalConfig = EvalConfig()  # leave-one-out, full ranking, history excluded, pessimistic ties
    max_len: int = 50  # history length of every model (and of the split)
    semantic_source: str = "fused"  # "fused" (stages 1+2) | "raw_text" (RQ-VAE on text: no injection) | "random"
    do_pretrain: bool = True  # False = fine-tune from scratch (ablation)

    def __post_init__(self) -> None:
        from .config import check_config

        check_config(self, ranges={"max_len": "[1, inf)"})  # and every section is a config of its class
        if self.semantic_source not in ("fused", "raw_text", "random"):
            raise ValueError(f"ExperimentConfig.semantic_source must be fused|raw_text|random, got {self.semantic_source!r}")


def smoke_config(epochs_scale: float = 1.0) -> ExperimentConfig:
    """Small, CPU-friendly settings for the embedded default (what the notebooks' defaults use)."""
    e = lambda n: max(1, int(round(n * epochs_scale)))  # noqa: E731
    return ExperimentConfig(
        fusion=FusionConfig(epochs=e(20)),
        rqvae=RQVAEConfig(epochs=e(60)),
        pretrain=TrainConfig(epochs=e(20), patience=4, eval_every=2),  # validation NDCG@10 ~0.067 at 20, ~0.070 at 28
        finetune=TrainConfig(epochs=e(10), lr=1e-3, patience=3, eval_every=2),  # its best epoch is usually 2-4 here
        baseline_train=TrainConfig(epochs=e(40), patience=4, eval_every=2),
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
    model: torch.nn.Module
    fits: dict[str, FitResult | dict]  # phase -> FitResult (fresh) or its JSON form (from the cache)
    test: EvalResult
    valid: EvalResult
    from_cache: bool = False
    seconds: float = 0.0

    def curves(self) -> dict[str, list[dict]]:
        return {phase: (f.history if isinstance(f, FitResult) else f["history"]) for phase, f in self.fits.items()}


def _fit_json(f: FitResult) -> dict:
    return {"history": f.history, "best_epoch": f.best_epoch, "best_valid": f.best_valid, "seconds": f.seconds,
            "train_sequences_per_second": f.train_sequences_per_second, "stop_reason": f.stop_reason}


def _build(name: str, dataset, split, cfg: ExperimentConfig, ids: SemanticIDs | None):
    from .baselines import BERT4RecConfig, BERT4RecID, Popularity, SASRec, SASRecConfig

    if name == "Q-Bert4Rec":
        return QBert4Rec(ids.table.ids, ids.table.vocab_sizes, replace(cfg.qbert, max_len=cfg.max_len))
    if name == "SASRec-CE":
        return SASRec(dataset.num_items, SASRecConfig(max_len=cfg.max_len))
    if name == "BERT4Rec-ID":
        return BERT4RecID(dataset.num_items, BERT4RecConfig(max_len=cfg.max_len))
    if name == "Popularity":
        return Popularity(split.train_item_counts())
    raise ValueError(f"unknown model {name!r}; known: {MODEL_NAMES}")


def train_model(name: str, dataset, cfg: ExperimentConfig = ExperimentConfig(), *, seed: int = 0, split=None,
                ids: SemanticIDs | None = None, cache_root=None, progress: bool = True, init_from=None,
                log: Callable[[dict], None] | None = None) -> ModelRun:
    """Train ``name`` (one of :data:`MODEL_NAMES`) on ``dataset`` with ``seed``, or load it from the cache.

    Q-Bert4Rec runs two phases through ``train.fit``: pretraining with ``cfg.pretrain_masks`` (skipped when
    ``cfg.do_pretrain`` is False) and fine-tuning with ``cfg.finetune_masks``, each early-stopped on
    validation NDCG@10. ``init_from`` (a QBert4Rec) copies catalog-independent weights before training
    (cross-domain transfer; see :func:`qbert4rec_lib.qbert.transfer_weights`).
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
        relevant |= {"train": cfg.baseline_train}
    split_key = stable_hash([hashlib_ids(np.concatenate(split.train or [np.zeros(0, np.int64)]))],
                            split.valid_target.tolist(), split.test_target.tolist())
    store = stage_dir("seqmodel", dataset.fingerprint(), split_key, name, relevant, seed, root=cache_root)
    with store.lock():  # a concurrent process training the same model: wait for it, then load its weights
        seed_everything(seed)
        model = _build(name, dataset, split, cfg, ids)
        t0 = time.perf_counter()
        if store.usable(require=("model.safetensors",)):  # a missing / damaged file: reported, then rebuilt
            meta = store.meta()
            from .cache import CacheError

            weights = store.load_safetensors("model.safetensors")  # never fresh weights on a hit
            try:  # the saved weights load exactly, or the error names the file
                model.load_state_dict(weights)
            except RuntimeError as exc:
                raise CacheError(store.path / "model.safetensors", f"does not fit {name}: {exc}") from None
            fits, from_cache = meta["fits"], True
        else:
            fits = {}
            if name == "Q-Bert4Rec":
                if init_from is not None:
                    from .qbert import transfer_weights

                    transfer_weights(init_from, model)
                if cfg.do_pretrain:
                    model.masking = cfg.pretrain_masks
                    fits["pretrain"] = fit(model, split, replace(cfg.pretrain, seed=seed, max_len=cfg.max_len),
                                           eval_cfg=cfg.eval, progress=progress, log=log)
                model.masking = cfg.finetune_masks
                fits["finetune"] = fit(model, split, replace(cfg.finetune, seed=seed, max_len=cfg.max_len),
                                       eval_cfg=cfg.eval, progress=progress, log=log)
            else:
                fits["train"] = fit(model, split, replace(cfg.baseline_train, seed=seed, max_len=cfg.max_len),
                                    eval_cfg=cfg.eval, progress=progress, log=log)
            from_cache = False
        valid = evaluate_split(model, split, "valid", cfg.eval)
        test = evaluate_split(model, split, "test", cfg.eval)
        if not from_cache:
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            store.write({}, {"model": name, "seed": seed, "config": relevant, "dataset": dataset.name,
                             "fits": {k: _fit_json(f) for k, f in fits.items()},
                             "valid": valid.metrics, "test": test.metrics, "protocol": test.protocol},
                        binary={"model.safetensors": lambda p: save_file(weights, p)})
    return ModelRun(name, seed, model, fits, test, valid, from_cache, time.perf_counter() - t0)


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
                   log: Callable[[str], None] | None = print) -> ExperimentResult:
    """Train and evaluate ``models`` on ``dataset`` for each seed (same split, same evaluator)."""
    t0 = time.perf_counter()
    split = dataset.split(max_len=cfg.max_len)
    ids = semantic_ids(dataset, cfg, cache_root=cache_root, progress=progress) if "Q-Bert4Rec" in models else None
    runs: dict[str, list[ModelRun]] = {}
    for name in models:
        seeds_here = (0,) if name == "Popularity" else tuple(seeds)  # popularity is deterministic
        for seed in seeds_here:
            run = train_model(name, dataset, cfg, seed=seed, split=split, ids=ids, cache_root=cache_root,
                              progress=progress)
            runs.setdefault(name, []).append(run)
            if log:
                log(f"{name} seed {seed}: test NDCG@10 {run.test.metrics['NDCG@10']:.4f} HR@10 "
                    f"{run.test.metrics['HR@10']:.4f} ({'cache' if run.from_cache else f'{run.seconds:.0f} s'})")
    table = results_table({n: [r.test for r in rs] for n, rs in runs.items()}, ("NDCG@10", "HR@10", "NDCG@5", "HR@1", "MRR"))
    return ExperimentResult(runs, table, time.perf_counter() - t0, ids)


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


def config_json(cfg: ExperimentConfig) -> str:
    from .cache import _jsonable

    return json.dumps(_jsonable(dataclasses.asdict(cfg)), indent=2)


def beauty_config() -> ExperimentConfig:
    """Amazon Beauty on a 2-core CPU: the full stage-1/2 settings, sequence models capped by *epochs*.

    Epoch caps (not wall-time caps) keep the result independent of machine load and reproducible. The caps
    are what a ~2-hour CPU budget for 3 seeds x 3 trained models allows; all models still improved on
    validation when they stopped, so these numbers are a floor for each model, not its converged value.
    SASRec-CE reaches the published range (NDCG@10 0.04-0.05) within its 15 epochs (see baselines.SASRec);
    ``--config full`` (up to 100 / 60 + 40 epochs with patience 5) is the setting for a GPU.
    """
    return ExperimentConfig(
        pretrain=TrainConfig(epochs=5, patience=3),
        finetune=TrainConfig(epochs=8, lr=1e-3, patience=3),
        baseline_train=TrainConfig(epochs=15, patience=3),
    )


PRESETS = ("smoke", "beauty", "full")


def preset(name: str) -> ExperimentConfig:
    """Named configurations: ``"smoke"`` (minutes on 2 CPU cores, the notebooks' default), ``"beauty"``
    (Amazon Beauty within a CPU budget, :func:`beauty_config`) or ``"full"`` (uncapped, for a GPU)."""
    if name == "smoke":
        return smoke_config(1.0)
    if name == "beauty":
        return beauty_config()
    if name == "full":
        return ExperimentConfig()
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")


# ---- cold start ----------------------------------------------------------------------------
@dataclass
class ColdStart:
    """Items held out of training entirely, and the split with them removed."""

    split: object  # LeaveOneOutSplit without any cold item in training parts or histories
    cold_items: np.ndarray  # int64 ids held out
    cold_users: np.ndarray  # int64 user indices whose test target is a cold item
    warm_users: np.ndarray  # the other users


def cold_start_split(dataset, fraction: float = 0.1, *, seed: int = 0, max_len: int = 50) -> ColdStart:
    """Hold out ``fraction`` of the items from training entirely (and from every history).

    Test targets stay as they are: users whose test target is a cold item measure how well a model recommends items it
    has never seen in an interaction. Semantic IDs for those items still come from their *content* (text, image).
    """
    from .data import LeaveOneOutSplit

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    base = dataset.split(max_len=0)
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(np.arange(1, dataset.num_items + 1), size=max(1, int(fraction * dataset.num_items)),
                              replace=False))
    is_cold = np.zeros(dataset.num_items + 1, dtype=bool)
    is_cold[cold] = True

    def drop(seqs):
        out = [s[~is_cold[s]] for s in seqs]
        return [s[-max_len:] if max_len else s for s in out]

    split = LeaveOneOutSplit(train=drop(base.train), valid_history=drop(base.valid_history),
                             valid_target=base.valid_target, test_history=drop(base.test_history),
                             test_target=base.test_target, num_items=dataset.num_items, max_len=max_len)
    cold_users = np.flatnonzero(is_cold[base.test_target])
    warm_users = np.flatnonzero(~is_cold[base.test_target])
    return ColdStart(split, cold, cold_users, warm_users)


def evaluate_users(model, split, users: np.ndarray, cfg: EvalConfig = EvalConfig(), which: str = "test") -> EvalResult:
    """Evaluate on a subset of users (e.g. those whose target is a cold item)."""
    from .evaluate import evaluate

    hist = split.test_history if which == "test" else split.valid_history
    targ = split.test_target if which == "test" else split.valid_target
    return evaluate(model, [hist[u] for u in users], targ[users], split.num_items, cfg, max_len=split.max_len,
                    split_name=f"{which} ({len(users):,} selected users)")
