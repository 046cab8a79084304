"""A real browser drives JupyterLab: notebook 04's token explorer must run and react to its controls.

The test starts JupyterLab on 127.0.0.1 (free port, random token) from this interpreter, with ``PYTHONPATH`` set to the
root of the checkout that holds this file, and serves a *copy* of ``notebooks/04_quantization.ipynb`` from a temporary
folder (``figures_dir`` / ``results_dir`` pointed there too), so ``notebooks/`` and ``figures/`` are never rewritten.
Playwright drives Debian's Chromium (``executable_path``; no browser download is possible offline): Run All, wait
until every code cell has run, then change the explorer's level and code dropdowns and check that the listed items
change each time. Any JavaScript error (``pageerror``) or a cell error fails the test. Screenshots of the explorer
before and after each change go to ``outputs/browser/``. Skipped, with the reason, when Chromium, Playwright or
JupyterLab is missing. The server (and its kernels) always stop at the end.
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
NOTEBOOK = REPO / "notebooks" / "04_quantization.ipynb"
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


def _notebook_copy(folder: Path) -> Path:
    """Notebook 04 with a cell after its parameters cell that points figures and results at ``folder``."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    source = f"figures_dir = {str(folder / 'figures')!r}\nresults_dir = {str(folder / 'results')!r}\n"
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": "browser-test-parameters", "metadata": {"tags": ["injected-parameters"]},
                                "execution_count": None, "outputs": [], "source": source})
    path = folder / NOTEBOOK.name
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 04; yields (url, token, folder); always stopped."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright; no `playwright install` needed)")
    if _chromium() is None:
        pytest.skip("no Chromium binary (apt-get install chromium)")
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("jupyterlab is not installed")
    folder = tmp_path_factory.mktemp("browser_lab")
    _notebook_copy(folder)
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


def test_quantization_explorer_reacts_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    url, token, folder = lab
    protected = _tree_digest([NOTEBOOK, REPO / "figures"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    js_errors: list[str] = []
    start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                                   timeout=90_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            _wait_all_cells_ran(page, RUN_ALL_TIMEOUT_S)
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                                   timeout=120_000)
            ran_s = time.monotonic() - start

            explorer = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator(".widget-dropdown")).first
            explorer.scroll_into_view_if_needed()
            level = explorer.locator(".widget-dropdown", has_text="level").locator("select")
            code = explorer.locator(".widget-dropdown", has_text="code").locator("select")
            view = explorer.locator(".widget-html").first
            page.wait_for_function("el => el.innerText.includes('semantic ID')", arg=view.element_handle(), timeout=30_000)
            first = view.inner_text()
            explorer.screenshot(path=str(SCREENSHOTS / "04_explorer_0_initial.png"))

            level.select_option(index=1)  # level 1 -> level 2: new code list, new items
            second = _changed(view, first)
            explorer.screenshot(path=str(SCREENSHOTS / "04_explorer_1_level_changed.png"))

            code.select_option(index=2)  # another code of that level
            third = _changed(view, second)
            explorer.screenshot(path=str(SCREENSHOTS / "04_explorer_2_code_changed.png"))
            page.screenshot(path=str(SCREENSHOTS / "04_notebook_after.png"))
        finally:
            browser.close()
    assert len({first, second, third}) == 3
    assert not js_errors, f"JavaScript errors in the page: {js_errors}"
    assert _tree_digest([NOTEBOOK, REPO / "figures"]) == protected, "the browser test changed notebooks/ or figures/"
    assert (folder / "results" / "04_quantization.json").is_file(), "the copy did not record into its own results folder"
    print(f"browser test: Run All + explorer in {time.monotonic() - start:.0f} s (Run All {ran_s:.0f} s)")
