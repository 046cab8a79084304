"""Atomic file writes: a reader sees a file's old content or its complete new content, never half of it.

Each write goes to a temporary file in the target's folder, is flushed, fsync'ed and renamed onto the target
(``os.replace``); on any error the temporary file is removed. Whole cache folders are renamed into place the same
way by :meth:`qbert4rec_lib.cache.StageDir.write`.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .keys import _jsonable

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_save_npy"]


@contextmanager
def _atomic_file(path: Path, binary: bool) -> Iterator[Any]:
    """An open temporary file beside ``path`` (in its folder, which must exist); on a clean exit it is flushed,
    fsync'ed and renamed onto ``path``, on any error removed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_file(path, binary=False) as fh:
        fh.write(text)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: Path | str, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (no pickle: object arrays are refused)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"refusing to save an object array to {path} (would need pickle)")
    with _atomic_file(path, binary=True) as fh:
        np.save(fh, array, allow_pickle=False)
