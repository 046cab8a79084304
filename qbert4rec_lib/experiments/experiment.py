"""An experiment: every model x seed on one split with one evaluator (:func:`run_experiment`), and the ablations
(:data:`ABLATIONS`, one config switch each, :func:`run_ablations`).

The ablations:

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

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

from ..models.masking import STRATEGIES, only
from .evaluate import results_table
from .presets import MODEL_NAMES, ExperimentConfig
from .runs import ModelRun, train_model
from .stages import SemanticIDs, semantic_ids

__all__ = ["ExperimentResult", "run_experiment", "ABLATIONS", "ablation_config", "run_ablations", "ablation_table"]


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
                   records_dir=None, train: bool = True, pinned_ids=None) -> ExperimentResult:
    """Train and evaluate ``models`` on ``dataset`` for each seed (same split, same evaluator).

    ``epoch_log``: print one flushed line per epoch (for runs whose output goes to a file).
    ``records_dir``: read finished runs from / write them to result records (see :func:`train_model`).
    ``train=False``: assemble the table from the records (and cache) only; missing runs are listed, not trained.
    ``pinned_ids``: read Q-Bert4Rec's semantic IDs from this folder (:mod:`qbert4rec_lib.experiments.pinned`).
    """
    from .train import epoch_logger

    t0 = time.perf_counter()
    split = dataset.split(max_len=cfg.max_len)
    ids = (semantic_ids(dataset, cfg, cache_root=cache_root, progress=progress, pinned=pinned_ids)
           if "Q-Bert4Rec" in models else None)
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
