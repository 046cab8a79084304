"""A real browser drives JupyterLab: every notebook explorer must run and react to its controls.

The test starts JupyterLab on 127.0.0.1 (free port, random token) from this interpreter, with ``PYTHONPATH`` set to the
root of the checkout that holds this file, and serves *copies* of notebooks 02, 04 and 07 from a temporary folder
(``figures_dir`` / ``results_dir`` pointed there too, and the notebook test's parameter set -- ``quick`` unless
``QBERT4REC_NOTEBOOK_SET`` names another -- so the models of 07 come from the cache that test fills), so
``notebooks/`` and ``figures/`` are never rewritten; the copy of 07 ends after its explorer (its cold-start study
would retrain several models). For each notebook Playwright drives
Debian's Chromium (``executable_path``; no browser download is possible offline): Run All, wait until every code cell
has run, then change each control of each explorer (:mod:`qbert4rec_lib.kit.explore`: 02's item, 04's level and code,
04's prefix item, 07's user and item) and check that the explorer's view changes each time; notebook 02's plotly
figures must be live (not PNGs) with hover texts. Any JavaScript error
(``pageerror``) or a cell error fails the test. Screenshots of each explorer before and after each change go to
``outputs/browser/``. Skipped, with the reason, when Chromium, Playwright or JupyterLab is missing. The server (and its
kernels) always stop at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# notebook -> (explorer kind, [(control index, option index to pick), ...]) in the order they are worked, and whether
# the copy ends after the last explorer cell
EXPLORERS = {
    "02_features": ([("neighbours", [(0, 1)])], False),
    "04_quantization": ([("codes", [(0, 1), (1, 2)]), ("prefix", [(0, 1)])], False),
    "07_interpretability": ([("recommendations", [(0, 1), (1, 3)])], True),
}
# the notebook model's outputs: how many are live plotly figures, and the first cell whose figure has hover texts
_PLOTLY_OUTPUTS_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  let count = 0, hover = -1;
  for (let i = 0; i < nb.model.cells.length; i++) {
    const cell = nb.model.cells.get(i);
    if (cell.type !== 'code') continue;
    for (let j = 0; j < cell.outputs.length; j++) {
      const fig = (cell.outputs.get(j).data || {})['application/vnd.plotly.v1+json'];
      if (!fig) continue;
      count++;
      if (hover < 0 && (fig.data || []).some(t => Array.isArray(t.text) && t.text.length > 0)) hover = i;
    }
  }
  return {count, hover};
}"""
LIVE_PLOTS = {"02_features": 3}  # notebooks whose figures must be live plotly figures (at least this many)
SCREENSHOTS = REPO / "outputs" / "browser"
RUN_ALL_TIMEOUT_S = float(os.environ.get("QBERT4REC_BROWSER_TIMEOUT", "480"))  # a cold cache builds features first


def _chromium() -> str | None:
    for candidate in (os.environ.get("QBERT4REC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_digest(paths) -> dict[str, str]:
    out = {}
    for root in paths:
        for p in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if p.is_file():
                out[str(p)] = hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest()
    return out


def _notebook_copy(folder: Path, name: str, truncate: bool) -> Path:
    """The notebook with a cell after its parameters cell that sets the notebook test's parameter set and points
    figures and results at ``folder`` (and, with ``truncate``, without the cells after its last explorer)."""
    source_path = NOTEBOOKS / f"{name}.ipynb"
    nb = json.loads(source_path.read_text(encoding="utf-8"))
    if truncate:
        last = max(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "Explorer(" in "".join(c["source"]))
        nb["cells"] = nb["cells"][:last + 1]
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    # the parameters of the notebook test's set (quick by default), so both tests train the same models once
    from qbert4rec_lib.kit.reproduce import load_param_set, set_parameters

    params = set_parameters(load_param_set(os.environ.get("QBERT4REC_NOTEBOOK_SET", "quick")), source_path)
    params.update(figures_dir=str(folder / "figures"), results_dir=str(folder / "results"))
    source = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": "browser-test-parameters", "metadata": {"tags": ["injected-parameters"]},
                                "execution_count": None, "outputs": [], "source": source})
    path = folder / source_path.name
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving copies of the notebooks with explorers; yields (url, token, folder);
    always stopped."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright; no `playwright install` needed)")
    if _chromium() is None:
        pytest.skip("no Chromium binary (apt-get install chromium)")
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("jupyterlab is not installed")
    folder = tmp_path_factory.mktemp("browser_lab")
    for name, (_, truncate) in EXPLORERS.items():
        _notebook_copy(folder, name, truncate)
    settings = folder / ".settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast over the screenshots
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", JUPYTER_RUNTIME_DIR=str(folder / ".runtime"),
               JUPYTER_CONFIG_DIR=str(folder / ".config"), QBERT4REC_PNG=env.get("QBERT4REC_PNG", "1"))
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}",
           f"--LabApp.workspaces_dir={folder / '.workspaces'}", f"--LabApp.user_settings_dir={folder / '.settings'}",
           "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True"]
    log = open(folder / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}): {(folder / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 90 s")
            time.sleep(0.5)
        yield url, token, folder
    finally:
        _stop(proc, port, token, folder / ".runtime")
        log.close()


def _stop(proc: subprocess.Popen, port: int, token: str, runtime: Path) -> None:
    """Stop the server (it shuts its kernels down), then kill anything of ours that is left, by pid."""
    try:  # a clean shutdown first: the server stops its kernels
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown", method="POST",
                                     headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=5).close()
        proc.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the server's own process group
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
    # kernels run in their own sessions; any still alive has its connection file in our runtime folder
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(runtime).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _wait_all_cells_ran(page, timeout_s: float) -> None:
    """Every code cell shows an execution count ``[n]:`` (none pending ``[*]``, none unrun ``[ ]``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prompts = page.eval_on_selector_all(".jp-Notebook .jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")
        if prompts and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts):
            return
        if page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count():
            break
        time.sleep(1.0)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    if errors.count():
        pytest.fail(f"a notebook cell failed in the browser:\n{errors.first.inner_text()[-3000:]}")
    pytest.fail(f"Run All did not finish within {timeout_s:.0f} s (prompts: {prompts})")


def _changed(locator, before: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = locator.inner_text()
        if now != before:
            return now
        time.sleep(0.25)
    pytest.fail("the explorer's output did not change after its dropdown changed")


def _kernel_idle(page, timeout_ms: int) -> None:
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=timeout_ms)


@pytest.mark.parametrize("name", list(EXPLORERS))
def test_explorers_react_in_a_real_browser(lab, name):
    from playwright.sync_api import sync_playwright

    url, token, folder = lab
    explorers, _ = EXPLORERS[name]
    protected = _tree_digest([NOTEBOOKS, REPO / "figures"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    js_errors: list[str] = []
    views: dict[str, list[str]] = {}
    live_plots: dict[str, int] = {}
    hover_texts: dict[str, bool] = {}
    start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})  # tall: whole explorers in the screenshots
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))
            # a workspace of its own: no notebook of another test is restored beside this one
            page.goto(f"{url}/lab/workspaces/{name.replace('_', '-')}/tree/{name}.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            _kernel_idle(page, 90_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            _wait_all_cells_ran(page, RUN_ALL_TIMEOUT_S)
            _kernel_idle(page, 120_000)
            ran_s = time.monotonic() - start
            for kind, changes in explorers:
                explorer = page.locator(f".jp-OutputArea-output .qbert4rec-explorer-{kind}").first
                explorer.scroll_into_view_if_needed()
                view = explorer.locator(".qbert4rec-explorer-view").first
                page.wait_for_function("el => el.innerText.trim().length > 0", arg=view.element_handle(), timeout=30_000)
                seen = [view.inner_text()]
                explorer.screenshot(path=str(SCREENSHOTS / f"{name[:2]}_{kind}_0_initial.png"))
                for step, (control, option) in enumerate(changes, start=1):
                    select = explorer.locator("select").nth(control)
                    label = explorer.locator(".widget-dropdown").nth(control).locator("label").inner_text().strip()
                    select.select_option(index=option)
                    seen.append(_changed(view, seen[-1]))
                    explorer.screenshot(path=str(SCREENSHOTS / f"{name[:2]}_{kind}_{step}_{label}_changed.png"))
                views[kind] = seen
            if name in LIVE_PLOTS:  # a live kernel shows plotly figures, not PNGs: zoom and hover work
                found = page.evaluate(_PLOTLY_OUTPUTS_JS)  # {count, hover (a cell index with hover texts or -1)}
                live_plots[name], hover_texts[name] = found["count"], found["hover"] >= 0
                if found["hover"] >= 0:  # render that figure on screen: the page draws a live plotly graph
                    page.evaluate("i => window.jupyterapp.shell.currentWidget.content.widgets[i].node.scrollIntoView()",
                                  found["hover"])
                    page.wait_for_selector(".js-plotly-plot", state="attached", timeout=60_000)
                    page.screenshot(path=str(SCREENSHOTS / f"{name[:2]}_live_plotly.png"))
            page.screenshot(path=str(SCREENSHOTS / f"{name[:2]}_notebook_after.png"))
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        finally:
            browser.close()
    for kind, seen in views.items():
        assert len(set(seen)) == len(seen), f"{kind}: a change left the view as it was"
    assert set(views) == {kind for kind, _ in explorers}
    if name in LIVE_PLOTS:
        assert live_plots[name] >= LIVE_PLOTS[name], f"expected live plotly figures in {name}, found {live_plots[name]}"
        assert hover_texts[name], f"no plotly figure in {name} carries hover texts (item titles)"
    assert not js_errors, f"JavaScript errors in the page: {js_errors}"
    assert _tree_digest([NOTEBOOKS, REPO / "figures"]) == protected, "the browser test changed notebooks/ or figures/"
    assert (folder / "results" / f"{name}.json").is_file(), "the copy did not record into its own results folder"
    print(f"browser test {name}: Run All + explorers in {time.monotonic() - start:.0f} s (Run All {ran_s:.0f} s)")
