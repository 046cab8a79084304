"""Pinned semantic IDs: one machine's stage-1/2 output written down, so sequence-model runs agree across machines.

Stages 1-2 run on CPU floats, and different CPUs (other BLAS kernels, other vector units) round differently; k-means
and the RQ-VAE's nearest-code choices amplify those last bits, so the *same* code, config and data give slightly
different semantic IDs on two machines (seen on Amazon Beauty: a different ID table, hence a different content key
for every Q-Bert4Rec run trained on it). The IDs are what Q-Bert4Rec reads -- its tokenizer -- so a multi-seed table
assembled from runs made on several machines must read one table. Like a tokenizer file shipped with a language model:

    python -m qbert4rec_lib export-ids DATA --config beauty --out figures/results/semantic_ids/amazon-beauty
    python -m qbert4rec_lib experiment DATA --config beauty --semantic-ids figures/results/semantic_ids/amazon-beauty

The folder holds ``ids.npy`` (int64 ``[N, L + 1]``, row k = item id k + 1) and ``ids.json`` (the content key of the
table, the dataset fingerprint, a hash of the stage configs that made it, the vocabulary, where it was made). Loading
checks every one of them against the dataset and the config in use, and names the file and field that disagree; the
loaded table keys the trained models exactly as the freshly built one did on the machine that made it.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_save_npy, atomic_write_json
from ..cache import library_versions
from ..keys import stable_hash

__all__ = ["export_semantic_ids", "load_semantic_ids", "stage_recipe"]

FORMAT = "qbert4rec-semantic-ids/1"


def stage_recipe(cfg) -> str:
    """Hash of everything in an :class:`~qbert4rec_lib.experiments.presets.ExperimentConfig` that shapes the semantic IDs."""
    return stable_hash(cfg.semantic_source, cfg.features, cfg.fusion, cfg.rqvae)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_semantic_ids(ids, dataset, cfg, folder) -> Path:
    """Write ``ids`` (a :class:`~qbert4rec_lib.experiments.stages.SemanticIDs` built for ``dataset`` under ``cfg``) to
    ``folder`` (``ids.npy`` + ``ids.json``, atomic); returns the folder."""
    from .stages import hashlib_ids

    if ids.source == "random":
        raise ValueError("export-ids: the random-ID ablation is a shuffle of a table, not a table to pin")
    if ids.quantize is None:
        raise ValueError(f"export-ids: {ids.source!r} IDs are read off the item attributes, not built by stages 1-2; "
                         "there is nothing machine-dependent to pin")
    folder = Path(folder)
    table = np.ascontiguousarray(ids.table.ids, dtype=np.int64)
    atomic_save_npy(folder / "ids.npy", table)
    atomic_write_json(folder / "ids.json", {
        "format": FORMAT, "key": ids.key, "source": ids.source, "quantize_key": ids.quantize.key,
        "ids_sha256_16": hashlib_ids(table), "shape": list(table.shape), "vocab_sizes": list(ids.table.vocab_sizes),
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "stage_recipe": stage_recipe(cfg),
        "made_on": {"cpu": _cpu(), "machine": platform.machine(), "python": platform.python_version(),
                    "versions": library_versions()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return folder


def load_semantic_ids(folder, dataset, cfg):
    """The pinned table in ``folder`` as a :class:`~qbert4rec_lib.experiments.stages.SemanticIDs` (``features``, ``fusion``
    and ``quantize`` are None: stages 1-2 are not run). Raises ``ValueError`` naming the file and field when the
    folder does not belong to ``dataset`` and ``cfg`` or its table does not match its own record."""
    from ..semantic.quantize import SemanticIDTable
    from .stages import SemanticIDs, hashlib_ids

    folder = Path(folder)
    meta_path, ids_path = folder / "ids.json", folder / "ids.npy"
    for path in (meta_path, ids_path):
        if not path.is_file():
            raise ValueError(f"pinned semantic IDs: {path} does not exist (write it with `export-ids`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"pinned semantic IDs: {meta_path} line {exc.lineno}: not JSON ({exc.msg})") from None
    missing = [k for k in ("format", "key", "source", "quantize_key", "ids_sha256_16", "vocab_sizes",
                           "dataset_fingerprint", "stage_recipe") if k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise ValueError(f"pinned semantic IDs: {meta_path}: field {(missing or ['format'])[0]!r} "
                         f"{'missing' if missing else 'is not ' + FORMAT}")

    def mismatch(field: str, here, there) -> ValueError:
        return ValueError(f"pinned semantic IDs: {meta_path}: field {field!r} is {there!r} but the run has {here!r}")

    if meta["dataset_fingerprint"] != dataset.fingerprint():
        raise mismatch("dataset_fingerprint", dataset.fingerprint(), meta["dataset_fingerprint"])
    if meta["source"] != cfg.semantic_source:
        raise mismatch("source", cfg.semantic_source, meta["source"])
    if meta["stage_recipe"] != stage_recipe(cfg):
        raise ValueError(f"pinned semantic IDs: {meta_path}: field 'stage_recipe' differs from this run's: the IDs "
                         "were made with other features/fusion/rqvae settings than the config in use")
    try:
        table = np.load(ids_path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"pinned semantic IDs: {ids_path}: not a readable .npy ({exc})") from None
    if table.ndim != 2 or table.shape[0] != dataset.num_items or table.dtype != np.int64:
        raise ValueError(f"pinned semantic IDs: {ids_path}: shape {table.shape} {table.dtype}, expected "
                         f"[{dataset.num_items}, L + 1] int64")
    if hashlib_ids(table) != meta["ids_sha256_16"]:
        raise ValueError(f"pinned semantic IDs: {ids_path}: content does not match field 'ids_sha256_16' of {meta_path}")
    key = stable_hash(meta["source"], meta["quantize_key"], meta["ids_sha256_16"])
    if key != meta["key"]:
        raise ValueError(f"pinned semantic IDs: {meta_path}: field 'key' does not match the table it describes")
    return SemanticIDs(None, None, None, SemanticIDTable(table, tuple(meta["vocab_sizes"])), meta["source"], key)
