"""Batch reproduction: execute every numbered notebook with papermill under a named parameter set.

A parameter set is one YAML file in ``notebooks/params/<name>.yaml``::

    description: what this set is for
    common:            # injected into every notebook's `parameters` cell
      dataset: default
      seed: 0
    notebooks:         # per-notebook overrides (keys must exist in that notebook's parameters cell)
      03_fusion: {epochs: 30}

Notebooks run in order (``00_*.ipynb``, ``01_*.ipynb``, ...) with ``cwd = notebooks/``. Executed
copies go to ``<out>/notebooks/``, figures to ``<figures>``, and each notebook's recorded numbers
(:class:`qbert4rec_lib.notebook.Recorder`) to ``<out>/results/``. The runner gathers them into
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

from .cache import atomic_write_json, atomic_write_text

__all__ = ["REPO", "NOTEBOOKS", "list_notebooks", "load_param_set", "run_set", "RunReport", "NotebookFailed",
           "gather_results", "update_readme"]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
PARAMS = NOTEBOOKS / "params"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


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


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "kernel_threads": os.environ.get("OMP_NUM_THREADS", "torch default")}
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


def run_set(param_set: str = "smoke", *, out_dir: str | Path | None = None, figures_dir: str | Path | None = None,
            only: list[str] | None = None, overrides: dict | None = None, results_file: str | Path | None = None,
            threads: int = 1, log=print) -> RunReport:
    """Execute the notebooks under ``param_set``; returns timings and the gathered results.

    ``threads`` sets the kernels' CPU threads (``OMP_NUM_THREADS``; 0 = torch's default, all cores). The default
    is 1: the kit's models are small, and on a 2-core machine that is doing anything else torch's OpenMP threads
    spin-wait on each other (beside two other jobs, notebook 05's Q-Bert4Rec run was still unfinished after
    ~14 min with 2 threads; with 1 thread it took 97 s); with one thread a busy machine costs at most its share.
    """
    import papermill as pm

    if threads:
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        try:
            return run_set(param_set, out_dir=out_dir, figures_dir=figures_dir, only=only, overrides=overrides,
                           results_file=results_file, threads=0, log=log)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    cfg = load_param_set(param_set)
    name = cfg["name"]
    out = Path(out_dir) if out_dir else REPO / "outputs" / name
    figs = Path(figures_dir) if figures_dir else REPO / "figures" / ("" if name == "smoke" else name)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    res_dir = out / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    report = RunReport(name, out, figs)
    t_all = time.perf_counter()
    for nb in list_notebooks(only):
        declared = notebook_parameters(nb)
        params = {k: v for k, v in cfg["common"].items() if k in declared}
        per_nb = cfg["notebooks"].get(nb.stem, {}) or {}
        unknown = set(per_nb) - set(declared)
        if unknown:
            raise ValueError(f"parameter set {name!r}: {nb.name} has no parameter(s) {sorted(unknown)} "
                             f"(its parameters cell declares {sorted(declared)})")
        params.update(per_nb)
        params.update({k: v for k, v in (overrides or {}).items() if k in declared})
        params.update({"figures_dir": str(figs.resolve()), "results_dir": str(res_dir.resolve())})
        params = {k: v for k, v in params.items() if k in declared}
        target = out / "notebooks" / nb.name
        log(f"[reproduce] {nb.name} ({name}) ...")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(target), parameters=params, cwd=str(NOTEBOOKS), kernel_name="python3",
                                progress_bar=False, log_output=False, request_save_on_cell_execute=True)
        except pm.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"notebook {nb.name} failed in cell {exc.exec_count} (cell index {exc.cell_index}): "
                f"{exc.ename}: {exc.evalue}\n  executed copy kept at {target}") from None
        report.seconds[nb.stem] = round(time.perf_counter() - t0, 1)
        log(f"[reproduce] {nb.name} done in {report.seconds[nb.stem]:.1f} s")
    report.total_seconds = round(time.perf_counter() - t_all, 1)
    dest = Path(results_file) if results_file else REPO / "figures" / "results" / name
    seconds = dict(report.seconds)
    if only and dest.with_suffix(".json").is_file():  # a partial rerun keeps the other notebooks' timings
        previous = json.loads(dest.with_suffix(".json").read_text(encoding="utf-8"))
        if previous.get("param_set") == name:
            seconds = {**previous.get("notebook_seconds", {}), **seconds}
            seconds = {k: seconds[k] for k in sorted(seconds)}
    report.results = gather_results(res_dir, name, seconds, cfg)
    write_results(report.results, dest)
    log(f"[reproduce] all notebooks done in {report.total_seconds:.0f} s; results in {dest}.json / .md")
    return report


def gather_results(res_dir: Path, set_name: str, seconds: dict, cfg: dict) -> dict:
    notebooks = {}
    for p in sorted(Path(res_dir).glob("*.json")):
        data = json.loads(p.read_text(encoding="utf-8"))
        notebooks[data.get("notebook", p.stem)] = data.get("values", {})
    return {
        "param_set": set_name,
        "description": cfg.get("description", ""),
        "parameters": {"common": cfg["common"], "notebooks": cfg["notebooks"]},
        "machine": machine_info(),
        "notebook_seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
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


def results_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Parameter set `{results['param_set']}` — {results.get('description', '')}".rstrip(" —"),
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus')} CPU cores, torch {m.get('torch')}, "
        f"{m.get('kernel_threads', '?')} thread(s) per notebook, CUDA used: {m.get('cuda')}; "
        f"generated {results['generated']}; all notebooks in {results['total_seconds']:.0f} s.",
        "",
    ]
    tables = results["notebooks"].get("06_evaluation", {}).get("results_table_md")
    if tables:
        lines += [tables, ""]
    for nb, values in results["notebooks"].items():
        lines += [f"**{nb}** ({results['notebook_seconds'].get(nb, '?')} s)", "", "| figure | value |", "|---|---|"]
        for k, v in values.items():
            if k.endswith("_md"):
                continue
            lines.append(f"| {k} | {_fmt(v)} |")
        lines.append("")
    return "\n".join(lines)


def write_results(results: dict, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest.with_suffix(".json"), results)
    atomic_write_text(dest.with_suffix(".md"), results_markdown(results) + "\n")


def update_readme(results_md: Path, readme: Path = REPO / "README.md", marker: str = "results") -> bool:
    """Replace the README block between ``<!-- marker:start -->`` and ``<!-- marker:end -->``."""
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        return False
    body = Path(results_md).read_text(encoding="utf-8").strip()
    new = text.split(start)[0] + start + "\n" + body + "\n" + end + text.split(end, 1)[1]
    atomic_write_text(readme, new)
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m qbert4rec_lib reproduce --set smoke")
