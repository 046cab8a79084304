"""Frozen dataclass configs: JSON round-trip and dotted overrides.

Every stage has one frozen ``@dataclass`` config (in its own module). This module holds the
helpers they share: :func:`to_dict` / :func:`from_dict` for the JSON dumped beside every
artifact, and :func:`override` for ``key=value`` overrides from the CLI or a papermill
parameter set (type-checked against the field's default, as minGPT's configurator does).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise KeyError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k) if _has_defaults(cls) else None
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    return cls(**kwargs)


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
        for f in dataclasses.fields(cls)
    )


def override(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that parses strings (``"0.1"``, ``"(1, 2)"``) to the field's type."""
    names = {f.name for f in dataclasses.fields(cfg)}
    parsed = {}
    for k, v in changes.items():
        if k not in names:
            raise KeyError(f"{type(cfg).__name__} has no field {k!r}; known: {sorted(names)}")
        cur = getattr(cfg, k)
        if isinstance(v, str) and not isinstance(cur, str):
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{type(cfg).__name__}.{k}: cannot parse {v!r}") from exc
        if isinstance(cur, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if cur is not None and v is not None and not isinstance(v, type(cur)):
            raise TypeError(f"{type(cfg).__name__}.{k}: expected {type(cur).__name__}, got {type(v).__name__} ({v!r})")
        parsed[k] = v
    return dataclasses.replace(cfg, **parsed)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU runs are then deterministic)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def torch_threads(n: int):
    """Use ``n`` torch CPU threads inside the block (0 = leave as is); the previous setting is restored.

    The kit's small models are dominated by per-operation overhead: on a 2-core machine one thread
    was several times faster than two (and far steadier when other processes share the cores), so
    stages 1 and 2 default to ``threads=1`` and feature building exposes ``FeatureConfig.torch_threads``.
    """
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
