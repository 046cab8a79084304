"""Content-addressed cache of stage outputs, with atomic writes.

Every stage (features, fusion, quantization, sequence models) stores its outputs in a folder
``<cache root>/<stage>/<key>/`` where ``key`` is a hash of everything that determines the
output (dataset fingerprint + the stage's frozen config + upstream keys). A folder holds
``.npy`` / ``.safetensors`` arrays and a ``meta.json``; never pickle.

Writes are atomic: a stage writes into ``<key>.tmp-<pid>/`` and renames it into place only
when complete, so an interrupted run never leaves a half-written artifact that a later run
would trust. Long stages that want to resume use :meth:`StageDir.partial` (a scratch folder
kept across interruptions) and :func:`atomic_save_npy` for each finished chunk.

Concurrent processes (e.g. ``reproduce --jobs 2`` running two notebooks at once) share the cache safely:
a stage builds its artifact inside :meth:`StageDir.lock`, an exclusive ``flock`` on ``<key>.lock``; a
second process that needs the same key waits there and then loads the finished artifact instead of
computing it again. The OS releases the lock when a process dies, so a crash never leaves it held.

The cache root is ``$QBERT4REC_CACHE`` or ``~/.cache/qbert4rec``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

__all__ = [
    "cache_root",
    "stable_hash",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "StageDir",
    "stage_dir",
    "library_versions",
]


def cache_root() -> Path:
    """The cache root folder (created on demand)."""
    root = Path(os.environ.get("QBERT4REC_CACHE", Path.home() / ".cache" / "qbert4rec")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of JSON-able parts (dataclasses, dicts, strings, numbers)."""
    payload = json.dumps([_jsonable(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: Path | str, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (no pickle: object arrays are refused)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"refusing to save an object array to {path} (would need pickle)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def library_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes an artifact (recorded in meta.json)."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "transformers", "open_clip", "sklearn"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:  # pragma: no cover - optional packages
            pass
    return out


@dataclass(frozen=True)
class StageDir:
    """One content-addressed artifact folder: ``<root>/<stage>/<key>``."""

    root: Path
    stage: str
    key: str

    @property
    def path(self) -> Path:
        return self.root / self.stage / self.key

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def exists(self) -> bool:
        """True once the folder was completed (``meta.json`` is written last, inside the rename)."""
        return self.meta_path.is_file()

    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    @contextmanager
    def lock(self, wait_message: bool = True) -> Iterator[None]:
        """Hold the exclusive build lock of this key (``<root>/<stage>/<key>.lock``) for the ``with`` block.

        Use it around "load if it exists, else compute and write": only one process builds a key at a time,
        and the others find the finished artifact when they get the lock. Without ``fcntl`` (Windows) it is a
        no-op: the atomic rename still prevents half-written artifacts, only duplicate work is possible.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        path = self.root / self.stage / f"{self.key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait_message:
                    print(f"[cache] {self.stage}/{self.key} is being built by another process; waiting for it",
                          file=sys.stderr, flush=True)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def partial(self) -> Path:
        """A scratch folder for resumable work on this key (kept across interruptions)."""
        p = self.root / self.stage / f"{self.key}.partial"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def load_npy(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", allow_pickle=False, mmap_mode="r" if mmap else None)

    def write(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], files: Mapping[str, str] | None = None,
              binary: Mapping[str, Callable[[str], None]] | None = None) -> None:
        """Write all arrays + meta.json into a temp folder, then rename it into place atomically.

        ``files`` maps file names to text; ``binary`` maps file names to a writer called with the
        temporary path (e.g. ``lambda p: safetensors.torch.save_file(weights, p)``).
        """
        final = self.path
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{self.key}.tmp-"))
        try:
            for name, arr in arrays.items():
                arr = np.asarray(arr)
                if arr.dtype == object:
                    raise TypeError(f"array {name!r} has dtype object; refusing to pickle")
                np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            for name, text in (files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
            for name, writer in (binary or {}).items():
                writer(str(tmp / name))
            full_meta = dict(meta)
            full_meta.setdefault("stage", self.stage)
            full_meta.setdefault("key", self.key)
            full_meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            full_meta.setdefault("versions", library_versions())
            (tmp / "meta.json").write_text(json.dumps(_jsonable(full_meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if final.exists():  # a stale incomplete folder (or a writer that did not hold the lock)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        partial = self.root / self.stage / f"{self.key}.partial"
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def stage_dir(stage: str, *key_parts: Any, root: Path | str | None = None) -> StageDir:
    """The artifact folder for ``stage`` keyed by the hash of ``key_parts``."""
    return StageDir(Path(root) if root is not None else cache_root(), stage, stable_hash(stage, *key_parts))
