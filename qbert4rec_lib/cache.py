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

Integrity: :meth:`StageDir.write` records, in ``meta.json["integrity"]``, the size and a BLAKE2b content hash of
every file it writes, plus the shape and dtype of every ``.npy`` array and of every tensor of a ``.safetensors``
file. :meth:`StageDir.usable` (what a stage calls instead of :meth:`StageDir.exists` before trusting a hit)
checks them all: a missing, truncated or altered file, or a garbage ``meta.json``, makes it say so on stderr
and return False, so the stage rebuilds the artifact (the write replaces the bad folder). Folders written
before integrity records existed get structural checks only (every file parses, required files exist).
Loading errors that still happen name the file (:class:`CacheError`). Resume chunks in ``<key>.partial``
are saved with a hash beside them (:func:`save_chunk`); :func:`load_chunk` drops a bad one so it is recomputed.

The cache root is ``$QBERT4REC_CACHE`` or ``~/.cache/qbert4rec``. The keys are made by :mod:`qbert4rec_lib.keys`
(:func:`stable_hash`, :func:`digest`), single files are written by :mod:`qbert4rec_lib.atomic`; both modules' names
are importable from here too.
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

# the content keys and the atomic writes live in their own modules; their names stay importable from here
from .atomic import atomic_save_npy, atomic_write_json, atomic_write_text  # noqa: F401 - re-exported
from .keys import KEY_NEUTRAL, _jsonable, _key_view, digest, stable_hash  # noqa: F401 - re-exported

__all__ = [
    "CacheError",
    "cache_root",
    "file_digest",
    "save_chunk",
    "load_chunk",
    "stable_hash",
    "digest",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "StageDir",
    "stage_dir",
    "library_versions",
]


HASH_ALGORITHM = "blake2b-128"  # recorded beside every digest


class CacheError(RuntimeError):
    """A cached artifact that cannot be used; the message always names the file."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def _warn(message: str) -> None:
    print(f"[cache] {message}", file=sys.stderr, flush=True)


def file_digest(path: Path | str) -> str:
    """BLAKE2b (128-bit) hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _npy_header(path: Path) -> tuple[list[int], str]:
    """Shape and dtype from an ``.npy`` header (reads the header only)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(fh)
    return list(shape), dtype.str


def _safetensors_header(path: Path) -> dict[str, dict]:
    """``{tensor name: {"shape", "dtype"}}`` from a ``.safetensors`` header (8-byte length + JSON)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("file shorter than the 8-byte safetensors header length")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            raise ValueError(f"implausible safetensors header length {n}")
        raw = fh.read(n)
        if len(raw) < n:
            raise ValueError("truncated safetensors header")
    header = json.loads(raw)
    return {k: {"shape": list(v["shape"]), "dtype": v["dtype"]} for k, v in sorted(header.items())
            if k != "__metadata__"}


def _headers(path: Path) -> dict:
    """Array shapes / dtypes of an ``.npy`` (``shape``, ``dtype``) or ``.safetensors`` file (``tensors``)."""
    if path.suffix == ".npy":
        shape, dtype = _npy_header(path)
        return {"shape": shape, "dtype": dtype}
    if path.suffix == ".safetensors":
        return {"tensors": _safetensors_header(path)}
    return {}


def _file_record(path: Path) -> dict:
    """What the integrity record keeps of one file: size, digest, and array shapes / dtypes where known."""
    return {"bytes": path.stat().st_size, "blake2b": file_digest(path)} | _headers(path)


def _check_parses(path: Path) -> None:
    """Structural check of one file (folders written without integrity records): it must load."""
    if path.suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file  # torch: every dtype (numpy has no bfloat16)

        load_file(str(path))


def cache_root() -> Path:
    """The cache root folder (created on demand)."""
    root = Path(os.environ.get("QBERT4REC_CACHE", Path.home() / ".cache" / "qbert4rec")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def save_chunk(path: Path | str, array: np.ndarray) -> None:
    """Save a resume chunk atomically, with its digest in ``<name>.b2`` beside it (written after it)."""
    path = Path(path)
    atomic_save_npy(path, array)
    atomic_write_text(path.with_name(path.name + ".b2"), file_digest(path) + "\n")


def load_chunk(path: Path | str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray | None:
    """A resume chunk saved by :func:`save_chunk`, or None when it is absent or bad.

    A bad chunk (unreadable, truncated, digest mismatch, wrong shape or dtype) is reported on stderr and
    deleted, so the caller recomputes it. A chunk without a ``.b2`` digest (older runs) is checked for
    shape and dtype only.
    """
    path = Path(path)
    if not path.is_file():
        return None
    side = path.with_name(path.name + ".b2")
    try:
        if side.is_file() and side.read_text(encoding="utf-8").strip() != file_digest(path):
            raise ValueError("content hash differs from the one recorded when it was saved")
        array = np.load(path, allow_pickle=False)
        if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            raise ValueError(f"shape {array.shape} / dtype {array.dtype}, expected {tuple(shape)} / {np.dtype(dtype)}")
    except (OSError, ValueError, EOFError) as exc:
        _warn(f"{path}: bad resume chunk ({exc}); dropping it and computing it again")
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    return array


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
        """The folder's ``meta.json``; an unreadable or non-object file raises :class:`CacheError` naming it."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CacheError(self.meta_path, f"unreadable cache record ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise CacheError(self.meta_path, f"cache record is a JSON {type(meta).__name__}, expected an object")
        return meta

    def verify(self, require: tuple[str, ...] = ()) -> None:
        """Check the folder against the integrity record of its ``meta.json``; raise :class:`CacheError` if bad.

        Every recorded file must exist with its recorded size, content hash, and (``.npy`` / ``.safetensors``)
        shapes and dtypes. A folder without a record (written by an older version) is checked structurally:
        every ``.npy`` / ``.safetensors`` file must load. ``require`` names files that must exist either way.
        """
        meta = self.meta()
        for name in require:
            if not (self.path / name).is_file():
                raise CacheError(self.path / name, "missing from the cached folder")
        record = meta.get("integrity")
        if record is None:  # legacy folder: structural checks only
            for path in sorted(self.path.iterdir()):
                try:
                    _check_parses(path)
                except Exception as exc:  # noqa: BLE001 - any parse failure means the file is bad
                    raise CacheError(path, f"unreadable ({type(exc).__name__}: {exc})") from None
            return
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict):
            raise CacheError(self.meta_path, "malformed integrity record")
        for name, want in sorted(files.items()):
            path = self.path / name
            if not path.is_file():
                raise CacheError(path, "missing from the cached folder")
            size = path.stat().st_size
            if size != want.get("bytes"):
                raise CacheError(path, f"{size} bytes, the integrity record says {want.get('bytes')} (truncated or altered)")
            if file_digest(path) != want.get("blake2b"):
                raise CacheError(path, "content hash differs from the integrity record (altered after it was written)")
            try:  # same bytes as recorded, so the headers match too unless the record itself was edited
                got = _headers(path)
            except Exception as exc:  # noqa: BLE001
                raise CacheError(path, f"unreadable ({type(exc).__name__}: {exc})") from None
            for field_ in ("shape", "dtype", "tensors"):
                if field_ in want and got.get(field_) != want[field_]:
                    raise CacheError(path, f"{field_} {got.get(field_)} differs from the integrity record {want[field_]}")

    def usable(self, require: tuple[str, ...] = ()) -> bool:
        """True when the folder is complete and passes :meth:`verify`: a cache hit that can be trusted.

        A folder that exists but fails the check is reported on stderr (naming the file and the reason) and
        False is returned, so the caller rebuilds the artifact; its :meth:`write` replaces the bad folder.
        """
        if not self.exists():
            return False
        try:
            self.verify(require)
        except CacheError as exc:
            _warn(f"{exc}; rebuilding {self.stage}/{self.key}")
            return False
        return True

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
                if wait_message and os.environ.get("QBERT4REC_QUIET") != "1":  # notebooks: set by quiet_outputs()
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
        """Load ``<name>.npy``; any failure, or a shape / dtype other than the recorded one, names the file."""
        path = self.path / f"{name}.npy"
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as exc:
            raise CacheError(path, f"unreadable cached array ({type(exc).__name__}: {exc}); "
                                   "delete the folder to rebuild it") from None
        want = (self._integrity_files() or {}).get(path.name)
        if want and (list(array.shape) != want.get("shape") or array.dtype.str != want.get("dtype")):
            raise CacheError(path, f"shape {list(array.shape)} / dtype {array.dtype.str} differ from the integrity "
                                   f"record {want.get('shape')} / {want.get('dtype')}")
        return array

    def load_safetensors(self, name: str) -> dict:
        """Load a ``.safetensors`` file of this folder as torch tensors; any failure names the file."""
        from safetensors.torch import load_file

        path = self.path / name
        if not path.is_file():
            raise CacheError(path, "missing from the cached folder; delete the folder to rebuild it")
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends carry no path
            raise CacheError(path, f"unreadable weights ({type(exc).__name__}: {exc}); "
                                   "delete the folder to rebuild it") from None

    def _integrity_files(self) -> dict | None:
        try:
            record = self.meta().get("integrity")
        except CacheError:
            return None
        return record.get("files") if isinstance(record, dict) else None

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
            full_meta["integrity"] = {"algorithm": HASH_ALGORITHM, "files": {
                p.name: _file_record(p) for p in sorted(tmp.iterdir()) if p.name != "meta.json"}}
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
