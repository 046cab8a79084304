"""Semantic IDs read off known item attributes: a reference for the learned tokenizer (stages 1-2).

Stages 1-2 *learn* each item's tokens from its content (fusion, then an RQ-VAE). Whether those tokens carry what
drives the sequences is an empirical question; this module builds the tokens one would write by hand when the
attributes are known, so the same sequence model can be trained on both and the difference measured:

* ``"ground_truth"``: one column per generator attribute (subcategory, brand, colour, price band) from
  ``Dataset.ground_truth`` -- the generated catalog only, and a **diagnostic**: real data has no such table;
* ``"metadata"``: the item table's own fields, which real data has too -- the most specific category of the item's
  category path and its brand (a missing value is its own token).

Items with the same attribute tuple get a final disambiguation token (0, 1, ... in item-id order), as the RQ-VAE's
IDs do, so every item has a unique ID. No per-item parameter is involved: the sequence model still sees only tokens.
"""
from __future__ import annotations

import numpy as np

from .quantize import SemanticIDTable

__all__ = ["ATTRIBUTE_SOURCES", "GROUND_TRUTH_COLUMNS", "attribute_id_table"]

ATTRIBUTE_SOURCES = ("ground_truth", "metadata")
GROUND_TRUTH_COLUMNS = ("subcategory", "brand", "colour", "price_band")


def _codes(values) -> np.ndarray:
    """int64 codes of a column, in order of first appearance (stable for a fixed item order)."""
    index: dict = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def attribute_id_table(dataset, source: str) -> SemanticIDTable:
    """``[N, C + 1]`` IDs of ``dataset``'s items from their attributes (``source`` in :data:`ATTRIBUTE_SOURCES`)."""
    if source == "ground_truth":
        gt = dataset.ground_truth or {}
        missing = [c for c in GROUND_TRUTH_COLUMNS if c not in gt]
        if missing:
            raise ValueError(f"semantic_source='ground_truth' needs the generator's attributes {missing} "
                             f"(ground_truth.tsv: generated catalogs only); {dataset.name!r} has none")
        columns = [_codes(gt[c].tolist()) for c in GROUND_TRUTH_COLUMNS]
    elif source == "metadata":
        leaf = [path[-1] if path else "" for path in dataset.items.categories]
        if not any(leaf) and not any(dataset.items.brands):
            raise ValueError(f"semantic_source='metadata' needs item categories or brands; {dataset.name!r} has "
                             "neither")
        columns = [_codes(leaf), _codes(dataset.items.brands)]
    else:
        raise ValueError(f"attribute_id_table: source must be one of {ATTRIBUTE_SOURCES}, got {source!r}")
    base = np.stack(columns, axis=1)  # [N, C]
    _, group = np.unique(base, axis=0, return_inverse=True)
    suffix = np.zeros(len(base), dtype=np.int64)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        suffix[members] = np.arange(len(members))
    ids = np.concatenate([base, suffix[:, None]], axis=1)
    return SemanticIDTable(ids, tuple(int(ids[:, j].max()) + 1 for j in range(ids.shape[1])))
