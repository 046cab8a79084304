"""Recording a notebook's key figures in a machine-readable way (scrapbook-style glue).

Each notebook creates ``rec = Recorder("03_fusion", results_dir)`` and calls
``rec.record("level1_usage", 0.97)``. Values go to ``<results_dir>/<notebook>.json``
(atomically rewritten on every call). Recording is silent: a notebook shows its numbers in prose, tables and
figures, not as ``name = value`` lines. ``Recorder(..., display=True)`` (or ``record(..., display=True)``) also
emits each value as a custom MIME output (``application/x-qbert4rec+json``, with a ``name = value`` text line) in
the executed notebook, for debugging. The batch runner
(:mod:`qbert4rec_lib.kit.reproduce`) gathers the JSON files into one results file, and the
tests assert them within tolerances, the way recommenders-team/recommenders tests its notebooks.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..keys import _jsonable

__all__ = ["Recorder", "results_dir", "MIME_TYPE", "interactive", "quiet_outputs"]

MIME_TYPE = "application/x-qbert4rec+json"


def results_dir(path: str | Path | None = None) -> Path:
    """``path`` or ``$QBERT4REC_RESULTS`` or ``outputs/results`` at the repository root."""
    if not path:
        from .reproduce import REPO

        path = os.environ.get("QBERT4REC_RESULTS") or REPO / "outputs" / "results"
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def interactive() -> bool:
    """True in a kernel driven by a live front end (JupyterLab, VS Code), False under papermill / nbclient / plain Python.

    ``$QBERT4REC_PROGRESS`` (``1`` / ``0``) decides when set. Otherwise the current execute request tells: a live front
    end allows ``input()`` (``allow_stdin``), batch runners such as papermill (nbclient) do not.
    """
    forced = os.environ.get("QBERT4REC_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    return bool(kernel is not None and getattr(kernel, "_allow_stdin", False))


class _QuietTqdm:  # a marker: tqdm.auto.tqdm has been replaced by a disabled subclass
    pass


def quiet_outputs(progress: bool | None = None) -> None:
    """Keep an executed notebook's outputs to what the notebook means to show (called by :class:`Recorder`).

    - progress bars off unless ``progress`` (default: :func:`interactive`): a batch run would otherwise store
      frozen tqdm widgets ("Loading weights: 0%"); every ``tqdm.auto`` bar, the kit's and transformers' /
      huggingface_hub's, is disabled in this process;
    - the cache's "being built by another process; waiting" lines are not printed (``$QBERT4REC_QUIET=1``);
    - known harmless library warnings are filtered (UMAP: "n_jobs value 1 overridden ... by setting random_state").

    Outside IPython it does nothing. Real problems (a corrupt cache file, a failed PNG export) are still printed.
    """
    import warnings

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is None:
        return
    os.environ["QBERT4REC_QUIET"] = "1"
    warnings.filterwarnings("ignore", message=r"n_jobs value .* overridden", category=UserWarning)
    if progress is None:
        progress = interactive()
    if progress:
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub, and by transformers at import
    import sys

    for name, call in (("transformers", "utils.logging.disable_progress_bar"), ("huggingface_hub", "utils.disable_progress_bars")):
        if name in sys.modules:
            try:
                obj = sys.modules[name]
                for part in call.split("."):
                    obj = getattr(obj, part)
                obj()
            except Exception:  # pragma: no cover - a moved helper only costs a progress bar
                pass
    try:
        import tqdm.auto as tqdm_auto
    except ImportError:  # pragma: no cover
        return
    if isinstance(tqdm_auto.tqdm, type) and issubclass(tqdm_auto.tqdm, _QuietTqdm):
        return
    base = tqdm_auto.tqdm

    class QuietTqdm(base, _QuietTqdm):  # the same bar, always disabled
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm_auto.tqdm = QuietTqdm
    tqdm_auto.trange = lambda *args, **kwargs: QuietTqdm(range(*args), **kwargs)


class Recorder:
    """Collects ``name -> value`` for one notebook and keeps ``<results_dir>/<notebook>.json`` current.

    Creating one (every notebook does, in its import cell) also calls :func:`quiet_outputs` unless ``quiet=False``.
    """

    def __init__(self, notebook: str, directory: str | Path | None = None, display: bool = False, quiet: bool = True):
        if quiet:
            quiet_outputs()
        self.notebook = notebook
        self.display = display
        self.path = results_dir(directory) / f"{notebook}.json"
        self.values: dict[str, Any] = {}

    def record(self, name: str, value: Any, display: bool | None = None) -> None:
        """Store ``value`` under ``name``. Silent unless ``display`` (default: the recorder's) is true.

        Returns ``None``, so a ``rec.record(...)`` that ends a notebook cell prints no ``Out[]`` echo either.
        """
        value = _jsonable(value, sort=False, finite=True)  # NaN -> null; the caller's key order kept
        json.dumps(value)  # fail early on values that cannot be recorded
        self.values[name] = value
        atomic_write_json(self.path, {"notebook": self.notebook, "values": self.values})
        if self.display if display is None else display:
            try:
                from IPython import get_ipython
                from IPython.display import display as ipy_display

                if get_ipython() is not None:
                    ipy_display({MIME_TYPE: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"}, raw=True)
            except ImportError:  # pragma: no cover
                pass
