"""Cross-domain transfer: pretrain on one catalog, fine-tune on another, through one shared semantic-ID vocabulary.

Q-Bert4Rec's claim is that semantic IDs make a sequence model *transferable*: item-ID embeddings
are private to a catalog, but tokens that mean "lipstick-like, red, budget" can be shared. The kit
sets it up the only way it can work — both catalogs are tokenised by ONE semantic-ID model:

1. :func:`union_dataset` stacks the two catalogs into one item space (source items ``1..N_s``,
   target items ``N_s+1..N_s+N_t``; raw ids prefixed ``"<name>:"``; users of both kept apart).
2. Stages 0-2 run once on the union (:func:`qbert4rec_lib.experiments.stages.semantic_ids`) on the *content*
   modalities only (text: one transformers model; image: one CLIP fitted on the union's images), ONE
   fusion model and ONE RQ-VAE. Structural features are left out by default: co-occurrence never links
   two catalogs, so its SVD axes are catalog-specific and the codes split by catalog (measured on the
   default pair, smoke budget, seed 0: with structural features only 68% of the target's level-1 codes
   were used by any source item, 98% without). ``modalities=`` changes this.
3. :func:`run_cross_domain` trains Q-Bert4Rec on the source catalog (mixture pretraining + fine-tuning)
   and then compares four ways to get a target-catalog model, each evaluated with the same
   leave-one-out full-ranking protocol on the target (beside Popularity, the floor):

   * ``zero-shot``: the source model scores the target's items as it is (no target training at all);
   * ``scratch``: fine-tuning only on the target, from random initialisation (same fine-tuning budget);
   * ``transfer``: the source model's weights (token tables, positions, encoder, heads; see
     :func:`qbert4rec_lib.models.qbert.transfer_weights`) then the same fine-tuning on the target;
   * ``in-domain``: the target's own mixture pretraining + fine-tuning (the usual single-domain run).

What the default pair shows (smoke budget, seed 0; notebook 08 prints its own run): the *zero-shot* model ranks
the target at chance level (NDCG@10 0.0075 vs 0.0101 for a random ranking) — a level-1 code's majority top
category among source items matches the target item's own category for only 28% of target items, so the source
model's token preferences do not carry over as they are; *transfer* then fine-tuning reached 0.0692 vs 0.0545 from
scratch with the same fine-tuning budget, and the target's own pretraining + fine-tuning 0.0896 (Popularity 0.0693).

Choices the paper leaves open, made here: the source model is the fully trained one (pretrained and
fine-tuned on the source); transfer copies every catalog-independent weight and fine-tunes all of
them (no frozen layers); the default pair of catalogs are two generated catalogs with different
seeds and category mixes (:data:`DEFAULT_SOURCE`, :data:`DEFAULT_TARGET`), the target the smaller one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..keys import stable_hash
from ..data.dataset import Dataset, ItemTable, LoadReport, Modalities
from .evaluate import EvalResult, evaluate_split
from ..semantic.quantize import SemanticIDTable

__all__ = ["CONTENT_MODALITIES", "DEFAULT_SOURCE", "DEFAULT_TARGET", "union_dataset", "split_ids", "CrossDomainResult", "run_cross_domain",
           "default_pair"]

# Two generated catalogs, small enough for the smoke run: the source has all six top categories; the target (a
# different seed) has only four of them and fewer users, the setting where pretraining elsewhere could help.
DEFAULT_SOURCE = {"seed": 11, "num_items": 900, "num_users": 1600}
DEFAULT_TARGET = {"seed": 12, "num_top_categories": 4, "num_items": 600, "num_users": 700}


def default_pair(source: dict | None = None, target: dict | None = None):
    """The two generated catalogs of the demo (overrides of :class:`~qbert4rec_lib.data.synthetic.SyntheticConfig`)."""
    from ..data.synthetic_folder import load_default

    return load_default(**(DEFAULT_SOURCE if source is None else source)), \
        load_default(**(DEFAULT_TARGET if target is None else target))


def union_dataset(source: Dataset, target: Dataset, names: tuple[str, str] = ("source", "target")) -> Dataset:
    """One dataset holding both catalogs: source items keep ids ``1..N_s``, target items become ``N_s + k``."""
    a, b = source.items, target.items
    offset = source.num_items
    items = ItemTable(
        raw_ids=[f"{names[0]}:{r}" for r in a.raw_ids] + [f"{names[1]}:{r}" for r in b.raw_ids],
        titles=a.titles + b.titles, categories=a.categories + b.categories, brands=a.brands + b.brands,
        prices=np.concatenate([a.prices, b.prices]), descriptions=a.descriptions + b.descriptions,
        images=a.images + b.images,
    )
    if source.modalities.image != target.modalities.image:
        raise ValueError(f"cannot share an image modality: {source.name!r} has images={source.modalities.image}, "
                         f"{target.name!r} has images={target.modalities.image}")
    ground_truth = labels = None
    if source.ground_truth and target.ground_truth and set(source.ground_truth) == set(target.ground_truth):
        ground_truth, labels = {}, {}
        for attr in source.ground_truth:  # re-code both catalogs' attributes against the union of their labels
            names_a, names_b = source.ground_truth_labels[attr], target.ground_truth_labels[attr]
            labels[attr] = sorted(set(names_a) | set(names_b))
            index = {v: i for i, v in enumerate(labels[attr])}
            ground_truth[attr] = np.concatenate([
                np.array([index[v] for v in names_a], np.int64)[source.ground_truth[attr]],
                np.array([index[v] for v in names_b], np.int64)[target.ground_truth[attr]]])
    return Dataset(
        name=f"union({source.name}:{source.fingerprint()[:6]}+{target.name}:{target.fingerprint()[:6]})",
        items=items,
        user_ids=[f"{names[0]}:{u}" for u in source.user_ids] + [f"{names[1]}:{u}" for u in target.user_ids],
        sequences=[np.asarray(s, np.int64) for s in source.sequences]
        + [np.asarray(s, np.int64) + offset for s in target.sequences],
        modalities=Modalities(text=source.modalities.text and target.modalities.text,
                              image=source.modalities.image, image_source=source.modalities.image_source),
        report=LoadReport(notes=[f"union of {source.num_items} {names[0]} items and {target.num_items} {names[1]} items"]),
        source=f"{source.source} + {target.source}",
        ground_truth=ground_truth, ground_truth_labels=labels,
    )


def split_ids(union_ids, num_source_items: int):
    """Cut the union's :class:`~qbert4rec_lib.experiments.stages.SemanticIDs` into the source's and the target's.

    Both parts keep the union's vocabulary sizes (the shared vocabulary). The disambiguation column
    stays unique within each catalog because it is unique within the union.
    """
    table = union_ids.table
    parts = []
    for name, rows in (("source", slice(0, num_source_items)), ("target", slice(num_source_items, None))):
        part = SemanticIDTable(table.ids[rows].copy(), table.vocab_sizes)
        parts.append(union_ids._replace(table=part, key=stable_hash(union_ids.key, name)))
    return tuple(parts)


@dataclass
class CrossDomainResult:
    """Target-catalog test results of each way to obtain a target model (same protocol for all)."""

    test: dict[str, EvalResult]  # "popularity" | "zero-shot" | "scratch" | "transfer" | "in-domain" -> target test
    valid: dict[str, EvalResult]
    source_test: EvalResult  # the source model on its own catalog
    shared_vocab_sizes: tuple[int, ...]
    token_overlap: float  # share of the target's level-1 codes that source items also use
    curves: dict[str, list[dict]]  # fine-tuning validation curves on the target
    copied_weights: int  # parameter tensors copied by transfer_weights

    def table_md(self, metrics=("NDCG@10", "HR@10")) -> str:
        lines = ["| target model | how it was trained | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        how = {"popularity": "target training counts (the floor)", "zero-shot": "source model, no target training",
               "scratch": "target fine-tuning from random init",
               "transfer": "source weights + target fine-tuning", "in-domain": "target pretraining + fine-tuning"}
        for name, res in self.test.items():
            lines.append(f"| {name} | {how[name]} | " + " | ".join(f"{res.metrics[m]:.4f}" for m in metrics) + " |")
        protocol = next(iter(self.test.values())).protocol
        return "\n".join(lines) + f"\n\nProtocol (target catalog): {protocol}.\n"


CONTENT_MODALITIES = ("text", "image")


def run_cross_domain(source: Dataset, target: Dataset, cfg=None, *, seed: int = 0, cache_root=None,
                     modalities: tuple[str, ...] = CONTENT_MODALITIES, progress: bool = True,
                     log: Callable[[str], None] | None = print) -> CrossDomainResult:
    """Pretrain on ``source``, fine-tune on ``target`` through one shared semantic-ID vocabulary (see module doc).

    ``modalities``: what the shared tokens are built from (default: the content modalities the two catalogs
    have; structural features are catalog-specific, see the module docstring).
    """
    from .presets import smoke_config
    from .runs import train_model
    from .stages import semantic_ids
    from ..models.qbert import QBert4Rec, transfer_weights

    cfg = cfg if cfg is not None else smoke_config()
    union = union_dataset(source, target)
    present = tuple(m for m in modalities if m == "structural" or getattr(union.modalities, m, False))
    if not present:
        raise ValueError(f"none of the modalities {modalities} is present in both catalogs")
    cfg = replace(cfg, features=replace(cfg.features, modalities=present),
                  fusion=replace(cfg.fusion, modalities=present))
    union_ids = semantic_ids(union, cfg, cache_root=cache_root, progress=progress)
    src_ids, tgt_ids = split_ids(union_ids, source.num_items)
    vocab = union_ids.table.vocab_sizes
    overlap = float(np.isin(np.unique(tgt_ids.table.ids[:, 0]), np.unique(src_ids.table.ids[:, 0])).mean())
    if log:
        log(f"shared vocabulary {vocab}; {overlap:.0%} of the target's level-1 codes are also used by source items")

    src_split, tgt_split = source.split(max_len=cfg.max_len), target.split(max_len=cfg.max_len)
    src_run = train_model("Q-Bert4Rec", source, cfg, seed=seed, split=src_split, ids=src_ids, cache_root=cache_root,
                          progress=progress)

    zero = QBert4Rec(tgt_ids.table.ids, vocab, replace(cfg.qbert, max_len=cfg.max_len))
    copied = transfer_weights(src_run.model, zero)
    zero.eval()
    popularity = train_model("Popularity", target, cfg, seed=seed, split=tgt_split, cache_root=cache_root, progress=False)
    test = {"popularity": popularity.test, "zero-shot": evaluate_split(zero, tgt_split, "test", cfg.eval)}
    valid = {"popularity": popularity.valid, "zero-shot": evaluate_split(zero, tgt_split, "valid", cfg.eval)}
    curves = {}
    finetune_only = replace(cfg, do_pretrain=False)
    for name, run_cfg, init in (("scratch", finetune_only, None), ("transfer", finetune_only, src_run.model),
                                ("in-domain", cfg, None)):
        run = train_model("Q-Bert4Rec", target, run_cfg, seed=seed, split=tgt_split, ids=tgt_ids,
                          cache_root=cache_root, progress=progress, init_from=init)
        test[name], valid[name] = run.test, run.valid
        curves[name] = [h for hist in run.curves().values() for h in hist]
    if log:
        for name, res in test.items():
            log(f"target {name:10s}: test NDCG@10 {res.metrics['NDCG@10']:.4f} HR@10 {res.metrics['HR@10']:.4f}")
    return CrossDomainResult(test, valid, src_run.test, tuple(vocab), overlap, curves, len(copied.copied))
