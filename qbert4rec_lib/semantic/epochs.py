"""The epoch loop of stages 1 and 2 (:mod:`~qbert4rec_lib.semantic.fusion`, :mod:`~qbert4rec_lib.semantic.quantize`):
AdamW (``cfg.lr``, ``cfg.weight_decay``; parameters with sparse gradients, e.g. stage 1's ID queries with
``query_optimizer="sparse_adam"``, get a lazy :class:`torch.optim.SparseAdam` at ``cfg.lr`` instead), a new item order each epoch from a generator seeded with
``cfg.seed``, mini-batches of ``cfg.batch_size`` items, a progress bar over ``cfg.epochs``, and one record per epoch
(the mean of each logged value over the epoch's steps, plus the epoch's seconds).

Each stage keeps its own model, loss, what it logs and what it adds to an epoch's record::

    loop = EpochLoop(model, cfg, num_items, desc="stage")
    for epoch, order in loop:            # model in train mode; order: the epoch's shuffled item rows
        for rows in loop.batches(order):
            loss = ...
            loop.step(loss)              # zero_grad, backward, optimizer step
            loop.log({"loss": float(loss.detach())})
        record = loop.end_epoch(epoch)   # appended to loop.history
"""
from __future__ import annotations

import time
from typing import Iterator

import torch

__all__ = ["EpochLoop"]


class EpochLoop:
    """AdamW, a seeded item order per epoch, mean logged values per epoch, a progress bar (see the module doc).

    ``generator`` (the seeded ``torch.Generator`` that draws the orders) may also draw the stage's own training
    randomness; ``history`` holds the finished epochs' records; ``bar`` is the tqdm bar (for ``set_postfix``).
    """

    def __init__(self, model: torch.nn.Module, cfg, num_items: int, *, desc: str, progress: bool = True):
        from tqdm.auto import tqdm

        self.model, self.num_items, self.batch_size = model, num_items, cfg.batch_size
        sparse = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
        dense_params = [p for p in model.parameters() if id(p) not in sparse]
        sparse_params = [p for p in model.parameters() if id(p) in sparse]
        self.optimizer = torch.optim.AdamW(dense_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # a sparse table: Adam moments and updates only on the rows in the batch (cost O(batch), not O(table))
        self.sparse_optimizer = torch.optim.SparseAdam(sparse_params, lr=cfg.lr) if sparse_params else None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.history: list[dict] = []
        self.start = time.perf_counter()
        self.bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress)
        self._epoch_start, self._sums, self._steps = self.start, {}, 0

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(epoch, order)`` per epoch (from 0), the model in train mode; ``order`` is ``[num_items]`` (CPU)."""
        for epoch in self.bar:
            self._epoch_start = time.perf_counter()
            self.model.train()
            order = torch.randperm(self.num_items, generator=self.generator)
            self._sums, self._steps = {}, 0
            yield epoch, order

    def batches(self, order: torch.Tensor) -> Iterator[torch.Tensor]:
        """Consecutive slices of ``order`` of ``batch_size`` rows (the last one may be shorter)."""
        for first in range(0, self.num_items, self.batch_size):
            yield order[first:first + self.batch_size]

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``."""
        for optimizer in (self.optimizer, self.sparse_optimizer):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in (self.optimizer, self.sparse_optimizer):
            if optimizer is not None:
                optimizer.step()
        self._steps += 1

    def log(self, values: dict[str, float]) -> None:
        """Add a step's values to the epoch's sums (their means go into the epoch's record)."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v

    def end_epoch(self, epoch: int, extra: dict | None = None) -> dict:
        """The epoch's record, ``{"epoch": epoch + 1, <means of the logged values>, **extra, "seconds"}``, appended
        to :attr:`history`."""
        record = {"epoch": epoch + 1} | {k: v / max(1, self._steps) for k, v in self._sums.items()} | (extra or {})
        record["seconds"] = time.perf_counter() - self._epoch_start
        self.history.append(record)
        return record

    def seconds(self) -> float:
        """Seconds since the loop was made (the stage's training time)."""
        return time.perf_counter() - self.start
