"""Every notebook executed through papermill with the `smoke` parameter set, its recorded figures asserted.

The notebooks run in order in one shared output folder and one shared cache (so later notebooks reuse the
features / semantic IDs / models of earlier ones, as in the README's main command). Each notebook records its key
numbers with ``Recorder``; the checks below assert them within tolerances (the way recommenders-team/recommenders
tests its notebooks). Timings, progress bars and widget views are never compared.
"""
from __future__ import annotations

import json
import math
import os

import pytest

from qbert4rec_lib.reproduce import NotebookFailed, list_notebooks, load_param_set, notebook_parameters, run_set

NOTEBOOKS = [p.stem for p in list_notebooks()]


def _between(lo, hi):
    return lambda v: v is not None and lo <= v <= hi


# notebook -> {recorded name: predicate}. Names missing from a notebook's record fail the test.
CHECKS: dict[str, dict] = {
    "00_overview": {
        "unique_semantic_ids": lambda v: v == 1.0,
        "qbert_ndcg10": _between(0.0, 1.0),
        "popularity_ndcg10": _between(0.0, 1.0),
    },
    "01_data": {
        "users": _between(1500, 4000),
        "items": _between(800, 2000),
        "modalities": lambda v: v["text"] is True and v["image"] is True,
        "mean_sequence_length": _between(5, 20),
    },
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke_run")
    return {"out": out, "figures": out / "figures", "results": out / "results"}


def test_every_notebook_has_one_parameters_cell_with_the_conventions():
    import nbformat

    for nb_path in list_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: expected exactly one `parameters` cell, found {len(tagged)}"
        params = notebook_parameters(nb_path)
        for name in ("dataset", "seed", "figures_dir", "results_dir"):
            assert name in params, f"{nb_path.name}: parameters cell lacks {name!r}"
        assert nb.metadata["kernelspec"]["name"] == "python3", nb_path.name
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "By the end" in text and "## Summary" in text and "## Exercises" in text, nb_path.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has committed outputs"


def test_smoke_parameter_set_only_names_declared_parameters():
    cfg = load_param_set("smoke")
    for nb in list_notebooks():
        extra = set(cfg["notebooks"].get(nb.stem, {}) or {}) - set(notebook_parameters(nb))
        assert not extra, f"smoke.yaml sets undeclared parameters {extra} for {nb.name}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executes_and_records_expected_figures(notebook, smoke_run):
    try:
        run_set("smoke", out_dir=smoke_run["out"], figures_dir=smoke_run["figures"], only=[notebook],
                results_file=smoke_run["results"] / "smoke", log=lambda *_: None)
    except NotebookFailed as exc:
        pytest.fail(str(exc))
    recorded_path = smoke_run["out"] / "results" / f"{notebook}.json"
    assert recorded_path.is_file(), f"{notebook} recorded nothing"
    values = json.loads(recorded_path.read_text())["values"]
    assert values, f"{notebook} recorded no values"
    for name, check in CHECKS.get(notebook, {}).items():
        assert name in values, f"{notebook} did not record {name!r} (recorded: {sorted(values)})"
        assert check(values[name]), f"{notebook}: recorded {name} = {values[name]!r} fails its check"
    executed = smoke_run["out"] / "notebooks" / f"{notebook}.ipynb"
    assert executed.is_file()
    figures = list(smoke_run["figures"].glob(f"{notebook}_*.html"))
    assert figures, f"{notebook} wrote no figure to {smoke_run['figures']}"
