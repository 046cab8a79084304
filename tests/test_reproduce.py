"""The batch runner: notebooks in worker processes, a failure named and the other workers stopped; the cache lock."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from qbert4rec_lib.kit import reproduce
from qbert4rec_lib.cache import stage_dir


def _notebook(path, body: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('figures_dir = "."\nresults_dir = ""\nvalue = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


RECORD = ("from qbert4rec_lib.kit.notebook import Recorder\n"
          "rec = Recorder('{stem}', results_dir or None)\nrec.record('value', value)\n")


@pytest.fixture
def toy_notebooks(tmp_path, monkeypatch):
    """A private notebooks/ folder with its own parameter set, in place of the kit's."""
    nbs = tmp_path / "notebooks"
    (nbs / "params").mkdir(parents=True)
    (nbs / "params" / "toy.yaml").write_text("description: toy\ncommon: {value: 7}\nnotebooks: {}\n")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", nbs)
    monkeypatch.setattr(reproduce, "PARAMS", nbs / "params")
    return nbs


def test_run_set_runs_notebooks_in_workers_and_gathers_their_records(toy_notebooks, tmp_path):
    for stem in ("00_a", "01_b", "02_c"):
        _notebook(toy_notebooks / f"{stem}.ipynb", RECORD.format(stem=stem))
    report = reproduce.run_set("toy", out_dir=tmp_path / "out", figures_dir=tmp_path / "figs",
                               results_file=tmp_path / "res" / "toy", jobs=2, log=lambda *_: None)
    assert sorted(report.seconds) == ["00_a", "01_b", "02_c"]
    results = json.loads((tmp_path / "res" / "toy.json").read_text())
    assert {nb: v["value"] for nb, v in results["notebooks"].items()} == {"00_a": 7, "01_b": 7, "02_c": 7}
    assert results["jobs"] == 2 and results["wall_seconds"] > 0
    assert "2 at a time" in (tmp_path / "res" / "toy.md").read_text()
    assert (tmp_path / "out" / "notebooks" / "01_b.ipynb").is_file()


def test_a_partial_rerun_into_another_folder_keeps_the_other_notebooks_results(toy_notebooks, tmp_path):
    """``--only`` with a fresh ``--out`` must not drop the notebooks it did not rerun from the results file."""
    for stem in ("00_a", "01_b"):
        _notebook(toy_notebooks / f"{stem}.ipynb", RECORD.format(stem=stem))
    res = tmp_path / "res" / "toy"
    reproduce.run_set("toy", out_dir=tmp_path / "out", figures_dir=tmp_path / "figs", results_file=res, jobs=1,
                      log=lambda *_: None)
    reproduce.run_set("toy", out_dir=tmp_path / "elsewhere", figures_dir=tmp_path / "figs", results_file=res,
                      only=["01"], overrides={"value": 9}, jobs=1, log=lambda *_: None)
    results = json.loads(res.with_suffix(".json").read_text())
    assert {nb: v["value"] for nb, v in results["notebooks"].items()} == {"00_a": 7, "01_b": 9}
    assert results["wall_seconds"] is None and sorted(results["notebook_seconds"]) == ["00_a", "01_b"]
    # the results page says which notebooks were rerun alone and keeps the whole run's wall time, not a sum of both
    assert results["rerun"] == ["01_b"] and results["last_full_run"]["jobs"] == 1
    page = res.with_suffix(".md").read_text()
    assert "rerun alone since then: 01_b" in page and "the last full run (" in page


def test_a_failing_notebook_is_named_with_its_cell_and_the_other_worker_is_stopped(toy_notebooks, tmp_path):
    _notebook(toy_notebooks / "00_slow.ipynb", "import time\ntime.sleep(600)")
    _notebook(toy_notebooks / "01_bad.ipynb", "raise ValueError('broken on purpose')")
    _notebook(toy_notebooks / "02_never.ipynb", "x = 1")
    t0 = time.perf_counter()
    with pytest.raises(reproduce.NotebookFailed) as err:
        reproduce.run_set("toy", out_dir=tmp_path / "out", figures_dir=tmp_path / "figs",
                          results_file=tmp_path / "res" / "toy", jobs=2, log=lambda *_: None)
    message = str(err.value)
    assert "01_bad.ipynb" in message and "ValueError" in message and "broken on purpose" in message
    assert "cell index" in message
    assert err.value.finished == ()  # neither of the others had finished (the notebook tests rely on this list)
    assert time.perf_counter() - t0 < 300, "the sleeping notebook was not stopped"
    assert (tmp_path / "out" / "notebooks" / "01_bad.ipynb").is_file()  # the executed copy is kept
    assert not (tmp_path / "out" / "notebooks" / "02_never.ipynb").exists()  # nothing starts after a failure
    assert not (tmp_path / "res" / "toy.json").exists()  # no results file from a failed run


def test_default_jobs_is_bounded():
    assert reproduce.default_jobs(0) == 1
    assert reproduce.default_jobs(1) in (3, 4)  # cores + 2, at most 4


def test_stage_lock_makes_a_second_builder_wait_and_then_find_the_artifact(tmp_path):
    store = stage_dir("toy", "key", root=tmp_path)
    events = []

    def first_builder():
        with store.lock():
            events.append("first has the lock")
            time.sleep(0.5)
            store.write({"x": np.arange(3)}, {"who": "first"})

    t = threading.Thread(target=first_builder)
    t.start()
    while not events:
        time.sleep(0.01)
    with store.lock(wait_message=False):  # blocks until the first builder is done
        assert store.exists(), "the lock was granted before the first builder finished"
        assert store.meta()["who"] == "first"
    t.join()


def test_update_readme_writes_the_headline_and_a_link_not_the_per_notebook_tables(tmp_path):
    results = {"param_set": "toy", "description": "a toy set", "generated": "2026-01-01 00:00:00 UTC",
               "machine": {"cpu_model": "CPU", "cpus": 2, "torch": "2", "kernel_threads": 1, "cuda": False},
               "notebook_seconds": {"00_a": 1.0, "06_evaluation": 2.0}, "total_seconds": 3.0, "wall_seconds": 2.5,
               "jobs": 2, "notebooks": {"00_a": {"value": 7},
                                        "06_evaluation": {"results_table_md": "| model | NDCG@10 |\n|---|---|\n| X | 0.5 |\n"}}}
    dest = tmp_path / "figures" / "results" / "toy"
    reproduce.write_results(results, dest)
    full = dest.with_suffix(".md").read_text()
    assert "**00_a**" in full and "| value | 7 |" in full  # the results file keeps every notebook's figures
    readme = tmp_path / "README.md"
    readme.write_text("# kit\n\n<!-- results-toy:start -->\nold\n<!-- results-toy:end -->\n\n## After\nkept\n")
    assert reproduce.update_readme(dest.with_suffix(".md"), readme=readme, marker="results-toy")
    text = readme.read_text()
    block = text.split("<!-- results-toy:start -->")[1].split("<!-- results-toy:end -->")[0]
    assert "| X | 0.5 |" in block and "a toy set" in block and "2 at a time" in block
    assert "**00_a**" not in block and "| value |" not in block and "old" not in block
    assert "[`figures/results/toy.md`](figures/results/toy.md)" in block
    assert text.startswith("# kit\n\n") and text.endswith("<!-- results-toy:end -->\n\n## After\nkept\n")
    assert not reproduce.update_readme(dest.with_suffix(".md"), readme=readme, marker="results-other")


def test_a_block_is_written_where_its_marker_lives_the_readme_or_the_results_page(tmp_path, monkeypatch):
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    readme.write_text("# kit\n<!-- results-a:start -->\nold a\n<!-- results-a:end -->\n")
    page.write_text("# Results\n<!-- results-b:start -->\nold b\n<!-- results-b:end -->\nkept\n")
    monkeypatch.setattr(reproduce, "RESULT_DOCUMENTS", (readme, page))
    assert reproduce.document_with_block("results-b") == page and reproduce.document_with_block("results-a") == readme
    assert reproduce.replace_readme_block("new b", "results-b")
    assert page.read_text() == "# Results\n<!-- results-b:start -->\nnew b\n<!-- results-b:end -->\nkept\n"
    assert "old a" in readme.read_text()  # the other document is untouched
    assert reproduce.replace_readme_block("new a", "results-a") and "new a" in readme.read_text()
    assert not reproduce.replace_readme_block("x", "results-missing")
    # a results file's link is written relative to the document that holds the block
    dest = tmp_path / "figures" / "results" / "toy"
    dest.parent.mkdir(parents=True)
    dest.with_suffix(".md").write_text("x")
    dest.with_suffix(".json").write_text(json.dumps({
        "param_set": "toy", "generated": "2026-01-01 00:00:00 UTC", "notebooks": {}, "notebook_seconds": {},
        "total_seconds": 1.0, "machine": {"cpu_model": "CPU", "cpus": 2, "torch": "2", "cuda": False}}))
    assert reproduce.update_readme(dest.with_suffix(".md"), marker="results-b")
    assert "[`../figures/results/toy.md`](../figures/results/toy.md)" in page.read_text()
