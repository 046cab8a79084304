"""Stage 1 of Q-Bert4Rec: dynamic cross-modal semantic injection (the "fusion" stage).

Every item ``i`` owns a randomly initialised, learnable ID vector ``q_i``: the *query*. The item's
modality features (text, image, structural; any subset, with per-item masks for missing ones) are
the keys and values. The output is one fused vector ``h_i`` per item, the input of stage 2
(:mod:`qbert4rec_lib.semantic.quantize`).

1.-3. **The model** (:class:`~qbert4rec_lib.semantic.fusion_model.FusionModel`, in
   :mod:`qbert4rec_lib.semantic.fusion_model`): similarity-based alignment of each modality's vectors to the query,
   a dynamic cross-modal transformer from ``h^(0) = q_i`` over the ID token and one aligned token per modality, and
   gated depth (a soft gated residual in training, a hard early exit at inference).
4. **Multi-view contrastive loss.** A symmetric InfoNCE with in-batch negatives between the
   projected fused vector and each present modality view, plus (weighted) InfoNCE terms between
   pairs of modalities. Items lacking a modality drop out of that term. **Modality dropout**
   hides each present modality from the attention with probability ``modality_dropout`` during
   training while its view stays a target, so the fused vector must infer a hidden modality from
   the others. The depth penalty is ``depth_penalty * max(0, mean expected depth - depth_budget)``.

The paper's text gives only the equations of these steps (from third-party summaries; those of steps 1-3 are
written out in :mod:`~qbert4rec_lib.semantic.fusion_model`). Everything else is
a :class:`FusionConfig` field, with the default named there: the width, tau, the number of
blocks, the heads, the gate form (soft gated residual in training, hard exit at inference), the
exit threshold, the depth penalty and budget, the initial gate bias, the contrastive temperature,
the weight of the modality-pair terms, modality dropout, the ID token in the context, the
optimiser and schedule. Which modalities exist is decided by the data: a dataset without images
has no image modality, and ``modalities=("text",)`` selects a subset for ablations.

Two defaults come from measurements on Amazon Beauty (text + structural) and the embedded default:

* ``depth_budget = 2``: with a plain linear penalty (``depth_budget = 0``) the gates of *all*
  items fall together until every item exits after block 1, because one cross-attention block
  already lets the query copy its modality tokens. A budget keeps the mean expected depth near 2
  and leaves it to the item-specific benefit of depth which items go deeper (with modality
  dropout the gate after block 1 then varies per item and per category).
* ``contrastive_temperature = 0.2``: 0.07 identified items sharply but clustered them less by
  category (10-NN top-category purity of the fused vectors on Beauty 0.67 vs 0.74 with 0.2).

:func:`train_fusion` trains on a :class:`~qbert4rec_lib.semantic.features.FeatureSet`. :func:`run_fusion`
does the same through the content-addressed cache (a second call is a cache hit).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import stage_dir
from ..config import from_dict, to_dict, torch_threads
from ..keys import digest
from .epochs import EpochLoop
from .fusion_model import DynamicCrossModalBlock, FusionModel, FusionOutput  # noqa: F401 - the block: re-exported

__all__ = [
    "FusionConfig",
    "FusionResult",
    "FusionModel",
    "FusionOutput",
    "DynamicCrossModalBlock",
    "info_nce",
    "train_fusion",
    "run_fusion",
    "features_key",
]


@dataclass(frozen=True)
class FusionConfig:
    width: int = 128  # shared latent width of the ID query, the modality tokens and the fused h_i
    tau: float = 0.1  # temperature of the alignment softmax over an item's vectors j within one modality
    max_depth: int = 4  # L_max: number of dynamic cross-modal blocks
    heads: int = 4  # attention heads per block
    ffn_mult: int = 2  # feed-forward hidden width = ffn_mult * width
    dropout: float = 0.0  # dropout inside attention and feed-forward layers
    gate: str = "dynamic"  # "dynamic" = per-item gated depth; "off" = every item runs all blocks (ablation)
    exit_threshold: float = 0.5  # inference: an item exits after block l when g^(l) < exit_threshold
    depth_penalty: float = 0.05  # loss weight of the depth penalty: depth_penalty * max(0, mean expected depth - depth_budget)
    depth_budget: float = 2.0  # mean expected depth allowed for free (0 = plain linear penalty on the depth)
    gate_init_bias: float = 2.0  # initial gate bias: sigmoid(2) = 0.88, so items start deep and learn to stop
    contrastive_temperature: float = 0.2  # temperature of every InfoNCE term
    modality_dropout: float = 0.3  # training: chance to hide each present modality from the attention (views stay targets)
    modality_pair_weight: float = 0.5  # weight of the modality<->modality InfoNCE terms (0 = fused<->view only)
    modalities: tuple = ()  # modalities to fuse; () = every modality the FeatureSet has
    id_init_std: float = 0.02  # std of the random initialisation of the ID vectors q_i
    epochs: int = 20  # passes over all items
    batch_size: int = 256  # items per step (also the number of in-batch negatives + 1)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    seed: int = 0  # seeds initialisation and batch order
    # training: share of each batch's items whose ID query is replaced by the shared new-item query q_new, their
    # structural modality hidden (DropoutNet-style; fusion_model.py, point 4). 0 = off (the paper's stage 1).
    id_dropout: float = field(default=0.0, metadata={"key_neutral": 0.0})
    # training: weight of an InfoNCE term matching each item's fused h_i (own query) with its content-only h_i
    # (q_new, no structural modality), so new items land where their warm look-alikes are. Needs id_dropout > 0.
    id_consistency: float = field(default=0.0, metadata={"key_neutral": 0.0})
    # optimiser of the ID-query table q: "adamw" (dense, with the rest; its step costs O(items) -- at 200k items
    # more than half of a step) | "sparse_adam" (sparse gradients, lazy Adam on the batch's rows, no weight decay)
    query_optimizer: str = field(default="adamw", metadata={"key_neutral": "adamw"})

    def __post_init__(self) -> None:
        from ..config import check_config

        object.__setattr__(self, "modalities", tuple(self.modalities))  # a list from JSON / the CLI becomes a tuple
        check_config(self, ranges={
            "width": "[1, inf)", "tau": "(0, inf)", "max_depth": "[1, inf)", "heads": "[1, inf)",
            "ffn_mult": "[1, inf)", "dropout": "[0, 1)", "exit_threshold": "[0, 1]", "depth_penalty": "[0, inf)",
            "depth_budget": "[0, inf)", "contrastive_temperature": "(0, inf)", "modality_dropout": "[0, 1)",
            "modality_pair_weight": "[0, inf)", "id_init_std": "[0, inf)", "epochs": "[1, inf)",
            "batch_size": "[1, inf)", "lr": "(0, inf)", "weight_decay": "[0, inf)", "id_dropout": "[0, 1)",
            "id_consistency": "[0, inf)"},
            choices={"gate": ("dynamic", "off"), "modalities": ("text", "image", "structural"),
                     "query_optimizer": ("adamw", "sparse_adam")})
        if self.gate not in ("dynamic", "off"):
            raise ValueError(f"FusionConfig.gate must be 'dynamic' or 'off', got {self.gate!r}")
        if self.width % self.heads:
            raise ValueError(f"FusionConfig.width ({self.width}) must be divisible by heads ({self.heads})")
        if self.max_depth < 1:
            raise ValueError("FusionConfig.max_depth must be >= 1")
        if self.id_consistency > 0 and self.id_dropout == 0:
            raise ValueError("FusionConfig.id_consistency > 0 needs id_dropout > 0 (it trains the new-item query)")


@dataclass
class FusionResult:
    """Stage-1 output: one fused vector per item (row k = item id k + 1) and how it was made."""

    embeddings: np.ndarray  # float32 [N, width], the fused h_i
    exit_depth: np.ndarray  # int64 [N], blocks each item ran at inference (1..max_depth)
    modality_weights: np.ndarray  # float32 [N, M], attention on each modality token (layers and heads averaged)
    id_attention: np.ndarray  # float32 [N], attention on the item's own ID token (1 - sum of modality weights)
    modality_present: np.ndarray  # bool [N, M], which modalities each item has
    gate_values: np.ndarray  # float32 [N, max_depth - 1], inference gates g^(l) (NaN after the exit; empty if gate="off")
    modality_names: tuple[str, ...]
    history: list[dict]  # per epoch: loss, contrastive, per-view losses, mean expected depth
    config: FusionConfig
    seconds: float  # training time
    from_cache: bool = False
    key: str = ""  # cache key (empty when not cached)
    model: Any = dataclasses.field(default=None, repr=False, compare=False)  # the trained FusionModel (fresh runs only)

    def summary(self) -> dict:
        """JSON-able health figures (for the CLI and notebooks)."""
        depth_counts = np.bincount(self.exit_depth, minlength=self.config.max_depth + 1)[1:]
        return {
            "items": int(len(self.embeddings)),
            "width": int(self.embeddings.shape[1]),
            "modalities": list(self.modality_names),
            "epochs": len(self.history),
            "final_loss": round(float(self.history[-1]["loss"]), 4) if self.history else None,
            "mean_exit_depth": round(float(self.exit_depth.mean()), 3),
            "exit_depth_counts": {str(d + 1): int(c) for d, c in enumerate(depth_counts)},
            "mean_modality_weight": {m: round(float(w), 4) for m, w in zip(self.modality_names, self.modality_weights.mean(0))},
            "seconds": round(float(self.seconds), 2),
            "from_cache": self.from_cache,
        }


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives: row i of ``a`` should match row i of ``b``."""
    logits = a @ b.T / temperature  # [B, B]
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class LossParts(NamedTuple):
    loss: torch.Tensor  # scalar to backpropagate
    contrastive: torch.Tensor  # scalar: mean fused<->view term + weighted mean modality-pair term
    terms: dict[str, float]  # each InfoNCE term by name ("fused~text", "text~image", ...)


def multi_view_loss(out: FusionOutput, present: torch.Tensor, names: tuple[str, ...], cfg: FusionConfig) -> LossParts:
    """The multi-view contrastive loss plus the depth penalty (rows lacking a modality drop out of its terms)."""
    temp, terms = cfg.contrastive_temperature, {}
    fused_terms, pair_terms = [], []
    for m, name in enumerate(names):
        rows = present[:, m]
        if rows.sum() >= 2:
            value = info_nce(out.projected[rows], out.views[rows, m], temp)
            fused_terms.append(value)
            terms[f"fused~{name}"] = float(value.detach())
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            rows = present[:, a] & present[:, b]
            if cfg.modality_pair_weight > 0 and rows.sum() >= 2:
                value = info_nce(out.views[rows, a], out.views[rows, b], temp)
                pair_terms.append(value)
                terms[f"{names[a]}~{names[b]}"] = float(value.detach())
    zero = out.projected.sum() * 0.0
    contrastive = (torch.stack(fused_terms).mean() if fused_terms else zero)
    if pair_terms:
        contrastive = contrastive + cfg.modality_pair_weight * torch.stack(pair_terms).mean()
    loss = contrastive
    if cfg.gate == "dynamic" and cfg.depth_penalty > 0:
        loss = loss + cfg.depth_penalty * torch.relu(out.expected_depth.mean() - cfg.depth_budget)
    return LossParts(loss, contrastive.detach(), terms)


# ---- training ------------------------------------------------------------------------------





@dataclass
class _Inputs:
    names: tuple[str, ...]
    features: dict[str, torch.Tensor]  # name -> [N, J, d]
    present: torch.Tensor  # [N, M] bool


def _select_inputs(features, cfg: FusionConfig) -> _Inputs:
    available = dict(features.modalities)
    names = tuple(cfg.modalities) or tuple(m for m in ("text", "image", "structural") if m in available) + tuple(
        sorted(m for m in available if m not in ("text", "image", "structural")))
    if not names:
        raise ValueError(f"FeatureSet has no modality to fuse (absent: {dict(features.absent)})")
    num_items = None
    tensors, present = {}, []
    for name in names:
        if name not in available:
            why = features.absent.get(name, "not in the FeatureSet")
            raise ValueError(f"FusionConfig.modalities asks for {name!r}, which is absent: {why}; "
                             f"available: {sorted(available)}")
        mod = available[name]
        vectors = np.asarray(mod.vectors, dtype=np.float32)
        if vectors.ndim == 2:
            vectors = vectors[:, None, :]
        if vectors.ndim != 3:
            raise ValueError(f"modality {name!r}: vectors must be [N, J, d], got shape {vectors.shape}")
        if num_items is None:
            num_items = vectors.shape[0]
        if vectors.shape[0] != num_items or np.asarray(mod.present).shape != (num_items,):
            raise ValueError(f"modality {name!r}: {vectors.shape[0]} rows / present {np.asarray(mod.present).shape}, "
                             f"expected {num_items} items")
        if not np.isfinite(vectors).all():
            raise ValueError(f"modality {name!r}: vectors contain NaN or inf")
        tensors[name] = torch.from_numpy(np.ascontiguousarray(vectors))
        present.append(torch.from_numpy(np.asarray(mod.present, dtype=bool)))
    return _Inputs(names, tensors, torch.stack(present, dim=1))


def _batch(inputs: _Inputs, rows: torch.Tensor, device: str):
    feats = {m: inputs.features[m][rows].to(device) for m in inputs.names}
    return rows.to(device), feats, inputs.present[rows].to(device)


def train_fusion(features, cfg: FusionConfig = FusionConfig(), *, progress: bool = True, device: str = "cpu",
                 threads: int = 1) -> FusionResult:
    """Train stage 1 on a FeatureSet and return every item's fused embedding (no caching).

    ``device`` is ``"cpu"`` or ``"cuda"``; ``threads`` torch CPU threads during training (0 = unchanged).
    """
    with torch_threads(threads):
        return _train_fusion(features, cfg, progress=progress, device=device)


def _train_fusion(features, cfg: FusionConfig, *, progress: bool, device: str) -> FusionResult:
    inputs = _select_inputs(features, cfg)
    num_items = next(iter(inputs.features.values())).shape[0]
    torch.manual_seed(cfg.seed)
    model = FusionModel(num_items, {m: inputs.features[m].shape[-1] for m in inputs.names}, cfg).to(device)
    loop = EpochLoop(model, cfg, num_items, desc="fusion", progress=progress)
    for epoch, order in loop:
        for rows in loop.batches(order):
            if len(rows) < 2:
                continue
            rows, feats, present = _batch(inputs, rows, device)
            attend = None
            if cfg.modality_dropout > 0:
                keep = torch.rand(present.shape, generator=loop.generator) >= cfg.modality_dropout  # [B, M]
                attend = present & keep.to(device)
            new_item = None
            if cfg.id_dropout > 0:  # these items train as new ones: q_new as their query, every content modality
                new_item = (torch.rand(len(rows), generator=loop.generator) < cfg.id_dropout).to(device)  # [B]
                as_new = present.clone()  # [B, M]: what a new item has (no modality dropout on top: content only)
                if "structural" in inputs.names:
                    as_new[:, inputs.names.index("structural")] = False
                attend = torch.where(new_item.unsqueeze(1), as_new, present if attend is None else attend)
            out = model(rows, feats, present, hard_exit=False, attend=attend, new_item=new_item)
            parts = multi_view_loss(out, present, inputs.names, cfg)
            loss, extra = parts.loss, {}
            if cfg.id_consistency > 0:  # own-query h_i <-> content-only h_i of the same item (in-batch negatives)
                content_only = model(rows, feats, present, hard_exit=False, attend=as_new,
                                     new_item=torch.ones_like(new_item))
                consistency = info_nce(F.normalize(out.fused, dim=-1), F.normalize(content_only.fused, dim=-1),
                                       cfg.contrastive_temperature)
                loss, extra = loss + cfg.id_consistency * consistency, {"id~new_item": float(consistency.detach())}
            loop.step(loss)
            loop.log({"loss": float(loss.detach()), "contrastive": float(parts.contrastive),
                      "mean_depth": float(out.expected_depth.detach().mean())} | parts.terms | extra)
        record = loop.end_epoch(epoch)
        loop.bar.set_postfix(loss=f"{record['loss']:.3f}", depth=f"{record['mean_depth']:.2f}")
    seconds = loop.seconds()
    encoded = encode_items(model, inputs, device=device)
    return FusionResult(
        embeddings=encoded["fused"], exit_depth=encoded["exit_depth"], modality_weights=encoded["modality_weights"],
        id_attention=encoded["id_attention"], modality_present=inputs.present.numpy().copy(),
        gate_values=encoded["gate_values"] if cfg.gate == "dynamic" else encoded["gate_values"][:, :0],
        modality_names=inputs.names, history=loop.history, config=cfg, seconds=seconds, model=model,
    )


@torch.no_grad()
def encode_items(model: FusionModel, inputs: _Inputs, *, batch_size: int = 1024, device: str = "cpu") -> dict:
    """Inference pass with hard early exit over all items (row order = item id order)."""
    model.eval()
    num_items = inputs.present.shape[0]
    chunks: dict[str, list] = {"fused": [], "exit_depth": [], "modality_weights": [], "id_attention": [], "gate_values": []}
    for first in range(0, num_items, batch_size):
        rows = torch.arange(first, min(first + batch_size, num_items))
        out = model(*_batch(inputs, rows, device), hard_exit=True)
        for name in chunks:
            chunks[name].append(getattr(out, name).cpu())
    return {
        "fused": torch.cat(chunks["fused"]).numpy().astype(np.float32),
        "exit_depth": torch.cat(chunks["exit_depth"]).numpy().astype(np.int64),
        "modality_weights": torch.cat(chunks["modality_weights"]).numpy().astype(np.float32),
        "id_attention": torch.cat(chunks["id_attention"]).numpy().astype(np.float32),
        "gate_values": torch.cat(chunks["gate_values"]).numpy().astype(np.float32),
    }


# ---- caching -------------------------------------------------------------------------------


def features_key(features) -> dict:
    """A content key for a FeatureSet: per modality its shape and a hash of vectors + mask (meta is ignored)."""
    key: dict[str, Any] = {"absent": sorted(features.absent)}
    for name, mod in sorted(features.modalities.items()):
        vectors = np.ascontiguousarray(mod.vectors, dtype=np.float32)
        key[name] = {"shape": list(vectors.shape),
                     "sha256": digest([vectors.tobytes(), np.ascontiguousarray(mod.present, dtype=bool).tobytes()])}
    return key


def run_fusion(dataset, features, cfg: FusionConfig = FusionConfig(), *, cache_root=None, progress: bool = True,
               device: str = "cpu", threads: int = 1) -> FusionResult:
    """:func:`train_fusion` through the cache: keyed by dataset fingerprint, feature content and config."""
    num_items = dataset.num_items
    for name, mod in features.modalities.items():
        if len(mod.vectors) != num_items:
            raise ValueError(f"modality {name!r} has {len(mod.vectors)} rows but dataset {dataset.name!r} has {num_items} items")
    store = stage_dir("fusion", dataset.fingerprint(), features_key(features), cfg, root=cache_root)
    with store.lock():
        if store.usable():  # complete and intact; a damaged folder is reported and rebuilt
            meta = store.meta()
            return FusionResult(
                embeddings=store.load_npy("embeddings"), exit_depth=store.load_npy("exit_depth"),
                modality_weights=store.load_npy("modality_weights"), id_attention=store.load_npy("id_attention"),
                modality_present=store.load_npy("modality_present"), gate_values=store.load_npy("gate_values"),
                modality_names=tuple(meta["modality_names"]),
                history=meta["history"], config=from_dict(FusionConfig, meta["config"]), seconds=meta["seconds"],
                from_cache=True, key=store.key,
            )
        result = train_fusion(features, cfg, progress=progress, device=device, threads=threads)
        arrays = {name: getattr(result, name) for name in
                  ("embeddings", "exit_depth", "modality_weights", "id_attention", "modality_present", "gate_values")}
        store.write(arrays, {"config": to_dict(cfg), "modality_names": list(result.modality_names),
                             "history": result.history, "seconds": result.seconds, "dataset": dataset.fingerprint(),
                             "features": features_key(features), "summary": result.summary()})
        return dataclasses.replace(result, key=store.key)
