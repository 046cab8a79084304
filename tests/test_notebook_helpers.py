"""Notebook output hygiene (silent Recorder, quiet batch kernels) and the small viz helpers notebooks call."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from qbert4rec_lib.kit import plots, viz
from qbert4rec_lib.kit.notebook import Recorder

REPO = Path(__file__).resolve().parents[1]


def test_recorder_is_silent_and_returns_none(tmp_path, capsys):
    rec = Recorder("nb", tmp_path, quiet=False)
    assert rec.record("x", np.float32(0.5)) is None  # a cell ending in rec.record(...) echoes nothing
    rec.record("y", {"a": np.arange(2)}, display=True)  # outside IPython: still no output, no error
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "nb.json").read_text())["values"] == {"x": 0.5, "y": {"a": [0, 1]}}
    rec.record("z", {"b": float("nan"), "a": (np.int64(1), np.inf)})  # strict JSON: non-finite -> null
    assert list(rec.values["z"]) == ["b", "a"] and rec.values["z"] == {"b": None, "a": [1, None]}
    text = (tmp_path / "nb.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)["values"]["z"] == {"a": [1, None], "b": None}


def test_quiet_outputs_in_a_batch_kernel_disables_progress_bars_and_known_warnings(tmp_path):
    script = f"""
import io, os, warnings
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.instance()
from qbert4rec_lib.kit.notebook import Recorder, interactive
assert not interactive()  # no kernel with a live front end here
Recorder("nb", {str(tmp_path)!r})
import tqdm.auto
buf = io.StringIO()
for _ in tqdm.auto.tqdm(range(3), file=buf, disable=False):
    pass
assert buf.getvalue() == "", buf.getvalue()
assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["QBERT4REC_QUIET"] == "1"
with warnings.catch_warnings(record=True) as caught:
    warnings.warn("n_jobs value 1 overridden to 1 by setting random_state. Use no seed for parallelism.", UserWarning)
assert not caught, caught
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("QBERT4REC_PROGRESS", "QBERT4REC_QUIET", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_show_markdown_prints_outside_a_notebook(capsys):
    viz.show_markdown("| a |\n|---|\n| 1 |")
    assert "| a |" in capsys.readouterr().out


def test_figure_paths_echo_nothing():
    paths = viz.FigurePaths({"html": Path("x.html")})
    assert paths["html"] == Path("x.html") and paths._ipython_display_() is None


def test_agreement_heatmap_blanks_the_diagonal_and_scales_to_the_off_diagonal():
    fig = plots.agreement_heatmap([[1.0, 0.04], [0.04, 1.0]], ["text", "image"], chance=0.008, k=10)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[0, 0]) and np.isnan(z[1, 1]) and z[0, 1] == 0.04
    assert fig.data[0].zmax == 0.04
    assert "chance" in fig.data[0].colorbar.ticktext[1] and "5.0× chance" in fig.data[0].text[0][1]


def test_label_breakdown_html_gives_shares_of_the_chosen_items():
    out = viz.label_breakdown_html({"brand": ["A", "A", "B", "C"]}, [1, 2, 3])
    assert "3 items" in out and "A <b>67%</b>" in out and "B <b>33%</b>" in out and "C" not in out
    assert "no items" in viz.label_breakdown_html({"brand": ["A"]}, [])


def test_the_kit_finds_the_checkout_root():
    """reproduce.REPO (and with it the default figures/ and outputs/ folders) is the checkout, not a package folder."""
    from qbert4rec_lib.kit.reproduce import NOTEBOOKS, REPO, list_notebooks

    assert (REPO / "pyproject.toml").is_file() and NOTEBOOKS == REPO / "notebooks" and list_notebooks()
