"""Content keys: the kit's one JSON-ifier and its one content hash.

Every cache folder (:mod:`qbert4rec_lib.cache`), result record and pinned table is addressed by a key made here:
:func:`digest` over bytes, :func:`stable_hash` over the JSON (:func:`_jsonable`) of config-like parts, where
dataclass fields at their ``key_neutral`` value are left out (:func:`_key_view`). Changing anything here changes
every key, and with it every cache entry and result record the kit has written.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["KEY_NEUTRAL", "digest", "stable_hash"]


def _jsonable(obj: Any, *, sort: bool = True, finite: bool = False) -> Any:
    """``obj`` in plain JSON types, the kit's one JSON-ifier (cache metas, config hashes, result records, notebook
    records): dataclasses -> dicts, mappings -> dicts with str keys (sorted by key unless ``sort=False``),
    lists / tuples / arrays -> lists, numpy scalars -> Python scalars, paths -> str. ``finite=True`` writes NaN and
    infinities as None (strict JSON, for notebook records); otherwise they stay floats."""
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(obj), sort=sort, finite=finite)
    if isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: str(kv[0])) if sort else obj.items()
        return {str(k): _jsonable(v, sort=sort, finite=finite) for k, v in items}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, sort=sort, finite=finite) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if finite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


KEY_NEUTRAL = "key_neutral"  # dataclass field metadata: the value that behaves as if the field did not exist


def _key_view(obj: Any) -> Any:
    """``obj`` as it enters a content key: a dataclass field that holds its ``key_neutral`` value is left out.

    A config field added to the library after results were filed declares (``field(metadata={KEY_NEUTRAL: v})``)
    the value ``v`` under which the code behaves exactly as before the field existed. Leaving such fields out of
    the key keeps every earlier cache entry and result record valid, and still can never give a wrong hit: a
    different value (or a later change of the field's *default*) is in the key. Any other field is always keyed.
    """
    if hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type):
        from dataclasses import fields

        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if KEY_NEUTRAL in f.metadata and value == f.metadata[KEY_NEUTRAL]:
                continue
            out[f.name] = _key_view(value)
        return out
    if isinstance(obj, Mapping):
        return {k: _key_view(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_key_view(v) for v in obj]
    return obj


def digest(chunks: Iterable[bytes], length: int = 16) -> str:
    """The kit's one content hash: sha256 over the byte ``chunks`` in order, as hex cut to ``length`` characters.
    Content keys of arrays, sequences, files and texts are this over their bytes; :func:`stable_hash` is this over
    the JSON of config-like parts. (Cache *integrity* records use :func:`file_digest`, a different job.)"""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:length]


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of JSON-able parts (dataclasses, dicts, strings, numbers); dataclass fields at
    their ``key_neutral`` value are left out (see :func:`_key_view`)."""
    payload = json.dumps([_jsonable(_key_view(p)) for p in parts], sort_keys=True, separators=(",", ":"))
    return digest([payload.encode("utf-8")], length)
