"""Stages 0-2 composed and cached: features -> fusion -> RQ-VAE, giving the semantic-ID table a sequence model reads.

:func:`semantic_ids` only composes the stage modules (:mod:`qbert4rec_lib.semantic`); ``semantic_source`` picks
the fused IDs, IDs from the raw text features (no injection), the fused IDs shuffled across items (random IDs), or
tokens read off known item attributes (``"metadata"``, ``"ground_truth"``: a reference for the learned tokenizer,
:mod:`qbert4rec_lib.semantic.attribute_ids`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..keys import digest, stable_hash
from ..semantic.attribute_ids import ATTRIBUTE_SOURCES, attribute_id_table
from ..semantic.features import FeatureSet, build_features, pooled
from ..semantic.fusion import FusionResult, run_fusion
from ..semantic.quantize import QuantizeResult, SemanticIDTable, run_quantize
from .presets import ExperimentConfig

__all__ = ["SemanticIDs", "semantic_ids", "hashlib_ids"]


class SemanticIDs(NamedTuple):
    features: FeatureSet | None  # None for attribute IDs (semantic_source "ground_truth" / "metadata")
    fusion: FusionResult | None  # None when the RQ-VAE ran on raw text (no injection) or for attribute IDs
    quantize: QuantizeResult | None  # None for attribute IDs
    table: SemanticIDTable  # what the sequence model reads (shuffled for the random-ID ablation)
    source: str  # "fused" | "raw_text" | "random"
    key: str  # content key of the table (keys the trained sequence models)


def semantic_ids(dataset, cfg: ExperimentConfig = ExperimentConfig(), *, split=None, cache_root=None,
                 progress: bool = True, pinned=None) -> SemanticIDs:
    """Run (or load from the cache) features -> fusion -> RQ-VAE for ``dataset``; ``pinned``: a folder written by
    :func:`~qbert4rec_lib.experiments.pinned.export_semantic_ids` to read instead (checked against ``dataset`` and
    ``cfg``)."""
    if pinned is not None:
        from .pinned import load_semantic_ids

        return load_semantic_ids(pinned, dataset, cfg)
    if cfg.semantic_source in ATTRIBUTE_SOURCES:  # tokens read off known attributes: no stage 1-2 (a reference)
        table = attribute_id_table(dataset, cfg.semantic_source)
        return SemanticIDs(None, None, None, table, cfg.semantic_source,
                           stable_hash(cfg.semantic_source, hashlib_ids(table.ids)))
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
    return digest([np.ascontiguousarray(ids, dtype=np.int64).tobytes()])
