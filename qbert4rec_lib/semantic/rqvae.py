"""The RQ-VAE of stage 2: an encoder MLP, ``L`` residual codebooks and a mirrored decoder MLP.

:mod:`qbert4rec_lib.semantic.quantize` trains it (config :class:`~qbert4rec_lib.semantic.quantize.RQVAEConfig`) and
turns its codes into semantic IDs. For an item vector ``h``:

    z = E(h);  r_0 = z;  for l = 1..L:  c_l = argmin_k ||r_{l-1} - e^l_k||^2,  r_l = r_{l-1} - e^l_{c_l}
    ẑ = sum_l e^l_{c_l};  ĥ = D(ẑ), with the straight-through estimator ẑ <- z + sg[ẑ - z]
    loss = ||h - ĥ||^2 + sum_l ( ||sg[r_{l-1}] - e^l_{c_l}||^2 + beta ||r_{l-1} - sg[e^l_{c_l}]||^2 )

Besides the model (:class:`ResidualQuantizer`, :class:`RQVAE`), the operations the training applies to it:

* **k-means initialisation** (scikit-learn ``KMeans``) of each level's codebook on that level's
  residuals of all items, before training.
* **Dead-code re-seeding**: after every epoch but the last, each code that no item uses is moved
  to the residual of an item drawn with probability proportional to its remaining quantization
  error at that level (poorly served items get their own code).

:func:`_encode_all` gives every item's codes and residuals (eval mode). Rows of every ``[N, ...]`` array are items.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .quantize import RQVAEConfig

__all__ = ["RQOutput", "ResidualQuantizer", "RQVAE", "RQVAEOutput"]


class RQOutput(NamedTuple):
    quantized: torch.Tensor  # [B, d] straight-through quantized vector (value = sum of chosen codes)
    indices: torch.Tensor  # [B, L] int64 chosen code per level
    residuals: torch.Tensor  # [B, L, d] the residual each level quantized (r_0 .. r_{L-1})
    codebook_loss: torch.Tensor  # scalar: sum_l ||sg[r_{l-1}] - e_l||^2 (moves codes)
    commit_loss: torch.Tensor  # scalar: sum_l ||r_{l-1} - sg[e_l]||^2 (moves the encoder)


class ResidualQuantizer(nn.Module):
    """L codebooks; level l quantizes what the previous levels left over (nearest code, Euclidean)."""

    def __init__(self, levels: int, codebook_size: int, dim: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim) * 0.1)  # [L, K, d]

    @property
    def levels(self) -> int:
        return self.codebooks.shape[0]

    @staticmethod
    def nearest(residual: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row: ``[B, d], [K, d] -> [B]``."""
        distances = (residual.pow(2).sum(1, keepdim=True) - 2 * residual @ codebook.T
                     + codebook.pow(2).sum(1))  # [B, K]
        return distances.argmin(dim=1)

    def forward(self, x: torch.Tensor) -> RQOutput:
        residual = x  # r_0 = z, [B, d]
        quantized = torch.zeros_like(x)
        indices, residuals = [], []
        codebook_loss = commit_loss = x.new_zeros(())
        for level in range(self.levels):
            codebook = self.codebooks[level]  # [K, d]
            index = self.nearest(residual.detach(), codebook.detach())  # [B]
            chosen = codebook[index]  # [B, d]
            residuals.append(residual)
            codebook_loss = codebook_loss + F.mse_loss(chosen, residual.detach())
            commit_loss = commit_loss + F.mse_loss(residual, chosen.detach())
            quantized = quantized + chosen
            residual = residual - chosen.detach()  # r_l = r_{l-1} - e_{c_l}
            indices.append(index)
        straight_through = x + (quantized - x).detach()  # value of the codes, gradient of x
        return RQOutput(straight_through, torch.stack(indices, 1), torch.stack(residuals, 1), codebook_loss, commit_loss)


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # [B, in_dim]
    rq: RQOutput


class RQVAE(nn.Module):
    """Encoder MLP -> ResidualQuantizer -> decoder MLP."""

    def __init__(self, in_dim: int, cfg: RQVAEConfig, codebook_size: int):
        super().__init__()
        widths = [in_dim, *cfg.encoder_hidden, cfg.code_dim]
        self.encoder = _mlp(widths)
        self.quantizer = ResidualQuantizer(cfg.levels, codebook_size, cfg.code_dim)
        self.decoder = _mlp(widths[::-1])

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        rq = self.quantizer(self.encoder(x))  # quantized [B, d]
        return RQVAEOutput(self.decoder(rq.quantized), rq)


@torch.no_grad()
def _encode_all(model: RQVAE, data: torch.Tensor, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, float]:
    """Codes ``[N, L]``, residuals ``[N, L, d]`` and the reconstruction MSE of every item (eval mode)."""
    model.eval()
    codes, residuals, squared_error = [], [], 0.0
    for first in range(0, len(data), batch_size):
        x = data[first:first + batch_size]
        out = model(x)
        codes.append(out.rq.indices.cpu())
        residuals.append(out.rq.residuals.cpu())
        squared_error += float(F.mse_loss(out.reconstruction, x, reduction="sum"))
    model.train()
    return torch.cat(codes).numpy(), torch.cat(residuals).numpy(), squared_error / data.numel()


@torch.no_grad()
def _kmeans_init(model: RQVAE, data: torch.Tensor, cfg: RQVAEConfig) -> None:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    codebooks = model.quantizer.codebooks
    residual = model.encoder(data).cpu().numpy().astype(np.float64)  # [N, d]
    for level in range(cfg.levels):
        km = KMeans(n_clusters=codebooks.shape[1], n_init=1, max_iter=cfg.kmeans_iters, random_state=cfg.seed + level)
        with threadpool_limits(limits=torch.get_num_threads()):  # same thread budget as torch
            assignment = km.fit_predict(residual)
        codebooks[level] = torch.as_tensor(km.cluster_centers_, dtype=codebooks.dtype)
        residual = residual - km.cluster_centers_[assignment]


@torch.no_grad()
def _reseed_dead_codes(model: RQVAE, codes: np.ndarray, residuals: np.ndarray, rng: np.random.Generator) -> int:
    """Move unused codes onto the residuals of items with a large remaining error at that level."""
    codebooks = model.quantizer.codebooks
    moved = 0
    for level in range(codebooks.shape[0]):
        dead = np.nonzero(np.bincount(codes[:, level], minlength=codebooks.shape[1]) == 0)[0]
        if len(dead) == 0:
            continue
        chosen = codebooks[level].cpu().numpy()[codes[:, level]]  # [N, d]
        error = ((residuals[:, level] - chosen) ** 2).sum(1) + 1e-12  # [N]
        take = rng.choice(len(codes), size=min(len(dead), len(codes)), replace=False, p=error / error.sum())
        codebooks[level, torch.as_tensor(dead[:len(take)])] = torch.as_tensor(residuals[take, level], dtype=codebooks.dtype)
        moved += len(take)
    return moved
