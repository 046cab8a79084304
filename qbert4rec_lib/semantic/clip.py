"""The offline image encoder: a small ``open_clip.CLIP`` fitted with ``open_clip.ClipLoss`` on the catalog's own
(image, caption) pairs (``FeatureConfig.image_model="fit"``), seeded and CPU-sized; its image tower encodes the
items (:class:`~qbert4rec_lib.semantic.encoders.ImageEncoder`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np

from .encoders import _clean, _device, _open_rgb, item_texts

if TYPE_CHECKING:
    from .features import FeatureConfig

__all__ = ["FittedClip", "fit_catalog_clip", "catalog_clip"]


class FittedClip(NamedTuple):
    model: object  # the trained open_clip.CLIP (eval mode)
    preprocess: Callable  # open_clip.image_transform of the fit's image size
    epoch_losses: list[float]  # mean ClipLoss per epoch
    config: dict  # the architecture and training settings


def fit_catalog_clip(paths: Sequence[str], captions: Sequence[str], cfg: FeatureConfig | None = None,
                     *, progress: bool = True) -> FittedClip:
    """Train a small ``open_clip.CLIP`` with ``ClipLoss`` on (image, caption) pairs; seeded, CPU-sized.
    ``cfg``: the ``image_fit_*`` fields of a :class:`~qbert4rec_lib.semantic.features.FeatureConfig` (default one
    if None)."""
    import open_clip
    import torch
    from tqdm.auto import tqdm

    if cfg is None:
        from .features import FeatureConfig  # features imports this module

        cfg = FeatureConfig()

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
