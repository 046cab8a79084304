"""Recording a notebook's key figures in a machine-readable way (scrapbook-style glue).

Each notebook creates ``rec = Recorder("03_fusion", results_dir)`` and calls
``rec.record("level1_usage", 0.97)``. Values go to ``<results_dir>/<notebook>.json``
(atomically rewritten on every call) and are also emitted as a custom MIME output
(``application/x-qbert4rec+json``) in the executed notebook. The batch runner
(:mod:`qbert4rec_lib.reproduce`) gathers the JSON files into one results file, and the
tests assert them within tolerances, the way recommenders-team/recommenders tests its notebooks.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .cache import atomic_write_json

__all__ = ["Recorder", "results_dir", "MIME_TYPE"]

MIME_TYPE = "application/x-qbert4rec+json"


def results_dir(path: str | Path | None = None) -> Path:
    """``path`` or ``$QBERT4REC_RESULTS`` or ``outputs/results`` at the repository root."""
    if not path:
        path = os.environ.get("QBERT4REC_RESULTS") or Path(__file__).resolve().parent.parent / "outputs" / "results"
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Recorder:
    """Collects ``name -> value`` for one notebook and keeps ``<results_dir>/<notebook>.json`` current."""

    def __init__(self, notebook: str, directory: str | Path | None = None):
        self.notebook = notebook
        self.path = results_dir(directory) / f"{notebook}.json"
        self.values: dict[str, Any] = {}

    def record(self, name: str, value: Any, display: bool = True) -> Any:
        value = _clean(value)
        json.dumps(value)  # fail early on values that cannot be recorded
        self.values[name] = value
        atomic_write_json(self.path, {"notebook": self.notebook, "values": self.values})
        if display:
            try:
                from IPython import get_ipython
                from IPython.display import display as ipy_display

                if get_ipython() is not None:
                    ipy_display({MIME_TYPE: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"}, raw=True)
            except ImportError:  # pragma: no cover
                pass
        return value
