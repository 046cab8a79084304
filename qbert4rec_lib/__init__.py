"""qbert4rec_lib: a readable, offline-first re-implementation of Q-Bert4Rec (arXiv 2512.02474).

Data flows one way through the subpackages, in pipeline order:

    data/         Dataset + split; loaders (format detection, RecBole / Amazon readers); the generated catalog
    semantic/     features (stage 0)  ->  fusion (stage 1)  ->  quantize (stage 2): semantic IDs
    models/       the model contract (base), masking, qbert (stage 3), baselines; shared transformer layers
    experiments/  the stages composed: presets, stages (semantic_ids), runs (train_model) over train.fit, evaluate,
                  records, experiment / study tables, cold start, cross-domain transfer
    kit/          cli (+ commands), reproduce, notebook (Recorder), viz (+ plots), explore

Models depend on neither the data, the stages nor the trainer; ``experiments`` composes everything. Where to change
what: the mask policy in ``models/masking.py``, the codebook size in ``semantic/quantize.py`` (``RQVAEConfig``), a
file format in ``data/loaders.py`` (detection) and its reader module; each subpackage's docstring lists its modules.

Each stage has a frozen dataclass config, caches its outputs in a content-addressed folder (:mod:`qbert4rec_lib.cache`)
with the config dumped as JSON beside them, and returns named outputs. The numbered notebooks in ``notebooks/`` import
this library and never re-implement it; ``python -m qbert4rec_lib`` is the headless CLI that mirrors them.
"""
from __future__ import annotations

import os as _os

# Offline first: any accidental hub lookup fails at once instead of after ~45 s of retries.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def open_dataset(spec: str = "default", **kwargs):
    """Open a dataset: ``"default"`` = the embedded generated catalog, else a data folder path.

    Folder formats are auto-detected (see :func:`qbert4rec_lib.data.loaders.load_dataset`).
    Keyword arguments go to the generator (for ``"default"``) or the loader.
    """
    if spec in ("default", "embedded", "synthetic"):
        from .data.synthetic_folder import load_default

        return load_default(**kwargs)
    from .data.loaders import load_dataset

    return load_dataset(spec, **kwargs)
