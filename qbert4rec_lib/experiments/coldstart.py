"""Cold-start items done right: the protocol, the stage-1/2 path for new items, the baselines and the table.

**The protocol** (:func:`cold_start_split`). A fraction of the items is *new*: it does not exist while anything is
trained. A cold item is removed from every training sequence and from every history (validation and test), so it is

* not in the fusion stage (no ID query, not in a contrastive batch): stage 1 trains on the warm items' rows only;
* not in the structural features: the co-occurrence PPMI-SVD runs on the warm training sequences, so a cold item has
  no co-occurrence and its structural modality is absent;
* not in the RQ-VAE's training set or its k-means initialisation (stage 2 trains on the warm fused vectors);
* not in any sequence model's training softmax: ``model.train_item_mask`` (see
  :class:`~qbert4rec_lib.models.base.SequentialRecommender`) gives cold items a -inf logit in the loss of SASRec-CE,
  BERT4Rec-ID and Q-Bert4Rec, and early stopping validates on users whose validation item is warm, ranked among warm
  items only. After training the mask is lifted: the cold items "arrive".

Only the warm items' *content* encoders differ from that rule: the text encoder is pretrained (MiniLM) and the
offline image tower is a small CLIP fitted on the catalog's own (image, caption) pairs, i.e. on content, never on an
interaction (`features.fit_catalog_clip`).

Which items are cold (``by``):

* ``"time"`` (default, the realistic case: new items arrive last). The kit's datasets carry no global clock
  (``user_sequence.txt`` is per-user order only), so an interaction's time is its *relative position* in its user's
  sequence (0 = first, 1 = last: every user's sequence is taken to span the same period) and an item's arrival is its
  earliest interaction. The ``fraction`` of items arriving last are cold (ties broken by a seeded shuffle).
* ``"random"``: a seeded uniform sample of items.

Evaluation (:func:`evaluate_cold`): full ranking over **all** items (warm and cold), history excluded, pessimistic
ties, on the test targets, reported separately for *cold users* (test item cold) and *warm users*: HR@10, NDCG@10,
HR@50 and the median rank of the target (HR@10 alone hides the signal on small catalogs). Users whose *validation*
item is cold (never used for early stopping) form the cold validation set that picks the stage-1 path below.

**A new item's semantic ID** (:func:`cold_semantic_ids`) comes from its content through the *frozen* stages 1-2.
Stage 1 needs a query for an item that has no trained ID query (and it has no structural features); four paths
(``QUERY_PATHS``):

* ``"content"``: the mean trained query of the item's ``content_k`` nearest warm items by content (cosine of the
  concatenated, L2-normalised text and image vectors). A new item borrows the ID queries of items that look like it.
* ``"mean"``: the mean of all trained queries (the same query for every new item; only the content differs).
* ``"unknown"``: a learned "unknown item" query, fitted after stage 1 with every stage-1 weight frozen
  (:func:`~qbert4rec_lib.semantic.fusion.fit_unknown_query`) to minimise the multi-view loss of the warm items when they use
  it and their structural modality is hidden, as a new item's is.
* ``"content+structure"``: the ``"content"`` query, and a structural vector imputed as the mean structural vector of
  the same content neighbours (so the item enters stage 1 with every modality a warm item has).

The path is chosen on the cold *validation* users (:func:`run_cold_start`'s ``chosen_path``), never on test users.
Measured (3 seeds, ``figures/results/coldstart_default.md``): the cold validation set is small (~150 users on the
default catalog), so the choice is noisy — on one machine ``content+structure`` won it (cold-validation NDCG@10 0.026
vs 0.012-0.017), on another ``content`` (0.031 vs 0.008 for content+structure, which then did best on test). Warm
items sent through a path land on their own level-1 code only 32-41 % of the time (the trained ID query and the
structural features shape the warm IDs; a new item has neither). Raw-text IDs (no stage 1) do not have this gap: their new-item path is the training path.

The fused vector is quantized by the trained RQ-VAE (:func:`~qbert4rec_lib.semantic.quantize.encode_frozen`: same
standardisation, encoder and codebooks), and a cold item whose codes equal existing items' codes takes the next
disambiguation token (:func:`~qbert4rec_lib.semantic.quantize.extend_ids`); warm IDs never change. The raw-text variant
(no stage 1) quantizes the text vectors the same way. Every path's table is computed before the sequence model
trains; the model trains once (cold rows never reach its loss) and is evaluated with each path's cold rows.

**Baselines.** SASRec-CE and BERT4Rec-ID: a cold item's embedding row is never updated (masked out of every softmax,
never an input), so it keeps its random initial value: the model knows nothing about it. Popularity: a cold item has
no training interaction, count 0, ranked last. :class:`ContentKNN`: the honest bar for cold items, no training at
all: an item's score is the cosine between its content vector and the mean content vector of the user's last ``k``
items (``k`` chosen on warm validation users).
"""
from __future__ import annotations

from pathlib import Path

import json
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.dataset import LeaveOneOutSplit
from .evaluate import EvalConfig, EvalResult, evaluate
from ..models.base import SequentialRecommender

__all__ = [
    "ColdStart", "cold_start_split", "dial_table", "evaluate_users", "first_appearance", "SPLITS", "QUERY_PATHS",
    "ColdIDs", "cold_semantic_ids", "ContentKNN", "content_vectors", "train_cold_model", "evaluate_cold",
    "COLD_EVAL", "ColdStartReport", "run_cold_start", "cold_start_table", "run_dial", "dial_rows", "DIAL_MODELS",
]

SPLITS = ("time", "random")
QUERY_PATHS = ("content", "mean", "unknown", "content+structure")
COLD_EVAL = EvalConfig(ks_hr=(10, 50), ks_ndcg=(10,))  # the cold-start metrics: HR@10, HR@50, NDCG@10 (+ MRR)
MODELS = ("Q-Bert4Rec", "Q-Bert4Rec (raw-text IDs)", "SASRec-CE", "BERT4Rec-ID", "Content k-NN", "Popularity")


# ---- the split -------------------------------------------------------------------------------
@dataclass
class ColdStart:
    """Items that do not exist at training time, and the splits without them."""

    split: LeaveOneOutSplit  # cold items removed from training parts and every history; targets as they are
    cold_items: np.ndarray  # int64 ids held out (sorted)
    cold_users: np.ndarray  # int64 user indices whose test target is a cold item
    warm_users: np.ndarray  # the other users
    train_split: LeaveOneOutSplit | None = None  # `split` with validation restricted to warm validation targets
    cold_valid_users: np.ndarray | None = None  # users whose validation target is cold (stage-1 path selection)
    train_full: list | None = None  # untruncated warm training sequences (structural features)
    by: str = "random"
    fraction: float = 0.1
    seed: int = 0

    @property
    def is_cold(self) -> np.ndarray:
        """bool ``[N + 1]`` indexed by item id."""
        mask = np.zeros(self.split.num_items + 1, dtype=bool)
        mask[self.cold_items] = True
        return mask

    @property
    def warm_rows(self) -> np.ndarray:
        """Rows (item id - 1) of the warm items, ascending."""
        return np.flatnonzero(~self.is_cold[1:])

    def train_item_mask(self) -> torch.Tensor:
        """bool ``[N + 1]``: True for the items that exist at training time (index 0 = padding, False)."""
        mask = torch.from_numpy(~self.is_cold)
        mask[0] = False
        return mask

    def key(self) -> str:
        from ..cache import stable_hash

        return stable_hash("coldstart-v1", self.by, self.fraction, self.seed, self.cold_items.tolist(),
                           self.split.max_len)

    def describe(self) -> str:
        how = ("arriving last (first appearance by relative position in the user's sequence)" if self.by == "time"
               else "drawn at random")
        return (f"{len(self.cold_items):,} of {self.split.num_items:,} items cold ({self.fraction:.0%}, {how}); "
                f"{len(self.cold_users):,} users with a cold test item, {len(self.warm_users):,} with a warm one")


def first_appearance(dataset) -> np.ndarray:
    """float ``[N + 1]``: each item's earliest interaction as a relative position in its user's sequence
    (0 = a first item, 1 = a last item; the time proxy of ``by="time"``). Index 0 and unseen items: +inf."""
    first = np.full(dataset.num_items + 1, np.inf)
    for s in dataset.sequences:
        s = np.asarray(s, dtype=np.int64)
        np.minimum.at(first, s, np.arange(len(s)) / max(len(s) - 1, 1))
    return first


def cold_start_split(dataset, fraction: float = 0.1, *, by: str = "time", seed: int = 0,
                     max_len: int = 50) -> ColdStart:
    """Hold out ``fraction`` of the items from training entirely (and from every history); see the module doc.

    Test targets stay as they are: users whose test target is a cold item measure how well a model recommends an item
    it has never seen in an interaction.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if by not in SPLITS:
        raise ValueError(f"by must be one of {SPLITS}, got {by!r}")
    base = dataset.split(max_len=0)
    n_cold = max(1, int(fraction * dataset.num_items))
    rng = np.random.default_rng(seed)
    if by == "random":
        cold = rng.choice(np.arange(1, dataset.num_items + 1), size=n_cold, replace=False)
    else:
        first = first_appearance(dataset)[1:]
        order = np.lexsort((rng.permutation(dataset.num_items), -first))  # latest arrival first, ties shuffled
        cold = order[:n_cold] + 1
    cold = np.sort(cold).astype(np.int64)
    is_cold = np.zeros(dataset.num_items + 1, dtype=bool)
    is_cold[cold] = True

    def drop(seqs, cut=max_len):
        out = [s[~is_cold[s]] for s in seqs]
        return [s[-cut:] if cut else s for s in out]

    split = LeaveOneOutSplit(train=drop(base.train), valid_history=drop(base.valid_history),
                             valid_target=base.valid_target, test_history=drop(base.test_history),
                             test_target=base.test_target, num_items=dataset.num_items, max_len=max_len)
    warm_valid = np.flatnonzero(~is_cold[base.valid_target])
    train_split = replace(split, valid_history=[split.valid_history[u] for u in warm_valid],
                          valid_target=split.valid_target[warm_valid])
    return ColdStart(split, cold, np.flatnonzero(is_cold[base.test_target]), np.flatnonzero(~is_cold[base.test_target]),
                     train_split=train_split, cold_valid_users=np.flatnonzero(is_cold[base.valid_target]),
                     train_full=drop(base.train, 0), by=by, fraction=fraction, seed=seed)


def evaluate_users(model, split, users: np.ndarray, cfg: EvalConfig = EvalConfig(), which: str = "test") -> EvalResult:
    """Evaluate on a subset of users (e.g. those whose target is a cold item)."""
    hist = split.test_history if which == "test" else split.valid_history
    targ = split.test_target if which == "test" else split.valid_target
    return evaluate(model, [hist[u] for u in users], targ[users], split.num_items, cfg, max_len=split.max_len,
                    split_name=f"{which} ({len(users):,} selected users)")


# ---- content vectors and the content k-NN recommender -----------------------------------------
def content_vectors(features) -> np.ndarray:
    """float32 ``[N, d]``: the concatenation of each content modality's pooled, L2-normalised vector (text, image;
    never structural), L2-normalised. A missing modality contributes zeros."""
    from ..semantic.features import pooled

    parts = [pooled(features.modalities[m]) * np.asarray(features.modalities[m].present, dtype=np.float32)[:, None]
             for m in ("text", "image") if m in features.modalities]
    if not parts:
        raise ValueError("content_vectors: the FeatureSet has neither text nor image features")
    x = np.concatenate(parts, axis=1)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class ContentKNN(SequentialRecommender):
    """Scores every item by the cosine of its content vector with the mean content vector of the user's last ``k``
    items. No training and no interaction data: a cold item is scored exactly like a warm one."""

    name = "Content k-NN"

    def __init__(self, vectors: np.ndarray, k: int = 3):
        super().__init__()
        vectors = np.asarray(vectors, dtype=np.float32)
        self.num_items, self.k = len(vectors), int(k)
        table = np.zeros((len(vectors) + 1, vectors.shape[1]), np.float32)  # row 0 = padding = zeros
        table[1:] = vectors
        self.register_buffer("vectors", torch.from_numpy(table))  # [N + 1, d]

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        recent = histories[:, -self.k:]  # [B, k] left-padded: padding rows are zero vectors
        profile = self.vectors[recent].sum(1)  # [B, d]
        profile = profile / profile.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scores = profile @ self.vectors.T  # [B, N + 1]
        scores[:, 0] = -torch.inf
        return scores


def _choose_k(vectors: np.ndarray, split, ks: Sequence[int] = (1, 2, 3, 5, 10, 50)) -> tuple[int, dict]:
    scores = {}
    for k in ks:
        r = evaluate(ContentKNN(vectors, k), split.valid_history, split.valid_target, split.num_items, EvalConfig(),
                     max_len=max(split.max_len, k))
        scores[k] = r.metrics["NDCG@10"]
    return max(scores, key=scores.get), scores


# ---- semantic IDs for new items ----------------------------------------------------------------
@dataclass
class ColdIDs:
    """Semantic IDs of every item when the cold items were absent from stages 1-2."""

    source: str  # "fused" (stages 1+2) | "raw_text" (RQ-VAE on the text vectors)
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


def cold_semantic_ids(dataset, cs: ColdStart, cfg, source: str = "fused", *, paths: Sequence[str] = QUERY_PATHS,
                      content_k: int = 10, cache_root=None, progress: bool = False) -> ColdIDs:
    """Train stages 1-2 on the warm items only and give every cold item a semantic ID through the frozen stages
    (see the module doc). ``cfg`` is an :class:`~qbert4rec_lib.experiments.presets.ExperimentConfig`. Cached."""
    from ..cache import stable_hash, stage_dir
    from ..semantic.features import build_features

    if source not in ("fused", "raw_text"):
        raise ValueError(f"source must be 'fused' or 'raw_text', got {source!r}")
    paths = tuple(paths) if source == "fused" else ("frozen",)
    unknown = set(paths) - set(QUERY_PATHS) - {"frozen"}
    if unknown:
        raise ValueError(f"unknown stage-1 path(s) {sorted(unknown)}; known: {QUERY_PATHS}")
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
    from ..semantic.fusion import _select_inputs, encode_with_queries, fit_unknown_query, train_fusion
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


# ---- training under the protocol ---------------------------------------------------------------
class _Existing(SequentialRecommender):
    """Wraps a model while it trains: ``score_all`` ranks only the items that exist (cold items at -inf), so early
    stopping validates in the catalog of training time."""

    def __init__(self, model: SequentialRecommender, mask: torch.Tensor):
        super().__init__()
        self.model, self.num_items, self.name = model, model.num_items, model.name
        self.register_buffer("absent", ~mask, persistent=False)

    def loss(self, sequences, generator=None):
        return self.model.loss(sequences, generator)

    def score_all(self, histories):
        scores = self.model.score_all(histories)
        return scores.masked_fill(self.absent.to(scores.device), float("-inf"))

    def scoring(self):
        return self.model.scoring()


def _set_cold_rows(model, table: np.ndarray) -> None:
    from ..models.qbert import _SPECIALS

    with torch.no_grad():
        model.item_tokens[1:].copy_(torch.from_numpy(table + _SPECIALS))


def train_cold_model(name: str, dataset, cs: ColdStart, cfg, *, seed: int = 0, ids: ColdIDs | None = None,
                     cache_root=None, progress: bool = False, log: Callable[[dict], None] | None = None):
    """Train ``name`` (Q-Bert4Rec, SASRec-CE or BERT4Rec-ID) under the protocol, or load it from the cache. Returns
    ``(model, fits)`` (phase -> ``FitResult``) with the training mask lifted (every item scored). Q-Bert4Rec reads ``ids`` (its first path's
    table; the cold rows never reach the loss, so any path gives the same model)."""
    from safetensors.torch import save_file

    from ..models.baselines import BERT4RecID, SASRec
    from ..cache import stable_hash, stage_dir
    from ..config import seed_everything
    from .runs import _baseline_train, _fit_from_json, _fit_json
    from ..models.qbert import QBert4Rec
    from .train import fit

    relevant: dict = {"max_len": cfg.max_len, "eval": cfg.eval}
    if name == "Q-Bert4Rec":
        if ids is None:
            raise ValueError("train_cold_model('Q-Bert4Rec') needs ids (cold_semantic_ids)")
        warm = ids.tables[ids.paths[0]][cs.warm_rows]
        relevant |= {"ids": stable_hash(ids.source, warm.tolist(), ids.vocab_sizes), "qbert": cfg.qbert,
                     "pretrain": cfg.pretrain if cfg.do_pretrain else None,
                     "pretrain_masks": cfg.pretrain_masks if cfg.do_pretrain else None,
                     "finetune": cfg.finetune, "finetune_masks": cfg.finetune_masks}
    elif name in ("SASRec-CE", "BERT4Rec-ID"):
        relevant |= {"train": _baseline_train(name, cfg),
                     "model": replace(cfg.sasrec if name == "SASRec-CE" else cfg.bert4rec, max_len=cfg.max_len)}
    else:
        raise ValueError(f"train_cold_model trains Q-Bert4Rec, SASRec-CE or BERT4Rec-ID, not {name!r}")
    store = stage_dir("coldstart_model", dataset.fingerprint(), cs.key(), name, relevant, seed, root=cache_root)
    with store.lock():
        seed_everything(seed)
        if name == "Q-Bert4Rec":
            model = QBert4Rec(ids.tables[ids.paths[0]], ids.vocab_sizes, replace(cfg.qbert, max_len=cfg.max_len))
        elif name == "SASRec-CE":
            model = SASRec(dataset.num_items, replace(cfg.sasrec, max_len=cfg.max_len))
        else:
            model = BERT4RecID(dataset.num_items, replace(cfg.bert4rec, max_len=cfg.max_len))
        if store.usable(require=("model.safetensors",)):
            model.load_state_dict(store.load_safetensors("model.safetensors"))
            return model.eval(), {k: _fit_from_json(f) for k, f in store.meta()["fits"].items()}
        mask = cs.train_item_mask()
        model.train_item_mask = mask
        wrapped = _Existing(model, mask)
        fits = {}
        if name == "Q-Bert4Rec":
            phases = (([("pretrain", cfg.pretrain, cfg.pretrain_masks)] if cfg.do_pretrain else [])
                      + [("finetune", cfg.finetune, cfg.finetune_masks)])
        else:
            phases = [("train", _baseline_train(name, cfg), None)]
        for phase, tcfg, masks in phases:
            if masks is not None:
                model.masking = masks
            phase_log = None if log is None else (lambda e, p=phase: log({**e, "phase": p}))
            fits[phase] = fit(wrapped, cs.train_split, replace(tcfg, seed=seed, max_len=cfg.max_len),
                              eval_cfg=cfg.eval, progress=progress, log=phase_log)
        model.train_item_mask = None  # the cold items arrive
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        store.write({}, {"model": name, "seed": seed, "config": relevant,
                         "fits": {k: _fit_json(f) for k, f in fits.items()}, "protocol": cs.describe()},
                    binary={"model.safetensors": lambda p: save_file(weights, p)})
        return model.eval(), fits


def _summary(result: EvalResult) -> dict:
    m = result.metrics
    return {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"], "HR@50": m["HR@50"],
            "median_rank": float(np.median(result.ranks)), "users": int(result.num_users)}


def evaluate_cold(model, cs: ColdStart, cfg: EvalConfig = COLD_EVAL) -> dict[str, dict]:
    """``{"warm": ..., "cold": ..., "cold_valid": ...}``, each HR@10, NDCG@10, HR@50, median rank, users. ``cold_valid``
    = users whose validation item is cold, ranked from their validation history (never used in training)."""
    out = {"warm": _summary(evaluate_users(model, cs.split, cs.warm_users, cfg)),
           "cold": _summary(evaluate_users(model, cs.split, cs.cold_users, cfg))}
    if cs.cold_valid_users is not None and len(cs.cold_valid_users):
        out["cold_valid"] = _summary(evaluate_users(model, cs.split, cs.cold_valid_users, cfg, which="valid"))
    return out


# ---- the experiment --------------------------------------------------------------------------------
@dataclass
class ColdStartReport:
    rows: dict[str, list[dict]]  # row name -> one evaluate_cold dict per seed (plus "seed")
    protocol: str
    seeds: list[int]
    ids_info: dict  # source -> ColdIDs.info
    chosen_path: str  # the stage-1 path with the best cold-validation NDCG@10 (mean over seeds)
    content_k: dict  # seed -> chosen k of the content k-NN (and the validation scores)
    seconds: float
    cold_items: list = field(default_factory=list)  # the new item ids
    split_text: str = ""  # ColdStart.describe()

    def mean(self, row: str, group: str, metric: str) -> float:
        return float(np.mean([r[group][metric] for r in self.rows[row]]))

    def to_json(self) -> dict:
        agg = {row: {g: {m: {"mean": self.mean(row, g, m),
                             "std": float(np.std([r[g][m] for r in rs], ddof=1)) if len(rs) > 1 else 0.0}
                         for m in rs[0][g]} for g in ("warm", "cold", "cold_valid") if g in rs[0]}
               for row, rs in self.rows.items()}
        return {"protocol": self.protocol, "split": self.split_text, "cold_items": self.cold_items, "seeds": self.seeds, "chosen_path": self.chosen_path, "mean_std": agg,
                "runs": self.rows, "ids": self.ids_info, "content_k": self.content_k, "seconds": self.seconds}

    def table(self) -> str:
        return cold_start_table(self)


def run_cold_start(dataset, cfg, *, fraction: float = 0.1, by: str = "time", seeds: Sequence[int] = (0,),
                   models: Sequence[str] = MODELS, paths: Sequence[str] = QUERY_PATHS, cache_root=None,
                   progress: bool = False, log: Callable[[str], None] | None = print) -> ColdStartReport:
    """The warm/cold table: every model in ``models`` under the protocol, for each seed (the split and stages 1-2
    are fixed; the seed changes the sequence models' initialisation, batches and masks)."""
    from ..models.baselines import Popularity
    from ..semantic.features import build_features

    t0 = time.perf_counter()
    cs = cold_start_split(dataset, fraction, by=by, seed=0, max_len=cfg.max_len)
    say = log or (lambda _m: None)
    say(f"cold start: {cs.describe()}")
    rows: dict[str, list[dict]] = {}
    ids_info, content_k = {}, {}
    fused = cold_semantic_ids(dataset, cs, cfg, "fused", paths=paths, cache_root=cache_root, progress=progress) \
        if "Q-Bert4Rec" in models else None
    raw = cold_semantic_ids(dataset, cs, cfg, "raw_text", cache_root=cache_root, progress=progress) \
        if "Q-Bert4Rec (raw-text IDs)" in models else None
    for src in (fused, raw):
        if src is not None:
            ids_info[src.source] = src.info
    vectors = None
    if "Content k-NN" in models:
        full_split = replace(cs.split, train=cs.train_full, max_len=0)
        vectors = content_vectors(build_features(dataset, cfg.features, split=full_split, cache_root=cache_root,
                                                 progress=progress))

    def add(row: str, seed: int, result: dict) -> None:
        rows.setdefault(row, []).append({"seed": int(seed)} | result)
        c, w = result["cold"], result["warm"]
        say(f"{row} seed {seed}: warm HR@10 {w['HR@10']:.4f} | cold HR@10 {c['HR@10']:.4f} HR@50 {c['HR@50']:.4f} "
            f"median rank {c['median_rank']:.0f}")

    for seed in seeds:
        if fused is not None:
            model, _ = train_cold_model("Q-Bert4Rec", dataset, cs, cfg, seed=seed, ids=fused, cache_root=cache_root,
                                        progress=progress)
            for path in fused.paths:
                _set_cold_rows(model, fused.tables[path])
                add(f"Q-Bert4Rec (fused IDs, {path} query)", seed, evaluate_cold(model, cs))
        if raw is not None:
            model, _ = train_cold_model("Q-Bert4Rec", dataset, cs, cfg, seed=seed, ids=raw, cache_root=cache_root,
                                        progress=progress)
            add("Q-Bert4Rec (raw-text IDs)", seed, evaluate_cold(model, cs))
        for name in ("SASRec-CE", "BERT4Rec-ID"):
            if name in models:
                model, _ = train_cold_model(name, dataset, cs, cfg, seed=seed, cache_root=cache_root, progress=progress)
                add(name, seed, evaluate_cold(model, cs))
        if vectors is not None:
            k, scores = _choose_k(vectors, cs.train_split)
            content_k[int(seed)] = {"k": k, "valid_NDCG@10": scores}
            add("Content k-NN", seed, evaluate_cold(ContentKNN(vectors, k), cs))
        if "Popularity" in models:
            add("Popularity", seed, evaluate_cold(Popularity(cs.split.train_item_counts()), cs))
    chosen = ""
    if fused is not None:
        cand = {p: np.mean([r["cold_valid"]["NDCG@10"] for r in rows[f"Q-Bert4Rec (fused IDs, {p} query)"]])
                for p in fused.paths if "cold_valid" in rows[f"Q-Bert4Rec (fused IDs, {p} query)"][0]}
        chosen = max(cand, key=cand.get) if cand else fused.paths[0]
    protocol = (f"{cs.describe()}. Cold items absent from stages 1-2 and every training softmax; "
                f"full ranking over all {dataset.num_items:,} items, history excluded, pessimistic ties, test split.")
    return ColdStartReport(rows, protocol, [int(s) for s in seeds], ids_info, chosen, content_k,
                           time.perf_counter() - t0, cs.cold_items.tolist(), cs.describe())


def cold_start_table(report: ColdStartReport) -> str:
    """Markdown: one row per model, warm-user and cold-user metrics (mean ± std over seeds)."""
    cols = [("warm", "HR@10"), ("warm", "NDCG@10"), ("warm", "HR@50"), ("cold", "HR@10"), ("cold", "NDCG@10"),
            ("cold", "HR@50"), ("cold", "median_rank")]
    lines = ["| model | " + " | ".join(f"{g} {m.replace('median_rank', 'median rank')}" for g, m in cols)
             + " | cold / warm HR@10 | seeds |", "|---|" + "---|" * (len(cols) + 2)]
    for row, rs in report.rows.items():
        cells = []
        for g, m in cols:
            v = np.array([r[g][m] for r in rs])
            fmt = "{:.0f}" if m == "median_rank" else "{:.4f}"
            cells.append(fmt.format(v.mean()) + (f" ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 else ""))
        warm = report.mean(row, "warm", "HR@10")
        ratio = f"{report.mean(row, 'cold', 'HR@10') / warm:.2f}" if warm > 0 else "n/a"
        mark = " (chosen on cold validation)" if report.chosen_path and f", {report.chosen_path} query)" in row else ""
        lines.append(f"| {row}{mark} | " + " | ".join(cells) + f" | {ratio} | {len(rs)} |")
    return "\n".join(lines) + f"\n\nProtocol: {report.protocol} Seeds: {report.seeds}.\n"


# ---- the dial: from content-driven to ID-driven worlds ------------------------------------------
DIAL_MODELS = ("Q-Bert4Rec", "SASRec-CE", "Content k-NN")


def run_dial(cfg, values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *, seeds: Sequence[int] = (0,),
             path: str = "unknown", fraction: float = 0.1, by: str = "time", models: Sequence[str] = DIAL_MODELS,
             synthetic: dict | None = None, cache_root=None, log: Callable[[str], None] | None = print) -> list[dict]:
    """Sweep :attr:`~qbert4rec_lib.data.synthetic.SyntheticConfig.id_driven` (0 = next items follow attributes, 1 = they
    follow item-specific follow-ups no attribute explains): for each value generate the catalog (``synthetic``:
    other generator overrides), run the cold-start protocol and keep every model's warm- and cold-user metrics.
    Returns one dict per value: ``{"id_driven", "dataset", "report": ColdStartReport.to_json()}``."""
    from ..data.synthetic import load_default

    out = []
    for value in values:
        ds = load_default(root=cache_root, id_driven=float(value), **(synthetic or {}))
        report = run_cold_start(ds, cfg, fraction=fraction, by=by, seeds=seeds, models=models, paths=(path,),
                                cache_root=cache_root, log=None)
        stats = ds.stats() | {"load_report": None}
        stats["source"] = Path(str(stats.get("source", ""))).name  # the cache folder's name, not a machine path
        out.append({"id_driven": float(value), "dataset": stats,
                    "report": report.to_json()})
        if log:
            log(f"id_driven {value}: " + "; ".join(
                f"{row} warm NDCG@10 {report.mean(row, 'warm', 'NDCG@10'):.4f} cold {report.mean(row, 'cold', 'NDCG@10'):.4f}"
                for row in report.rows))
    return out


def dial_table(points: list[dict], metric: str = "NDCG@10") -> str:
    """Markdown: one row per model, one column per dial value, cells ``warm / cold`` test ``metric`` (mean over
    seeds), then the protocol of the first point."""
    if not points:
        return "(no dial points)\n"
    values = [p["id_driven"] for p in points]
    lines = ["| model | " + " | ".join(f"id_driven {v:g}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for row in points[0]["report"]["mean_std"]:
        cells = []
        for p in points:
            g = p["report"]["mean_std"][row]
            cells.append(f"{g['warm'][metric]['mean']:.4f} / {g['cold'][metric]['mean']:.4f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    first = points[0]["report"]
    return ("\n".join(lines) + f"\n\nCells: warm-user / cold-user test {metric} (mean over seeds "
            f"{first['seeds']}). Protocol: {first['protocol']}\n")


def dial_rows(points: list[dict]) -> dict[str, dict[str, list[float]]]:
    """``{row: {"warm": [NDCG@10 per point], "cold": [...]}}`` from :func:`run_dial`'s output."""
    rows: dict[str, dict[str, list[float]]] = {}
    for p in points:
        for row, groups in p["report"]["mean_std"].items():
            for g in ("warm", "cold"):
                rows.setdefault(row, {}).setdefault(g, []).append(groups[g]["NDCG@10"]["mean"])
    return rows
