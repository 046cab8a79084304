"""Headless CLI mirroring the notebooks: ``python -m qbert4rec_lib <command> ...``.

Commands (each prints a short human summary, or JSON with ``--json``):

    stats DATA              counts, modalities, load report of a data folder (or "default")
    generate OUT            write the embedded default catalog (files + images) to a folder
    reproduce --set smoke   run every notebook through papermill under a parameter set

``DATA`` is ``default`` (the embedded generated catalog) or a data folder (format auto-detected).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["main", "build_parser"]


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", default="default", help='"default" (embedded catalog) or a data folder')
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _open(spec: str):
    from . import open_dataset

    return open_dataset(spec)


def cmd_stats(args) -> int:
    t0 = time.perf_counter()
    ds = _open(args.data)
    stats = ds.stats()
    stats["load_seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        mods = ", ".join(f"{k}: {'present' if v else 'absent'}" for k, v in stats["modalities"].items() if k != "image_source")
        print(f"{stats['name']}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions")
        print(f"modalities: {mods}")
        print(f"load report: {stats['load_report']['summary']}")
    return 0


def cmd_generate(args) -> int:
    from .synthetic import SyntheticConfig, generate_catalog

    cfg = SyntheticConfig(seed=args.seed)
    path = generate_catalog(cfg, args.out)
    print(path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import NotebookFailed, run_set, update_readme

    overrides = {}
    if args.data:
        overrides["dataset"] = args.data
    try:
        report = run_set(args.set, out_dir=args.out, figures_dir=args.figures, only=args.only, overrides=overrides)
    except NotebookFailed as exc:
        print(f"[reproduce] FAILED: {exc}", file=sys.stderr)
        return 1
    if args.update_readme:
        from pathlib import Path

        from .reproduce import REPO

        ok = update_readme(REPO / "figures" / "results" / f"{report.param_set}.md", marker=f"results-{report.param_set}")
        print("[reproduce] README results section " + ("updated" if ok else "not found (no markers)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qbert4rec_lib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="dataset counts, modalities and load report")
    _add_data(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("generate", help="write the embedded default catalog to a folder")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("reproduce", help="run all notebooks through papermill under a parameter set")
    p.add_argument("--set", default="smoke", help="parameter set name (notebooks/params/<name>.yaml) or a YAML path")
    p.add_argument("--data", default=None, help="override the dataset parameter (e.g. a data folder)")
    p.add_argument("--only", nargs="*", default=None, help="run only these notebooks (e.g. 01 03_fusion)")
    p.add_argument("--out", default=None, help="folder for executed notebooks and per-notebook results")
    p.add_argument("--figures", default=None, help="folder for figures (default: figures/ or figures/<set>/)")
    p.add_argument("--update-readme", action="store_true", help="write the results into README.md's results block")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
