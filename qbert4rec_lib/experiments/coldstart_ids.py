"""Semantic IDs for new items: each cold item's fused vector through the *trained* stage 1 (a content query, the
mean query, the learned "unknown" query, or content + structure; :data:`QUERY_PATHS`), quantized by the trained
RQ-VAE and disambiguated without changing any warm ID. Cached per (dataset, split, source, paths, config).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..semantic.features import content_vectors  # re-exported: the cold-start code's name for it
from .coldstart_split import ColdStart

__all__ = ["QUERY_PATHS", "NEW_ITEM_PATH", "query_paths", "content_vectors", "ColdIDs", "cold_semantic_ids",
           "metadata_cold_ids"]

QUERY_PATHS = ("content", "mean", "unknown", "content+structure")
NEW_ITEM_PATH = "new_item"  # the new-item query q_new trained with stage 1 (only when FusionConfig.id_dropout > 0)


def query_paths(cfg) -> tuple[str, ...]:
    """The stage-1 paths for new items under ``cfg`` (an ExperimentConfig): :data:`QUERY_PATHS`, plus
    :data:`NEW_ITEM_PATH` when stage 1 trains with ID dropout."""
    return QUERY_PATHS + ((NEW_ITEM_PATH,) if cfg.fusion.id_dropout > 0 else ())


@dataclass
class ColdIDs:
    """Semantic IDs of every item when the cold items were absent from stages 1-2."""

    source: str  # "fused" (stages 1+2) | "raw_text" (RQ-VAE on the text vectors) | "metadata" (category, brand)
    tables: dict[str, np.ndarray]  # path -> int64 [N, L + 1]; warm rows identical across paths
    vocab_sizes: tuple[int, ...]  # covers every path's table (codebook size per level, then max suffix + 1)
    info: dict = field(default_factory=dict)  # per path: diagnostics (see cold_semantic_ids)
    key: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self.tables)


def _subset_features(features, rows: np.ndarray):
    from ..semantic.features import FeatureSet, ModalityFeatures

    mods = {m: ModalityFeatures(m, f.vectors[rows], np.asarray(f.present)[rows], dict(f.meta))
            for m, f in features.modalities.items()}
    return FeatureSet(features.dataset_fingerprint, mods, dict(features.absent))


def _path_diagnostics(table: np.ndarray, cs: ColdStart, dataset, warm_codes_via_path: np.ndarray | None,
                      warm_ids: np.ndarray) -> dict:
    """Cheap, label-free and ground-truth checks of a path's IDs (no test data used)."""
    cold_rows, warm_rows = cs.cold_items - 1, cs.warm_rows
    cold = table[cold_rows]
    warm_prefixes = {tuple(r) for r in warm_ids[:, :-1]}
    out = {"cold_items": int(len(cold_rows)),
           "cold_sharing_all_codes_with_a_warm_item": float(np.mean([tuple(r) in warm_prefixes for r in cold[:, :-1]])),
           "cold_distinct_level1_codes": int(len(np.unique(cold[:, 0]))),
           "max_disambiguation_token": int(table[:, -1].max())}
    if warm_codes_via_path is not None:  # warm items sent through the new-item path: do they land on their own codes?
        out["warm_level1_agreement"] = float(np.mean(warm_codes_via_path[:, 0] == warm_ids[:, 0]))
        out["warm_level12_agreement"] = float(np.mean(np.all(warm_codes_via_path[:, :2] == warm_ids[:, :2], axis=1)))
    gt = getattr(dataset, "ground_truth", None)
    if gt is not None and "subcategory" in gt:  # does a cold item's level-1 code hold warm items of its subcategory?
        sub = np.asarray(gt["subcategory"])
        majority = {}
        for code in np.unique(table[warm_rows, 0]):
            members = sub[warm_rows[table[warm_rows, 0] == code]]
            majority[int(code)] = int(np.bincount(members).argmax())
        hits = [majority.get(int(table[r, 0]), -1) == sub[r] for r in cold_rows]
        out["cold_level1_majority_subcategory_match"] = float(np.mean(hits))
    return out


def metadata_cold_ids(dataset, cs: ColdStart) -> ColdIDs:
    """Every item's metadata tokens (most specific category, brand: :mod:`~qbert4rec_lib.semantic.attribute_ids`),
    which a new item has the day it arrives; nothing is trained, so nothing of the cold items is learned. The
    disambiguation suffix numbers the warm items of a group first, so no warm ID depends on the cold items."""
    from ..semantic.attribute_ids import attribute_id_table

    table = attribute_id_table(dataset, "metadata").ids.copy()  # [N, 3]
    order = np.concatenate([cs.warm_rows, cs.cold_items - 1])  # warm rows first, then the new items
    _, group = np.unique(table[:, :-1], axis=0, return_inverse=True)
    taken: dict[int, int] = {}
    for row in order:
        table[row, -1] = taken.get(int(group[row]), 0)
        taken[int(group[row])] = table[row, -1] + 1
    sizes = tuple(int(table[:, j].max()) + 1 for j in range(table.shape[1]))
    unseen = lambda j: int(len(np.setdiff1d(table[cs.cold_items - 1, j], table[cs.warm_rows, j])))  # noqa: E731
    info = {"metadata": {"new_items_with_an_unseen_category": unseen(0), "new_items_with_an_unseen_brand": unseen(1)}}
    return ColdIDs("metadata", {"metadata": table}, sizes, info)


def cold_semantic_ids(dataset, cs: ColdStart, cfg, source: str = "fused", *, paths: Sequence[str] | None = None,
                      content_k: int = 10, cache_root=None, progress: bool = False) -> ColdIDs:
    """Train stages 1-2 on the warm items only and give every cold item a semantic ID through the frozen stages
    (see the module doc). ``cfg`` is an :class:`~qbert4rec_lib.experiments.presets.ExperimentConfig`. Cached."""
    from ..cache import stage_dir
    from ..semantic.features import build_features

    if source not in ("fused", "raw_text"):
        raise ValueError(f"source must be 'fused' or 'raw_text', got {source!r}")
    known = query_paths(cfg)
    paths = (known if paths is None else tuple(paths)) if source == "fused" else ("frozen",)
    unknown = set(paths) - set(known) - {"frozen"}
    if unknown:
        raise ValueError(f"unknown stage-1 path(s) {sorted(unknown)}; known under this config: {known}"
                         + ("" if cfg.fusion.id_dropout > 0 else
                            f" ({NEW_ITEM_PATH!r} needs stage 1 trained with fusion.id_dropout > 0)"))
    full_split = replace(cs.split, train=cs.train_full, max_len=0)
    features = build_features(dataset, cfg.features, split=full_split, cache_root=cache_root, progress=progress)
    store = stage_dir("coldstart_ids", dataset.fingerprint(), cs.key(), source, paths, content_k, cfg.features,
                      cfg.fusion if source == "fused" else None, cfg.rqvae, root=cache_root)
    with store.lock():
        if store.usable():
            meta = store.meta()
            return ColdIDs(source, {p: store.load_npy(f"ids_{p}") for p in meta["paths"]}, tuple(meta["vocab_sizes"]),
                           meta["info"], store.key)
        ids = _compute_cold_ids(dataset, cs, cfg, source, paths, content_k, features, progress)
        store.write({f"ids_{p}": t for p, t in ids.tables.items()},
                    {"paths": list(ids.tables), "vocab_sizes": list(ids.vocab_sizes), "info": ids.info,
                     "source": source, "cold_items": cs.cold_items.tolist(), "protocol": cs.describe()})
        ids.key = store.key
        return ids


def _compute_cold_ids(dataset, cs, cfg, source, paths, content_k, features, progress) -> ColdIDs:
    from ..semantic.features import pooled
    from ..semantic.fusion import _select_inputs, train_fusion
    from ..semantic.fusion_queries import encode_with_queries, fit_unknown_query
    from ..semantic.quantize import encode_frozen, extend_ids, train_rqvae

    warm_rows, cold_rows = cs.warm_rows, cs.cold_items - 1
    n = dataset.num_items
    info: dict = {"warm_items": int(len(warm_rows))}
    tables: dict[str, np.ndarray] = {}
    if source == "raw_text":
        if "text" not in features.modalities:
            raise ValueError(f"raw-text IDs need text features; {dataset.name!r} has none")
        text = pooled(features.modalities["text"])
        quant = train_rqvae(text[warm_rows], cfg.rqvae, progress=progress)
        warm_ids = quant.semantic_ids
        cold_codes = encode_frozen(quant, text[cold_rows])
        table = np.zeros((n, warm_ids.shape[1]), np.int64)
        table[warm_rows], table[cold_rows] = warm_ids, extend_ids(warm_ids, cold_codes)
        tables["frozen"] = table
        info["frozen"] = _path_diagnostics(table, cs, dataset, encode_frozen(quant, text[warm_rows]), warm_ids)
    else:
        if "structural" in features.modalities:  # the protocol: no co-occurrence for an item nobody has seen
            assert not np.asarray(features.modalities["structural"].present)[cold_rows].any()
        fusion = train_fusion(_subset_features(features, warm_rows), cfg.fusion, progress=progress)
        model = fusion.model
        quant = train_rqvae(fusion.embeddings, cfg.rqvae, progress=progress)
        warm_ids = quant.semantic_ids
        inputs = _select_inputs(features, cfg.fusion)  # all rows; a cold row has no structural modality
        hide = torch.tensor([m == "structural" for m in inputs.names])
        queries_w = model.id_queries.weight.detach()  # [N_warm, width], row order = warm_rows
        content = content_vectors(features)
        sim = content @ content[warm_rows].T  # [N, N_warm]
        sim[warm_rows, np.arange(len(warm_rows))] = -np.inf  # a warm item is never its own neighbour (diagnostics)
        neighbours = np.argsort(-sim, axis=1)[:, :content_k]  # [N, k] indices into warm_rows
        unknown_query = None
        if "unknown" in paths:
            wf = {m: inputs.features[m][torch.as_tensor(warm_rows)] for m in inputs.names}
            unknown_query = fit_unknown_query(model, wf, inputs.present[torch.as_tensor(warm_rows)] & ~hide,
                                              seed=cfg.fusion.seed)

        def queries_for(rows: np.ndarray, path: str) -> torch.Tensor:
            if path in ("mean", "mean+structure"):
                return queries_w.mean(0, keepdim=True).expand(len(rows), -1)
            if path == "unknown":
                return unknown_query.unsqueeze(0).expand(len(rows), -1)
            if path == NEW_ITEM_PATH:
                return model.new_item_query.detach().unsqueeze(0).expand(len(rows), -1)
            return queries_w[torch.as_tensor(neighbours[rows])].mean(1)  # content: neighbours' mean query

        def fused(rows: np.ndarray, path: str) -> np.ndarray:
            r = torch.as_tensor(rows)
            feats, present = {m: inputs.features[m][r] for m in inputs.names}, inputs.present[r] & ~hide
            if path.endswith("+structure") and "structural" in inputs.names:  # impute structure from content
                struct = inputs.features["structural"][torch.as_tensor(warm_rows[neighbours[rows]])].mean(1)  # [B, J, d]
                feats["structural"] = struct / struct.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                present = present | hide
            return encode_with_queries(model, feats, present, queries_for(rows, path.split("+")[0])).fused.numpy()

        for path in paths:
            cold_codes = encode_frozen(quant, fused(cold_rows, path))
            table = np.zeros((n, warm_ids.shape[1]), np.int64)
            table[warm_rows], table[cold_rows] = warm_ids, extend_ids(warm_ids, cold_codes)
            tables[path] = table
            info[path] = _path_diagnostics(table, cs, dataset, encode_frozen(quant, fused(warm_rows, path)), warm_ids)
        info["fusion_seconds"], info["fusion_final_loss"] = fusion.seconds, fusion.history[-1]["loss"]
    info["rqvae_codebook_size"] = int(quant.codebook_size)
    width = max(int(t[:, -1].max()) for t in tables.values()) + 1
    vocab = (int(quant.codebook_size),) * (warm_ids.shape[1] - 1) + (width,)
    return ColdIDs(source, tables, vocab, info)
