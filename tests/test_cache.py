"""The content-addressed cache: stable keys, atomic writes, no pickle, config helpers."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from qbert4rec_lib.cache import StageDir, atomic_save_npy, atomic_write_json, stable_hash, stage_dir
from qbert4rec_lib.config import from_dict, override, to_dict


@dataclasses.dataclass(frozen=True)
class _Cfg:
    width: int = 8
    tau: float = 0.1
    name: str = "x"
    levels: tuple = (1, 2)


def test_stable_hash_depends_on_content_only():
    assert stable_hash(_Cfg()) == stable_hash(_Cfg())
    assert stable_hash(_Cfg()) != stable_hash(_Cfg(width=9))
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_one_json_ifier_for_cache_keys_and_notebook_records():
    import math
    from pathlib import Path

    from qbert4rec_lib.cache import _jsonable

    value = {"b": (1, 2.5, np.float32(0.25)), "a": Path("x/y"), 3: [math.inf, np.int64(7)]}
    # cache keys / metas: keys sorted, non-finite floats kept; the digest is the one the kit has always written
    assert stable_hash(value) == "a2101f674a1bd85c"
    assert list(_jsonable(value)) == ["3", "a", "b"] and _jsonable(value)["3"] == [math.inf, 7]
    assert _jsonable(_Cfg()) == {"levels": [1, 2], "name": "x", "tau": 0.1, "width": 8}
    # notebook records: the caller's key order, NaN / inf -> None (strict JSON), arrays -> lists
    rec = _jsonable({"z": np.array([1.5, np.nan]), "a": {"y": np.float64("inf"), "x": 1}}, sort=False, finite=True)
    assert rec == {"z": [1.5, None], "a": {"y": None, "x": 1}} and list(rec) == ["z", "a"] and list(rec["a"]) == ["y", "x"]
    json.dumps(rec, allow_nan=False)


def test_stage_dir_write_is_atomic_and_loadable(tmp_path):
    sd = stage_dir("features", "fp", _Cfg(), root=tmp_path)
    assert not sd.exists()
    sd.write({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"config": _Cfg()})
    assert sd.exists()
    assert sd.load_npy("x").shape == (2, 3)
    meta = sd.meta()
    assert meta["config"]["width"] == 8 and meta["stage"] == "features" and "versions" in meta
    # no temp folders left behind
    assert [p.name for p in (tmp_path / "features").iterdir()] == [sd.key]


def test_stage_dir_failed_write_leaves_nothing(tmp_path):
    sd = StageDir(tmp_path, "fusion", "k")
    with pytest.raises(TypeError, match="pickle"):
        sd.write({"bad": np.array([object()], dtype=object)}, {})
    assert not sd.exists()
    assert not any((tmp_path / "fusion").iterdir())


def test_partial_folder_is_removed_when_stage_completes(tmp_path):
    sd = StageDir(tmp_path, "features", "k")
    chunk = sd.partial() / "chunk_000.npy"
    atomic_save_npy(chunk, np.ones(3))
    assert chunk.exists()
    sd.write({"x": np.ones(3)}, {})
    assert not (tmp_path / "features" / "k.partial").exists()


def test_atomic_helpers_refuse_pickle_and_write_json(tmp_path):
    with pytest.raises(TypeError):
        atomic_save_npy(tmp_path / "o.npy", np.array([{}], dtype=object))
    atomic_write_json(tmp_path / "m.json", {"cfg": _Cfg(), "p": tmp_path})
    assert json.loads((tmp_path / "m.json").read_text())["cfg"]["tau"] == 0.1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_config_round_trip_and_override():
    cfg = _Cfg()
    assert from_dict(_Cfg, to_dict(cfg)) == cfg
    assert override(cfg, width="16", tau="0.5").width == 16
    assert override(cfg, tau=1).tau == 1.0
    with pytest.raises(KeyError, match="unknown"):
        from_dict(_Cfg, {"widht": 3})
    with pytest.raises(KeyError, match="no field"):
        override(cfg, depth=3)
    with pytest.raises(TypeError, match="expected int"):
        override(cfg, width="'wide'")


def test_key_neutral_fields_leave_old_keys_valid_and_never_give_a_wrong_hit():
    """A field added later is left out of content keys at its key-neutral value only."""
    from dataclasses import dataclass, field

    from qbert4rec_lib.cache import stable_hash

    @dataclass(frozen=True)
    class Before:
        a: int = 1

    @dataclass(frozen=True)
    class After:
        a: int = 1
        b: float = field(default=0.0, metadata={"key_neutral": 0.0})

    @dataclass(frozen=True)
    class LaterDefault:  # the default moved away from the neutral value: keyed again
        a: int = 1
        b: float = field(default=0.5, metadata={"key_neutral": 0.0})

    assert stable_hash(After()) == stable_hash({"a": 1}) == stable_hash(Before().__dict__)
    assert stable_hash(After(b=0.5)) != stable_hash(After())
    assert stable_hash(LaterDefault()) == stable_hash(After(b=0.5)) != stable_hash(After())
    assert stable_hash([After()], {"x": After()}) == stable_hash([{"a": 1}], {"x": {"a": 1}})


def test_content_keys_keep_their_values():
    """Every content key is cache.digest (sha256 over bytes) or stable_hash (digest over JSON); they key the caches
    and the committed result records, so their values are pinned (taken before the hashes were unified)."""
    import hashlib

    from qbert4rec_lib.cache import digest, stable_hash
    from qbert4rec_lib.data.images import safe_stem
    from qbert4rec_lib.experiments.stages import hashlib_ids
    from qbert4rec_lib.semantic.features import FeatureSet, ModalityFeatures, _sequences_hash
    from qbert4rec_lib.semantic.fusion import features_key

    assert digest([b"ab", b"c"]) == hashlib.sha256(b"abc").hexdigest()[:16] and len(digest([b""], length=8)) == 8
    assert stable_hash({"a": 1}, [1, 2], "x") == "dc7ea6411a7983c2"
    assert hashlib_ids(np.arange(30).reshape(10, 3)) == "394a42f05d4ef71e"
    assert [safe_stem(k) for k in ("a/b", "x..y", "ok", "\udcff")] == ["a_b_c14cddc0", "x_y_c0e705fa", "ok", "__8f1d0f9c"]
    vectors = np.random.default_rng(0).normal(size=(5, 1, 4)).astype(np.float32)
    fs = FeatureSet("fp", {"text": ModalityFeatures("text", vectors, np.array([1, 1, 0, 1, 1], bool), {})}, {"image": "none"})
    assert features_key(fs) == {"absent": ["image"], "text": {"shape": [5, 1, 4], "sha256": "014822515400941d"}}
    assert _sequences_hash([np.array([1, 2, 3]), np.array([4])]) == digest(
        [np.array([1, 2, 3], np.int64).tobytes() + b"|", np.array([4], np.int64).tobytes() + b"|"])
