"""Batch reproduction: execute every numbered notebook with papermill under a named parameter set.

A parameter set is one YAML file in ``notebooks/params/<name>.yaml``::

    description: what this set is for
    common:            # injected into every notebook's `parameters` cell
      dataset: default
      seed: 0
    notebooks:         # per-notebook overrides (keys must exist in that notebook's parameters cell)
      03_fusion: {epochs: 30}

Notebooks start in numbered order (``00_*.ipynb``, ``01_*.ipynb``, ...) with ``cwd = notebooks/``, each in
its own worker process; on a 2-core machine four run at once (``jobs``), sharing the stage cache, where a
notebook that needs an artifact another is still building waits for it (so the numbers do not depend on
``jobs``; ``jobs=1`` runs them strictly one after another). Executed
copies go to ``<out>/notebooks/``, figures to ``<figures>``, and each notebook's recorded numbers
(:class:`qbert4rec_lib.kit.notebook.Recorder`) to ``<out>/results/``. The runner gathers them into
``<results file>.json`` + ``.md``. A failing notebook stops the run, naming the notebook and the
cell; its executed copy is kept for inspection. A partial rerun (``only=[...]``) into the same output
folder replaces those notebooks' results and timings and keeps the others'.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text

__all__ = ["REPO", "NOTEBOOKS", "list_notebooks", "load_param_set", "set_parameters", "run_set", "RunReport",
           "NotebookFailed", "gather_results", "update_readme", "readme_markdown"]

REPO = Path(__file__).resolve().parents[2]  # the checkout: qbert4rec_lib/kit/reproduce.py -> its root
NOTEBOOKS = REPO / "notebooks"
PARAMS = NOTEBOOKS / "params"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error. ``finished``: the notebooks of the
    run that had completed by then (their results are written)."""

    def __init__(self, message: str, finished: tuple[str, ...] = ()):
        super().__init__(message)
        self.finished = tuple(finished)


@dataclass
class RunReport:
    param_set: str
    out_dir: Path
    figures_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    total_seconds: float = 0.0


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    nbs = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = set(only)
        nbs = [p for p in nbs if p.stem in wanted or p.stem[:2] in wanted]
        missing = wanted - {p.stem for p in nbs} - {p.stem[:2] for p in nbs}
        if missing:
            raise FileNotFoundError(f"no notebook(s) named {sorted(missing)} in {NOTEBOOKS}")
    return nbs


def load_param_set(name_or_path: str) -> dict:
    """Read a parameter-set YAML (by name from notebooks/params/ or by path)."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = PARAMS / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS.glob("*.yaml"))
        raise FileNotFoundError(f"parameter set {name_or_path!r} not found ({path}); known sets: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"description", "common", "notebooks", "results_name"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    data.setdefault("common", {})
    data.setdefault("notebooks", {})
    data["name"] = path.stem
    return data


def notebook_parameters(nb_path: Path) -> dict:
    """The names and default values in a notebook's `parameters` cell."""
    import papermill as pm

    return {k: v["default"] for k, v in pm.inspect_notebook(str(nb_path)).items()}


def set_parameters(cfg: dict, nb_path: Path, overrides: dict | None = None) -> dict:
    """A notebook's parameters under a loaded parameter set: the set's ``common`` values the notebook declares, then
    its own section (a name it does not declare is an error), then ``overrides`` it declares."""
    declared = notebook_parameters(nb_path)
    params = {k: v for k, v in cfg["common"].items() if k in declared}
    per_nb = cfg["notebooks"].get(nb_path.stem, {}) or {}
    unknown = set(per_nb) - set(declared)
    if unknown:
        raise ValueError(f"parameter set {cfg['name']!r}: {nb_path.name} has no parameter(s) {sorted(unknown)} "
                         f"(its parameters cell declares {sorted(declared)})")
    params.update(per_nb)
    params.update({k: v for k, v in (overrides or {}).items() if k in declared})
    return params


def machine_info(threads: int | None = None) -> dict:
    kernel_threads = threads if threads else os.environ.get("OMP_NUM_THREADS", "torch default")
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "kernel_threads": kernel_threads}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            info["cpu_model"] = m.group(1).strip()
    except Exception:  # pragma: no cover
        pass
    return info


def default_jobs(threads: int = 1) -> int:
    """How many notebooks run at once by default: two more than ``cpus // threads``, at most 4.

    The extra workers are there because notebooks wait for each other's artifacts (03 for 02's features, 05-07 for
    the semantic IDs and the first Q-Bert4Rec run, ...) and a waiting notebook uses no CPU; the OS shares the cores
    between the others. Measured on the 2-core reference machine, fresh cache, smoke set (9 notebooks): 414 s of
    wall time with 3 workers, 374 s with 4 (about 700 s of CPU time in all). ``threads=0`` (torch's default: every
    core) means 1.
    """
    if not threads:
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // threads + 2))


def run_set(param_set: str = "smoke", *, out_dir: str | Path | None = None, figures_dir: str | Path | None = None,
            only: list[str] | None = None, overrides: dict | None = None, results_file: str | Path | None = None,
            threads: int = 1, jobs: int | None = None, log=print) -> RunReport:
    """Execute the notebooks under ``param_set``; returns timings and the gathered results.

    ``threads`` sets the kernels' CPU threads (``OMP_NUM_THREADS``; 0 = torch's default, all cores). The default
    is 1: the kit's models are small, and on a 2-core machine that is doing anything else torch's OpenMP threads
    spin-wait on each other (beside two other jobs, notebook 05's Q-Bert4Rec run was still unfinished after
    ~14 min with 2 threads; with 1 thread it took 97 s); with one thread a busy machine costs at most its share.

    ``jobs`` notebooks run at once (default :func:`default_jobs`), each in its own process, started in numbered
    order as workers free up. They share the stage cache: a notebook that needs an artifact another one is still
    building waits for it (:meth:`qbert4rec_lib.cache.StageDir.lock`) and then loads it, so the results are the
    same as a one-at-a-time run (``jobs=1``). Each worker's output goes to ``<out>/logs/<notebook>.log``.
    """
    cfg = load_param_set(param_set)
    name = cfg["name"]
    jobs = default_jobs(threads) if jobs is None else max(1, int(jobs))
    out = Path(out_dir) if out_dir else REPO / "outputs" / name
    figs = Path(figures_dir) if figures_dir else REPO / "figures" / ("" if name == "smoke" else name)
    for sub in ("notebooks", "results", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    res_dir = out / "results"
    figs.mkdir(parents=True, exist_ok=True)
    report = RunReport(name, out, figs)

    tasks = []  # (notebook, parameters) in numbered order; parameters are checked before anything runs
    for nb in list_notebooks(only):
        params = set_parameters(cfg, nb, overrides)
        params.update({"figures_dir": str(figs.resolve()), "results_dir": str(res_dir.resolve())})
        tasks.append((nb, params))

    env = dict(os.environ)
    env["QBERT4REC_STATIC_FIGURES"] = "1"  # batch runs show the saved PNGs (viz.interactive)
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    t_all = time.perf_counter()
    _execute_all(tasks, out, env, jobs, report, name, log)
    report.total_seconds = round(time.perf_counter() - t_all, 1)

    dest = Path(results_file) if results_file else REPO / "figures" / "results" / name
    seconds = dict(report.seconds)
    wall = report.total_seconds
    previous = {}
    if only and dest.with_suffix(".json").is_file():  # a partial rerun keeps the other notebooks' results
        previous = json.loads(dest.with_suffix(".json").read_text(encoding="utf-8"))
        if previous.get("param_set") == name:
            seconds = {**previous.get("notebook_seconds", {}), **seconds}
            seconds = {k: seconds[k] for k in sorted(seconds)}
            wall = None  # the wall time of a partial rerun says nothing about a whole run
        else:
            previous = {}
    report.results = gather_results(res_dir, name, seconds, cfg, wall_seconds=wall, jobs=jobs,
                                    threads=threads)
    if previous:  # the notebooks not rerun keep their recorded figures (a rerun one replaces its own)
        merged = {**previous.get("notebooks", {}), **report.results["notebooks"]}
        report.results["notebooks"] = {k: merged[k] for k in sorted(merged)}
        earlier = previous.get("last_full_run") or {k: previous.get(k) for k in ("generated", "wall_seconds", "jobs")}
        report.results["last_full_run"] = earlier  # the timing of the whole run the others' figures come from
        report.results["rerun"] = sorted(set(report.seconds) | set(previous.get("rerun", [])))
    write_results(report.results, dest)
    log(f"[reproduce] all notebooks done in {report.total_seconds:.0f} s ({jobs} at a time); "
        f"results in {dest}.json / .md")
    return report


def _execute_all(tasks, out: Path, env: dict, jobs: int, report: RunReport, set_name: str, log) -> None:
    """Run ``tasks`` in worker processes, at most ``jobs`` at once, in order; stop everything on a failure."""
    pending, running = list(tasks), {}  # running: notebook stem -> (Popen, start time, target, status, log)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                nb, params = pending.pop(0)
                target = out / "notebooks" / nb.name
                status = out / "logs" / f"{nb.stem}.status.json"
                status.unlink(missing_ok=True)
                spec = {"notebook": str(nb), "target": str(target), "parameters": params, "cwd": str(NOTEBOOKS),
                        "status": str(status)}
                logfile = out / "logs" / f"{nb.stem}.log"
                with open(logfile, "w", encoding="utf-8") as fh:
                    proc = subprocess.Popen([sys.executable, "-m", "qbert4rec_lib.kit.reproduce", "--execute",
                                             json.dumps(spec)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                            cwd=str(REPO), start_new_session=True)  # cwd: the kit is importable
                running[nb.stem] = (proc, time.perf_counter(), target, status, logfile)
                log(f"[reproduce] {nb.name} ({set_name}) started")
            time.sleep(0.2)
            for stem, (proc, t0, target, status, logfile) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[stem]
                if proc.returncode != 0:
                    raise NotebookFailed(_failure_message(stem, target, status, logfile, proc.returncode),
                                         finished=tuple(report.seconds))
                report.seconds[stem] = round(time.perf_counter() - t0, 1)
                log(f"[reproduce] {stem}.ipynb done in {report.seconds[stem]:.1f} s")
    except BaseException as exc:  # a failure or Ctrl-C: stop the other notebooks, keep their partial copies
        for stem, (proc, _, target, _, _) in running.items():
            _stop(proc)
            if isinstance(exc, NotebookFailed):
                log(f"[reproduce] stopped {stem}.ipynb (partial copy at {target})")
        raise


def _failure_message(stem: str, target: Path, status: Path, logfile: Path, returncode: int) -> str:
    try:
        info = json.loads(status.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if info and info.get("cell_index") is not None:
        return (f"notebook {stem}.ipynb failed in cell {info['exec_count']} (cell index {info['cell_index']}): "
                f"{info['ename']}: {info['evalue']}\n  executed copy kept at {target}")
    try:
        tail = "".join(logfile.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
    except OSError:
        tail = ""
    what = info.get("error", "") if info else f"its worker process exited with code {returncode}"
    return (f"notebook {stem}.ipynb failed: {what}\n  executed copy (if any) at {target}; log {logfile}"
            + (f"\n  last lines of the log:\n{tail}" if tail else ""))


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt a worker (it shuts its kernel down), then kill its process group if it lingers."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


# Kernels started at the same moment by parallel workers can die before their first reply (seen under heavy load in the
# test suite: "Kernel died before replying to kernel_info"); no cell has run then, so starting again is safe.
KERNEL_START_ATTEMPTS = 3


def _execute_one(spec: dict) -> int:
    """Worker: execute one notebook with papermill; on failure write what failed to ``spec['status']``."""
    import logging

    import papermill as pm

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # cell outputs go to the worker's log file
    status = Path(spec["status"])
    try:
        for attempt in range(KERNEL_START_ATTEMPTS):
            try:
                pm.execute_notebook(spec["notebook"], spec["target"], parameters=spec["parameters"], cwd=spec["cwd"],
                                    kernel_name="python3", progress_bar=False, log_output=True,
                                    request_save_on_cell_execute=True)
                break
            except RuntimeError as exc:  # the kernel died while starting (no cell ran): start it again
                if "before replying to kernel_info" not in str(exc) or attempt == KERNEL_START_ATTEMPTS - 1:
                    raise
                logging.info(f"kernel died while starting ({exc}); attempt {attempt + 2} of {KERNEL_START_ATTEMPTS}")
    except pm.PapermillExecutionError as exc:
        atomic_write_json(status, {"cell_index": exc.cell_index, "exec_count": exc.exec_count, "ename": exc.ename,
                                   "evalue": str(exc.evalue)})
        return 3
    except KeyboardInterrupt:
        atomic_write_json(status, {"error": "interrupted"})
        return 130
    except Exception as exc:  # kernel died, bad notebook file, ...
        atomic_write_json(status, {"error": f"{type(exc).__name__}: {exc}"})
        return 4
    return 0


def gather_results(res_dir: Path, set_name: str, seconds: dict, cfg: dict, *, wall_seconds: float | None = None,
                   jobs: int = 1, threads: int = 1) -> dict:
    notebooks = {}
    for p in sorted(Path(res_dir).glob("*.json")):
        data = json.loads(p.read_text(encoding="utf-8"))
        notebooks[data.get("notebook", p.stem)] = data.get("values", {})
    return {
        "param_set": set_name,
        "description": cfg.get("description", ""),
        "parameters": {"common": cfg["common"], "notebooks": cfg["notebooks"]},
        "machine": machine_info(threads),
        "notebook_seconds": seconds,  # each notebook's own wall time (with --jobs > 1 they overlap)
        "total_seconds": round(sum(seconds.values()), 1),
        "wall_seconds": wall_seconds,  # the whole run, start to end (None after a partial rerun)
        "jobs": jobs,
        "threads_per_notebook": threads or "torch default",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "notebooks": notebooks,
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, (dict, list)):
        s = json.dumps(v)
        return s if len(s) <= 80 else s[:77] + "..."
    return str(v)


def headline_markdown(results: dict, where: str = "below") -> list[str]:
    """The head of a results file: the set, the machine and timing, and notebook 06's results table.

    ``where``: where the per-notebook times are, for the timing sentence ("below" in the results file)."""
    m = results["machine"]
    lines = [
        f"Parameter set `{results['param_set']}` — {results.get('description', '')}".rstrip(" —"),
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus')} CPU cores, torch {m.get('torch')}, "
        f"{m.get('kernel_threads', '?')} thread(s) per notebook, CUDA used: {m.get('cuda')}; "
        f"generated {results['generated']}; " + _timing_sentence(results, where),
        "",
    ]
    tables = results["notebooks"].get("06_evaluation", {}).get("results_table_md")
    if tables:
        lines += [tables, ""]
    return lines


def results_markdown(results: dict) -> str:
    lines = headline_markdown(results)
    for nb, values in results["notebooks"].items():
        lines += [f"**{nb}** ({results['notebook_seconds'].get(nb, '?')} s)", "", "| figure | value |", "|---|---|"]
        for k, v in values.items():
            if k.endswith("_md"):
                continue
            lines.append(f"| {k} | {_fmt(v)} |")
        lines.append("")
    return "\n".join(lines)


def _timing_sentence(results: dict, where: str = "below") -> str:
    wall, jobs = results.get("wall_seconds"), results.get("jobs", 1)
    full = results.get("last_full_run") or {}
    if wall is None and results.get("rerun"):  # merged partial reruns: the times come from different runs
        when = f" ({full['generated']})" if full.get("generated") else ""
        head = (f"the last full run{when} took {full['wall_seconds']:.0f} s of wall time, {full.get('jobs', 1)} at a "
                f"time; " if full.get("wall_seconds") else "")
        return (f"{head}rerun alone since then: {', '.join(results['rerun'])} (their times, {where}, are those "
                f"reruns', not part of a whole run).")
    if wall is None or jobs == 1:
        return f"all notebooks in {results['total_seconds']:.0f} s."
    return (f"all notebooks in {wall:.0f} s of wall time, {jobs} at a time (their own times, {where}, add up to "
            f"{results['total_seconds']:.0f} s and include waiting for a shared artifact).")


def write_results(results: dict, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest.with_suffix(".json"), results)
    atomic_write_text(dest.with_suffix(".md"), results_markdown(results) + "\n")


def readme_markdown(results: dict, link: str | None = None) -> str:
    """The README's block for one set: the headline only (the per-notebook figure tables stay in ``link``)."""
    lines = headline_markdown(results, where="in the linked file")
    if link:
        lines.append(f"Every recorded figure, per notebook, with its time: [`{link}`]({link}).")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# The documents that hold generated blocks: the README's headline tables, every other table on the results page.
RESULT_DOCUMENTS = (REPO / "README.md", REPO / "docs" / "results.md")


def document_with_block(marker: str, documents=None) -> Path | None:
    """The first of ``documents`` (default :data:`RESULT_DOCUMENTS`) holding ``<!-- marker:start -->`` and
    ``<!-- marker:end -->`` (None: none does)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    for doc in map(Path, RESULT_DOCUMENTS if documents is None else documents):
        if doc.is_file():
            text = doc.read_text(encoding="utf-8")
            if start in text and end in text:
                return doc
    return None


def update_readme(results_md: Path, readme: Path | None = None, marker: str = "results") -> bool:
    """Replace the block between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``readme`` (default: the
    README or the results page, whichever holds the marker: :data:`RESULT_DOCUMENTS`).

    With the results JSON beside ``results_md`` (as :func:`write_results` leaves it) the block is the headline
    (:func:`readme_markdown`: set, machine, timing, results table) and a link to ``results_md`` (relative to the
    document), so the document stays short; without it, the markdown file's whole text.
    """
    readme = Path(readme) if readme is not None else document_with_block(marker)
    if readme is None:
        return False
    results_md = Path(results_md)
    if results_md.with_suffix(".json").is_file():
        try:
            link = os.path.relpath(results_md.resolve(), Path(readme).resolve().parent).replace(os.sep, "/")
        except ValueError:  # another drive (Windows)
            link = str(results_md)
        results = json.loads(results_md.with_suffix(".json").read_text(encoding="utf-8"))
        body = readme_markdown(results, link)
    else:
        body = results_md.read_text(encoding="utf-8").strip()
    return replace_readme_block(body, marker, readme)


def replace_readme_block(body: str, marker: str, readme: Path | None = None) -> bool:
    """Put ``body`` between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of ``readme`` (default: the README or
    the results page, whichever holds the marker); False if the markers are missing."""
    readme = Path(readme) if readme is not None else document_with_block(marker)
    if readme is None or not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        return False
    new = text.split(start)[0] + start + "\n" + body.strip() + "\n" + end + text.split(end, 1)[1]
    atomic_write_text(readme, new)
    return True


if __name__ == "__main__":  # pragma: no cover - the worker process of run_set
    if len(sys.argv) == 3 and sys.argv[1] == "--execute":
        sys.exit(_execute_one(json.loads(sys.argv[2])))
    sys.exit("use: python -m qbert4rec_lib reproduce --set smoke")
