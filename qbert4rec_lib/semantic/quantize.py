"""Stage 2 of Q-Bert4Rec: semantic quantization with an RQ-VAE (residual vector quantization).

Each fused item vector ``h_i`` from stage 1 (:mod:`qbert4rec_lib.semantic.fusion`) is turned into a short
tuple of discrete tokens, the item's *semantic ID*: the RQ-VAE of :mod:`qbert4rec_lib.semantic.rqvae` (encoder,
``L`` residual codebooks, decoder; its equations are written out there) gives ``L`` codes per item, and one more
token makes every ID unique. This module trains it, assigns the IDs and caches them.

The paper only says "residual vector quantization" into a shared vocabulary. Everything else is a
:class:`RQVAEConfig` field, with TIGER / MQL4GRec-style defaults:

* levels ``L = 3``, codebook size ``K = 256``, code width 32, encoder MLP ``(256, 128)`` (mirrored
  decoder), ``beta = 0.25``, AdamW with lr ``1e-3``.
* **Smaller K for small catalogs** (``adapt_codebook_size``): :func:`effective_codebook_size` uses
  the largest power of two with at least 16 items per level-1 code on average, clipped to
  ``[4, K]``. Amazon Beauty (12,101 items) keeps 256; a 2,000-item catalog gets 64. Otherwise most
  level-1 codes would hold one or two items and purity would be meaningless.
* **Inputs standardised** (per dimension, z-score over items). Reproductions found RQ-VAE
  collapsing to a single code without it.
* **k-means initialisation** of each level's codebook (``kmeans_init``) and **dead-code re-seeding** after
  every epoch but the last (``reseed_dead_codes``); :mod:`~qbert4rec_lib.semantic.rqvae` says how.
* **Collisions**: items sharing all ``L`` codes get one more token, ``0, 1, 2, ...`` within the
  group in item-id order, so every semantic ID is unique. This is deterministic given the codes.
  The collision rate before that step is reported.

Health (per level: codebook usage, perplexity, dead codes; plus the share of unique IDs) is
logged every epoch and returned. Levels are numbered from 1 in every public function
(level 1 = the coarsest code). Item ids are ``1..N``; row ``k`` of every array is item ``k + 1``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_save_npy, atomic_write_json
from ..cache import stage_dir
from ..config import from_dict, to_dict, torch_threads
from ..keys import digest
from .code_health import code_health
from .epochs import EpochLoop
from .rqvae import RQVAE, _encode_all, _kmeans_init, _reseed_dead_codes
from .rqvae import RQOutput, ResidualQuantizer  # noqa: F401 - re-exported

__all__ = [
    "RQVAEConfig",
    "RQOutput",
    "ResidualQuantizer",
    "RQVAE",
    "SemanticIDTable",
    "QuantizeResult",
    "effective_codebook_size",
    "train_rqvae",
    "run_quantize",
    "disambiguate",
    "encode_frozen",
    "extend_ids",
]


@dataclass(frozen=True)
class RQVAEConfig:
    levels: int = 3  # L: number of residual codebooks (tokens per semantic ID, before disambiguation)
    codebook_size: int = 256  # K: codes per level (upper bound when adapt_codebook_size)
    adapt_codebook_size: bool = True  # shrink K for small catalogs (see effective_codebook_size)
    code_dim: int = 32  # width of the latent z and of every code vector
    encoder_hidden: tuple = (256, 128)  # encoder MLP widths; the decoder mirrors them
    beta: float = 0.25  # commitment weight
    kmeans_init: bool = True  # initialise each codebook by k-means on its level's residuals
    kmeans_iters: int = 100  # max k-means iterations per level
    reseed_dead_codes: bool = True  # move unused codes onto poorly quantized items after each epoch
    standardize: bool = True  # z-score every input dimension before the encoder
    epochs: int = 100  # passes over all items
    batch_size: int = 512  # items per step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    seed: int = 0  # seeds initialisation, k-means, batch order and re-seeding

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={
            "levels": "[1, inf)", "codebook_size": "[2, inf)", "code_dim": "[1, inf)", "encoder_hidden": "[1, inf)",
            "beta": "[0, inf)", "epochs": "[0, inf)", "batch_size": "[1, inf)", "lr": "(0, inf)",
            "weight_decay": "[0, inf)"})
        if self.levels < 1 or self.codebook_size < 2 or self.code_dim < 1:
            raise ValueError(f"RQVAEConfig: need levels >= 1, codebook_size >= 2, code_dim >= 1 (got {self})")


def effective_codebook_size(cfg: RQVAEConfig, num_items: int) -> int:
    """K actually used: ``cfg.codebook_size``, or for small catalogs the largest power of two <= N / 16 (>= 4)."""
    if not cfg.adapt_codebook_size:
        return cfg.codebook_size
    target = 2 ** int(np.floor(np.log2(max(num_items / 16, 1))))
    return int(min(cfg.codebook_size, max(4, target)))


# ---- semantic IDs ---------------------------------------------------------------------------


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """Suffix token per item: 0, 1, 2, ... within each group sharing all codes, in item-id order. ``[N, L] -> [N]``."""
    codes = np.asarray(codes)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")  # grouped, item-id order inside each group
    starts = np.cumsum(counts) - counts
    suffix = np.empty(len(codes), dtype=np.int64)
    suffix[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return suffix


@dataclass
class SemanticIDTable:
    """Item -> semantic-ID tokens (``ids`` row k = item id k + 1) and the reverse map prefix -> items."""

    ids: np.ndarray  # int64 [N, L + 1]; the last column is the disambiguation token
    vocab_sizes: tuple[int, ...]  # tokens per column (codebook size per level, then max suffix + 1)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.vocab_sizes = tuple(int(v) for v in self.vocab_sizes)
        if self.ids.ndim != 2 or self.ids.shape[1] != len(self.vocab_sizes):
            raise ValueError(f"SemanticIDTable: ids shape {self.ids.shape} does not match {len(self.vocab_sizes)} vocab sizes")
        if len(self.ids) and ((self.ids < 0).any() or (self.ids >= np.array(self.vocab_sizes)).any()):
            raise ValueError("SemanticIDTable: a token is outside its column's vocabulary")

    @property
    def num_items(self) -> int:
        return len(self.ids)

    @property
    def num_columns(self) -> int:
        return self.ids.shape[1]

    def tokens(self, item_id: int) -> tuple[int, ...]:
        if not 1 <= item_id <= self.num_items:
            raise IndexError(f"item id {item_id} outside 1..{self.num_items}")
        return tuple(int(t) for t in self.ids[item_id - 1])

    def items_with_prefix(self, prefix: Sequence[int]) -> np.ndarray:
        """Item ids (ascending) whose semantic ID starts with ``prefix``."""
        prefix = tuple(int(t) for t in prefix)
        if len(prefix) > self.num_columns:
            raise ValueError(f"prefix {prefix} longer than the {self.num_columns} tokens of an ID")
        match = np.all(self.ids[:, :len(prefix)] == np.array(prefix, dtype=np.int64), axis=1)
        return np.nonzero(match)[0] + 1

    def prefix_groups(self, level: int) -> dict[tuple[int, ...], np.ndarray]:
        """Reverse map for prefixes of length ``level`` (1..L+1): prefix -> item ids (ascending)."""
        if not 1 <= level <= self.num_columns:
            raise ValueError(f"level must be in 1..{self.num_columns}, got {level}")
        prefixes, group = np.unique(self.ids[:, :level], axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.argsort(group, kind="stable")
        bounds = np.cumsum(np.bincount(group, minlength=len(prefixes)))[:-1]
        return {tuple(int(t) for t in p): items + 1 for p, items in zip(prefixes, np.split(order, bounds))}

    def save(self, directory: str | Path) -> Path:
        """Write ``semantic_ids.npy`` + ``semantic_ids.json`` atomically into ``directory``."""
        directory = Path(directory)
        atomic_save_npy(directory / "semantic_ids.npy", self.ids)
        atomic_write_json(directory / "semantic_ids.json", {"vocab_sizes": list(self.vocab_sizes),
                                                            "num_items": self.num_items, "columns": self.num_columns})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "SemanticIDTable":
        directory = Path(directory)
        for name in ("semantic_ids.json", "semantic_ids.npy"):
            try:
                if name.endswith(".json"):
                    meta = json.loads((directory / name).read_text(encoding="utf-8"))
                else:
                    ids = np.load(directory / name, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:  # name the file: numpy and json errors do not
                raise ValueError(f"{directory / name}: cannot read ({type(exc).__name__}: {exc})") from None
        if len(ids) != meta["num_items"]:
            raise ValueError(f"{directory}: semantic_ids.npy has {len(ids)} rows, semantic_ids.json says {meta['num_items']}")
        return cls(ids, tuple(meta["vocab_sizes"]))


# ---- training ------------------------------------------------------------------------------


@dataclass
class QuantizeResult:
    """Stage-2 output: codes, unique semantic IDs and the codebooks' health."""

    codes: np.ndarray  # int64 [N, L], before disambiguation
    semantic_ids: np.ndarray  # int64 [N, L + 1], unique per item
    table: SemanticIDTable
    codebooks: np.ndarray  # float32 [L, K, code_dim]
    health: dict  # see code_health, plus reconstruction_mse
    history: list[dict]  # per epoch: losses and per-level usage / perplexity / dead codes
    config: RQVAEConfig
    codebook_size: int  # the K actually used
    seconds: float  # training time
    from_cache: bool = False
    key: str = ""
    encoder: dict | None = dataclasses.field(default=None, repr=False, compare=False)  # fresh runs only:
    # {"model": the trained RQVAE, "mean", "std": the input standardisation} (what :func:`encode_frozen` needs)

    def summary(self) -> dict:
        """JSON-able health figures (for the CLI and notebooks)."""
        return {"items": int(len(self.codes)), "codebook_size": self.codebook_size,
                "vocab_sizes": list(self.table.vocab_sizes), "unique_after": float(len(np.unique(self.semantic_ids, axis=0)) / len(self.codes)),
                "seconds": round(float(self.seconds), 2), "from_cache": self.from_cache} | self.health


def train_rqvae(embeddings: np.ndarray, cfg: RQVAEConfig = RQVAEConfig(), *, progress: bool = True,
                device: str = "cpu", threads: int = 1) -> QuantizeResult:
    """Train the RQ-VAE on ``[N, D]`` item vectors and return codes, unique semantic IDs and health (no caching).

    ``device`` is ``"cpu"`` or ``"cuda"``; ``threads`` torch CPU threads during training (0 = unchanged).
    """
    with torch_threads(threads):
        return _train_rqvae(embeddings, cfg, progress=progress, device=device)


def _train_rqvae(embeddings: np.ndarray, cfg: RQVAEConfig, *, progress: bool, device: str) -> QuantizeResult:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"train_rqvae needs a [N, D] matrix with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("train_rqvae: embeddings contain NaN or inf")
    num_items = len(x)
    codebook_size = effective_codebook_size(cfg, num_items)
    if cfg.kmeans_init and codebook_size > num_items:
        raise ValueError(f"codebook size {codebook_size} > {num_items} items: k-means cannot initialise it; "
                         "use adapt_codebook_size=True or a smaller codebook_size")
    mean, std = (x.mean(0), np.maximum(x.std(0), 1e-6)) if cfg.standardize else (0.0, 1.0)
    x = (x - mean) / std
    data = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    torch.manual_seed(cfg.seed)
    model = RQVAE(x.shape[1], cfg, codebook_size).to(device)
    if cfg.kmeans_init:
        _kmeans_init(model, data, cfg)
    loop = EpochLoop(model, cfg, num_items, desc="rq-vae", progress=progress)
    rng = np.random.default_rng(cfg.seed)
    for epoch, order in loop:
        for rows in loop.batches(order.to(device)):
            batch = data[rows]  # [B, D]
            out = model(batch)
            recon = F.mse_loss(out.reconstruction, batch)
            loss = recon + out.rq.codebook_loss + cfg.beta * out.rq.commit_loss
            loop.step(loss)
            loop.log({name: float(value.detach()) for name, value in (
                ("loss", loss), ("recon", recon), ("codebook", out.rq.codebook_loss), ("commit", out.rq.commit_loss))})
        codes, residuals, _ = _encode_all(model, data)
        health = code_health(codes, codebook_size)
        record = loop.end_epoch(epoch, {
            "usage": [lv["usage"] for lv in health["levels"]],
            "perplexity": [lv["perplexity"] for lv in health["levels"]],
            "dead": [lv["dead_codes"] for lv in health["levels"]],
            "unique_before": health["unique_before"],
            "reseeded": (_reseed_dead_codes(model, codes, residuals, rng)
                         if cfg.reseed_dead_codes and epoch < cfg.epochs - 1 else 0),
        })
        loop.bar.set_postfix(recon=f"{record['recon']:.3f}", usage1=f"{record['usage'][0]:.2f}",
                             unique=f"{record['unique_before']:.3f}")
    seconds = loop.seconds()
    codes, _, mse = _encode_all(model, data)
    codes = codes.astype(np.int64)
    semantic_ids = np.concatenate([codes, disambiguate(codes)[:, None]], axis=1)
    health = code_health(codes, codebook_size) | {"reconstruction_mse": mse}
    table = SemanticIDTable(semantic_ids, (codebook_size,) * cfg.levels + (health["max_disambiguation"] + 1,))
    return QuantizeResult(codes, semantic_ids, table, model.quantizer.codebooks.detach().cpu().numpy().copy(),
                          health, loop.history, cfg, codebook_size, seconds, encoder={"model": model, "mean": mean, "std": std})


def encode_frozen(result: QuantizeResult, embeddings: np.ndarray) -> np.ndarray:
    """Codes ``[n, L]`` of new item vectors ``[n, D]`` through the trained, frozen RQ-VAE of ``result`` (the same
    standardisation, encoder and codebooks as its training items; nothing is updated)."""
    if result.encoder is None:
        raise ValueError("encode_frozen needs a freshly trained QuantizeResult (a cached one has no model)")
    model = result.encoder["model"]
    x = (np.asarray(embeddings, dtype=np.float32) - result.encoder["mean"]) / result.encoder["std"]
    device = next(model.parameters()).device
    codes, _, _ = _encode_all(model, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
    return codes.astype(np.int64)


def extend_ids(ids: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """Semantic IDs ``[n, L + 1]`` for new items with codes ``new_codes [n, L]``, next to existing IDs ``[N, L + 1]``
    that stay as they are: a new item whose codes equal existing items' codes (or an earlier new item's) takes the
    next free disambiguation token of that group, in the given order."""
    ids, new_codes = np.asarray(ids, dtype=np.int64), np.asarray(new_codes, dtype=np.int64)
    taken: dict[tuple, int] = {}
    for row in ids:
        key = tuple(row[:-1])
        taken[key] = max(taken.get(key, -1), int(row[-1]))
    suffix = np.empty(len(new_codes), dtype=np.int64)
    for k, row in enumerate(new_codes):
        key = tuple(row)
        taken[key] = suffix[k] = taken.get(key, -1) + 1
    return np.concatenate([new_codes, suffix[:, None]], axis=1)


def run_quantize(dataset, source, cfg: RQVAEConfig = RQVAEConfig(), *, cache_root=None, source_key: str | None = None,
                 progress: bool = True, device: str = "cpu", threads: int = 1) -> QuantizeResult:
    """:func:`train_rqvae` through the cache. ``source`` is a FusionResult or an ``[N, D]`` array.

    The key is the dataset fingerprint, ``source_key`` (default: the FusionResult's cache key, else
    a hash of the array) and the config. A second call with the same inputs is a cache hit.
    """
    embeddings = np.asarray(getattr(source, "embeddings", source), dtype=np.float32)
    if len(embeddings) != dataset.num_items:
        raise ValueError(f"{len(embeddings)} embedding rows but dataset {dataset.name!r} has {dataset.num_items} items")
    if source_key is None:
        source_key = getattr(source, "key", "") or digest([np.ascontiguousarray(embeddings).tobytes()])
    store = stage_dir("quantize", dataset.fingerprint(), source_key, cfg, root=cache_root)
    with store.lock():
        if store.usable():  # complete and intact; a damaged folder is reported and rebuilt
            meta = store.meta()
            ids = store.load_npy("semantic_ids")
            return QuantizeResult(store.load_npy("codes"), ids, SemanticIDTable(ids, tuple(meta["vocab_sizes"])),
                                  store.load_npy("codebooks"), meta["health"], meta["history"],
                                  from_dict(RQVAEConfig, meta["config"]), meta["codebook_size"], meta["seconds"],
                                  from_cache=True, key=store.key)
        result = train_rqvae(embeddings, cfg, progress=progress, device=device, threads=threads)
        store.write({"codes": result.codes, "semantic_ids": result.semantic_ids, "codebooks": result.codebooks},
                    {"config": to_dict(cfg), "health": result.health, "history": result.history,
                     "vocab_sizes": list(result.table.vocab_sizes), "codebook_size": result.codebook_size,
                     "seconds": result.seconds, "dataset": dataset.fingerprint(), "source_key": source_key})
        return dataclasses.replace(result, key=store.key)
