"""The study: what makes Q-Bert4Rec competitive. One row of :data:`STUDY` = one change of the config (heads,
masking, fine-tuning windows, width, dropout, ...), each trained to early stopping; :func:`run_study` runs the
rows (resuming from result records), :func:`study_table` tabulates them.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Sequence

from .presets import ExperimentConfig
from .records import run_from_record
from .runs import ModelRun, train_model
from .stages import semantic_ids

__all__ = ["STUDY", "study_config", "study_description", "run_study", "study_runs_from_records", "study_table"]


def _q(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    return replace(cfg, qbert=replace(cfg.qbert, **changes))


def _mask_ratio(cfg: ExperimentConfig, ratio: float) -> ExperimentConfig:
    return replace(cfg, pretrain_masks=replace(cfg.pretrain_masks, cloze_ratio=ratio,
                                               max_mask_fraction=min(1.0, max(cfg.pretrain_masks.max_mask_fraction,
                                                                              ratio + 0.2))))


def _finetune(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    return replace(cfg, finetune=replace(cfg.finetune, **changes))


def _masked_finetune(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    """The paper's multi-mask fine-tuning (``objective="masked"``: Cloze + tail, the last item always masked)."""
    return replace(cfg, finetune_masks=replace(cfg.finetune_masks, objective="masked", **changes))


STUDY: dict[str, tuple[str, Callable[[ExperimentConfig], ExperimentConfig]]] = {
    "default": ("Q-Bert4Rec as configured", lambda c: c),
    "head_level_sum": ("item score = sum of per-level token logits (the kit's first head)",
                       lambda c: _q(c, item_head="level_sum")),
    "head_token_mlp": ("item score = g(h) . MLP(concat of token embeddings) + prior (no per-item parameter)",
                       lambda c: _q(c, item_head="token_mlp")),
    "input_item_vector": ("input item = its token-derived vector v_i (tied with the output head) instead of the "
                          "sum of its level embeddings", lambda c: _q(c, input_embedding="item_vector")),
    "input_item_vector_norm": ("input item = its token-derived vector v_i after a LayerNorm of its own (v_i is tiny at "
                               "initialisation), tied with the output head",
                               lambda c: _q(c, input_embedding="item_vector_norm")),
    "input_item_vector_scaled": ("input item = its token-derived vector v_i after a LayerNorm whose gain starts at the "
                                 "summed embeddings' scale (items and positions in the summed input's proportion), "
                                 "tied with the output head", lambda c: _q(c, input_embedding="item_vector_scaled")),
    "input_token_sum_item_vector": ("input item = the sum of its level embeddings plus its token-derived vector v_i "
                                    "(tied with the output head; v_i starts small, so training starts as with the sum)",
                                    lambda c: _q(c, input_embedding="token_sum_item_vector")),
    **{f"mask_ratio_{r}": (f"pretraining Cloze ratio {r} (cap raised to ratio + 0.2)",
                           (lambda r: lambda c: _mask_ratio(c, r))(r)) for r in (0.2, 0.4, 0.6)},
    "pretrain_last_item_0.5": ("pretraining also masks each row's last item with probability 0.5 (RecBole's "
                               "ft_ratio rows: the test question seen during pretraining)",
                               lambda c: replace(c, pretrain_masks=replace(c.pretrain_masks,
                                                                           always_mask_last_prob=0.5))),
    **{f"finetune_crop_{p}": (f"masked fine-tuning (as finetune_masked) with rows cut to a random prefix with "
                              f"probability {p} (sliding windows: the last-item target moves over every position)",
                              (lambda p: lambda c: _masked_finetune(c, prefix_crop_prob=p))(p))
       for p in (0.5, 1.0)},
    "crop_0.5": ("pretraining and fine-tuning rows cut to a random prefix with probability 0.5",
                 lambda c: replace(c, pretrain_masks=replace(c.pretrain_masks, prefix_crop_prob=0.5),
                                   finetune_masks=replace(c.finetune_masks, prefix_crop_prob=0.5))),
    "ids_raw_text": ("semantic IDs from the RQ-VAE on raw text features (no stage-1 injection)",
                     lambda c: replace(c, semantic_source="raw_text")),
    "fusion_text_structural": ("stage 1 fuses text and structural features only (no image: what Beauty has)",
                               lambda c: replace(c, fusion=replace(c.fusion, modalities=("text", "structural")))),
    "ids_metadata": ("NOT the paper's tokenizer: tokens read off the item table (most specific category, brand) "
                     "instead of stages 1-2 (no per-item parameter)", lambda c: replace(c, semantic_source="metadata")),
    "diagnostic_ids_ground_truth": ("DIAGNOSTIC, not available on real data: the generator's attributes (subcategory, "
                                    "brand, colour, price band) as the tokens", lambda c: replace(c, semantic_source=
                                                                                                "ground_truth")),
    "finetune_masked": ("the paper's multi-mask fine-tuning instead of next-item fine-tuning: Cloze + tail masks, "
                        "the last item always masked, bidirectional (the kit's default until 2026-12-03)",
                        lambda c: _masked_finetune(c)),
    "finetune_lr_1e-3": ("fine-tuning learning rate 1e-3, patience 5 (default: 2e-3, patience 10; the kit's "
                         "default until the evening of 2026-12-03)", lambda c: _finetune(c, lr=1e-3, patience=5)),
    "finetune_lr_1e-3_patience_10": ("fine-tuning learning rate 1e-3, patience 10 (default: lr 2e-3, patience 10)",
                                     lambda c: _finetune(c, lr=1e-3, patience=10)),
    "finetune_mixture": ("fine-tuning with the pretraining mixture (no next-item emphasis)",
                         lambda c: replace(c, finetune_masks=c.pretrain_masks)),
    "no_pretrain": ("fine-tuning only, from random initialisation", lambda c: replace(c, do_pretrain=False)),
    "hidden_128": ("width 128 (default 64)", lambda c: _q(c, hidden=128)),
    "item_mlp_16": ("item MLP of the token_mlp head 16 x d wide (default 4 x d): more room to tell apart items that "
                    "share tokens, still no per-item parameter", lambda c: _q(c, item_mlp_mult=16)),
    "layers_3": ("3 encoder layers (default 2)", lambda c: _q(c, layers=3)),
    "dropout_0.1": ("dropout 0.1 (default 0.2)", lambda c: _q(c, dropout=0.1)),
    **{f"dropout_{p}": (f"dropout {p} (default 0.2)", (lambda p: lambda c: _q(c, dropout=p))(p)) for p in (0.3, 0.4, 0.5)},
    "lr_1e-3": ("pretraining learning rate 1e-3 (default 2e-3)",
                lambda c: replace(c, pretrain=replace(c.pretrain, lr=1e-3))),
    "lr_4e-3": ("pretraining learning rate 4e-3 (default 2e-3)",
                lambda c: replace(c, pretrain=replace(c.pretrain, lr=4e-3))),
    **{f"item_token_dropout_{p}": (f"item token dropout {p}: in training, each item's output vector is computed from "
                                   "a random prefix of its tokens with this probability (DropoutNet-style, for new "
                                   "items)", (lambda p: lambda c: _q(c, item_token_dropout=p))(p)) for p in (0.3, 0.5)},
    **{f"pretrain_batch_{b}": (f"pretraining batches of {b} sequences (default 256): more optimiser steps per epoch",
                               (lambda b: lambda c: replace(c, pretrain=replace(c.pretrain, batch_size=b)))(b))
       for b in (64, 128)},
    "content_channel": ("EXTENSION, not the paper's model: + each item's frozen text+image vector through one learned "
                        "projection, added to its input and output vectors (no per-item parameter)",
                        lambda c: _q(c, content_channel="input_output")),
    "hybrid_item_bias": ("HYBRID, not Q-Bert4Rec: + a learned per-item score bias (an ID feature)",
                         lambda c: _q(c, item_bias=True)),
    "hybrid_item_id_embedding": ("HYBRID, not Q-Bert4Rec: + a learned per-item input embedding (an ID feature)",
                                 lambda c: _q(c, add_item_id_embedding=True)),
}


def study_config(name: str, cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` changed as the study row ``name`` says (see :data:`STUDY`). Rows compose with ``+``, applied left to
    right: ``"finetune_masked+hidden_128"`` is width 128 under the masked fine-tuning."""
    for part in name.split("+"):
        if part not in STUDY:
            raise ValueError(f"unknown study row {part!r}; known: {', '.join(STUDY)}")
        cfg = STUDY[part][1](cfg)
    return cfg


def study_description(name: str) -> str:
    """What the (possibly composed) row ``name`` changes; a composed row names the rows it builds on."""
    *under, last = name.split("+")
    return STUDY[last][0] + (f" (on top of {' + '.join(under)})" if under else "")


def _record_matches_row(record: dict, label: str, base: ExperimentConfig) -> bool:
    """Does a record's stored config equal study row ``label`` applied to ``base`` (the semantic-ID and content keys
    aside: they depend on the data)? A record made under another default or preset does not."""
    from ..keys import _jsonable, _key_view
    from .runs import run_config

    relevant = run_config("Q-Bert4Rec", study_config(label, base))
    full, keyed = (json.loads(json.dumps(_jsonable(v))) for v in (relevant, _key_view(relevant)))
    have = dict(record["config"])
    for d in (full, keyed, have):
        for k in ("ids", "init_from", "content"):
            d.pop(k, None)
    return _agrees(have, full, keyed)


def _baseline_record_matches(record: dict, base: ExperimentConfig) -> bool:
    """Was a baseline's record (SASRec-CE, BERT4Rec-ID, Popularity) made under ``base``'s settings for it?"""
    from ..keys import _jsonable, _key_view
    from .runs import run_config

    relevant = run_config(record["model"], base)
    full, keyed = (json.loads(json.dumps(_jsonable(v))) for v in (relevant, _key_view(relevant)))
    return _agrees(dict(record["config"]), full, keyed)


def _agrees(have, full, keyed) -> bool:
    """``have`` (a record's stored config) is the config whose full view is ``full`` and key view ``keyed``:
    every stored value equals the full one, and every keyed field is stored (records written at different times
    store key-neutral fields or leave them out)."""
    if isinstance(full, dict):
        if not isinstance(have, dict) or not set(keyed) <= set(have) or not set(have) <= set(full):
            return False
        return all(_agrees(have[k], full[k], keyed.get(k, full[k])) for k in have)
    return have == full


def run_study(dataset, cfg: ExperimentConfig, names: Sequence[str] = tuple(STUDY), *, seeds: Sequence[int] = (0,),
              records_dir=None, cache_root=None, epoch_log: bool = False,
              log: Callable[[str], None] | None = print, pinned_ids=None) -> dict[str, list[ModelRun]]:
    """Q-Bert4Rec under each study row and seed, each trained to early stopping; finished runs come from
    ``records_dir`` (so an interrupted study resumes and a table can be assembled on another machine).
    ``pinned_ids``: the semantic IDs of every row that keeps ``cfg``'s stage-1/2 recipe come from this folder
    (:mod:`qbert4rec_lib.experiments.pinned`); rows that change the recipe (e.g. ``ids_raw_text``) build their own."""
    from .pinned import stage_recipe
    from .train import epoch_logger

    split = dataset.split(max_len=cfg.max_len)
    out: dict[str, list[ModelRun]] = {}
    for name in names:
        rcfg = study_config(name, cfg)
        ids = None
        for seed in seeds:
            if ids is None:
                same_recipe = pinned_ids is not None and stage_recipe(rcfg) == stage_recipe(cfg)
                ids = semantic_ids(dataset, rcfg, cache_root=cache_root, progress=False,
                                   pinned=pinned_ids if same_recipe else None)
            run = train_model("Q-Bert4Rec", dataset, rcfg, seed=seed, split=split, ids=ids, cache_root=cache_root,
                              progress=False, records_dir=records_dir, record_label=name,
                              log=epoch_logger(f"study {name} seed {seed}") if epoch_log else None)
            out.setdefault(name, []).append(run)
            if log:
                m = run.test.metrics
                log(f"study {name} seed {seed}: test NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} "
                    f"({'record' if run.model is None else f'{run.seconds:.0f} s'})")
    return out


def study_runs_from_records(records_dir, base: ExperimentConfig | None = None) -> dict[str, list[ModelRun]]:
    """The study rows a records folder holds (records written by :func:`run_study` carry their row name), in
    :data:`STUDY` order; nothing is trained. Use it to tabulate a study whose runs were made earlier or elsewhere.
    With ``base`` (the preset the study ran on), every labelled record's config must be its row applied to
    ``base``, else a ValueError names the file: a row never shows a run of another configuration."""
    from pathlib import Path

    rows: dict[str, list[ModelRun]] = {}
    for path in sorted(Path(records_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("label"):
            if base is not None and not _record_matches_row(record, record["label"], base):
                raise ValueError(f"{path}: its config is not study row {record['label']!r} of this preset (made "
                                 "under another default or preset?); relabel it with the row it ran, e.g. "
                                 "'finetune_masked+<row>' for runs made before next-item fine-tuning was the default")
            rows.setdefault(record["label"], []).append(run_from_record(record))
        elif record["model"] != "Q-Bert4Rec":  # a baseline trained into the same folder: a reference row ...
            if base is not None and not _baseline_record_matches(record, base):
                continue  # ... of this preset only (a run under an earlier baseline setting stays on file, unused)
            rows.setdefault(f"reference: {record['model']}", []).append(run_from_record(record))
    if not any(k.split("+")[0] in STUDY for k in rows):
        raise ValueError(f"no labelled study records in {records_dir}")
    order = {name: i for i, name in enumerate(STUDY)} | {k: -1 for k in rows if k.startswith("reference: ")}
    rank = lambda k: tuple(order.get(part, len(order)) for part in k.split("+"))  # noqa: E731
    return {k: sorted(rows[k], key=lambda r: r.seed) for k in sorted(rows, key=rank)}


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
        what = "same protocol, the baseline's own preset settings" if name.startswith("reference: ") \
            else study_description(name)
        lines.append(f"| {name} | {what} | " + " | ".join(cell(agg[m]) for m in metrics)
                     + f" | {cell(vagg['NDCG@10'])} | {'; '.join(_best_epochs(r) for r in rs)} | {len(rs)} |")
    protocol = next(iter(runs.values()))[0].test.protocol if runs else ""
    return "\n".join(lines) + f"\n\nProtocol: {protocol}. Each run trained to early stopping on validation NDCG@10.\n"
