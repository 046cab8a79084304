"""Headless CLI mirroring the notebooks: ``python -m qbert4rec_lib <command> ...``.

Commands (each prints a short human summary, or JSON with ``--json``):

    stats DATA              counts, modalities, load report of a data folder (or "default")
    download NAME --to DIR  fetch a public Amazon dataset (``download --list``), then print its stats
    generate OUT            write the embedded default catalog (files + images) to a folder
    features DATA           text / image / structural item features (cached)
    fuse DATA               stage 1: cross-modal semantic injection (fused item embeddings, exit depths)
    quantize DATA           stage 2: RQ-VAE semantic IDs and codebook health
    pretrain DATA           stage 3: multi-mask pretraining + fine-tuning of Q-Bert4Rec (cached checkpoint)
    finetune DATA           fine-tuning only (no pretraining)
    evaluate DATA           test metrics + protocol of a model (trains it first if not cached)
    experiment DATA         the results table: Q-Bert4Rec vs baselines over several seeds
    ablations DATA          Q-Bert4Rec with one switch flipped per row
    cold-start DATA         new items: warm / cold users table (Q-Bert4Rec, baselines, content k-NN) over seeds
    study DATA              what makes Q-Bert4Rec competitive: variants, each to early stopping (--records)
    reproduce --set smoke   run every notebook through papermill under a parameter set

Stage commands take ``--config smoke|beauty|full`` (see ``experiments.preset``) and ``--set section.field=value``
overrides, e.g. ``--set fusion.epochs=5 --set rqvae.levels=4``.

``DATA`` is ``default`` (the embedded generated catalog) or a data folder (format auto-detected); ``--name``
picks the dataset in a folder that holds several (e.g. two ``.item`` files).

Expected failures (bad data, bad config values, a damaged cache file, an existing output folder) print one
line ``error: ...`` naming the file, line or field on stderr and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["main", "build_parser"]


def _count(text: str) -> int:
    """argparse type: an int >= 0 (threads, jobs, seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_data(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("data", nargs="?", default="default", help='"default" (embedded catalog) or a data folder')
        p.add_argument("--name", default=None,
                       help="dataset name in a folder holding several (e.g. 'Beauty' for Beauty.item)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _open(spec: str, name: str | None = None):
    from .. import open_dataset

    if name is not None:
        if spec in ("default", "embedded", "synthetic"):
            raise ValueError("--name chooses among the datasets of a data folder; the embedded default has one")
        return open_dataset(spec, name=name)
    return open_dataset(spec)


def cmd_stats(args) -> int:
    t0 = time.perf_counter()
    ds = _open(args.data, args.name)
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


def _experiment_config(args, base=None):
    from dataclasses import replace

    from ..config import override_path
    from ..experiments.presets import preset

    cfg = base if base is not None else preset(args.config)
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"--set expects section.field=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            cfg = override_path(cfg, key, value)
        except KeyError as exc:
            raise KeyError(f"--set {item}: {exc.args[0] if exc.args else exc}") from None
        except ValueError as exc:  # ConfigError / ConfigTypeError: the message names the field
            raise type(exc)(f"--set {item}: {exc}") from None
    if getattr(args, "text_model", None):
        cfg = replace(cfg, features=replace(cfg.features, text_model=args.text_model))
    if getattr(args, "image_model", None):
        cfg = replace(cfg, features=replace(cfg.features, image_model=args.image_model))
    if getattr(args, "image_weights", None):
        cfg = replace(cfg, features=replace(cfg.features, image_pretrained=args.image_weights))
    return cfg


def _emit(args, payload: dict, human: str) -> int:
    print(json.dumps(payload, indent=2, default=str) if args.json else human)
    return 0


def cmd_features(args) -> int:
    from ..semantic.features import build_features

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    fs = build_features(ds, cfg.features, progress=not args.json)
    summary = fs.summary()
    human = "\n".join([f"{n}: {v['shape']} ({v['present']:,} items have it; {v['source']}; cache {v['cache']})"
                       for n, v in summary["modalities"].items()] + [f"{n}: absent ({why})" for n, why in fs.absent.items()])
    return _emit(args, summary, human)


def cmd_fuse(args) -> int:
    from ..semantic.features import build_features
    from ..semantic.fusion import run_fusion

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    fs = build_features(ds, cfg.features, progress=not args.json)
    res = run_fusion(ds, fs, cfg.fusion, progress=not args.json)
    return _emit(args, res.summary(), json.dumps(res.summary(), indent=2))


def cmd_quantize(args) -> int:
    from ..experiments.semantic_ids import semantic_ids

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    ids = semantic_ids(ds, cfg, progress=not args.json)
    return _emit(args, ids.quantize.summary(), json.dumps(ids.quantize.summary(), indent=2))


def _model_payload(run) -> dict:
    return {"model": run.name, "seed": run.seed, "test": run.test.metrics, "valid": run.valid.metrics,
            "protocol": run.test.protocol, "from_cache": run.from_cache,
            "best_epochs": {k: v.best_epoch for k, v in run.fits.items()}}


def cmd_pretrain(args) -> int:
    from ..experiments.runs import train_model

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    run = train_model("Q-Bert4Rec", ds, cfg, seed=args.seed, progress=not args.json)
    return _emit(args, _model_payload(run), f"Q-Bert4Rec (pretrain + fine-tune) test: {run.test}")


def cmd_finetune(args) -> int:
    """Fine-tuning only (the "no pretraining" variant). Cross-domain transfer: the `cross-domain` command, notebook 08."""
    from dataclasses import replace

    from ..experiments.runs import train_model

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    run = train_model("Q-Bert4Rec", ds, replace(cfg, do_pretrain=False), seed=args.seed, progress=not args.json)
    return _emit(args, _model_payload(run), f"Q-Bert4Rec (fine-tune only) test: {run.test}")


def cmd_evaluate(args) -> int:
    from ..experiments.runs import train_model

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    run = train_model(args.model, ds, cfg, seed=args.seed, progress=not args.json)
    return _emit(args, _model_payload(run), f"{run.name} test: {run.test}")


def cmd_experiment(args) -> int:
    from ..cache import atomic_write_json, atomic_write_text
    from ..experiments.experiment import run_experiment

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    res = run_experiment(ds, cfg, models=args.models, seeds=args.seeds, progress=False,
                         log=None if args.json else print, epoch_log=not args.json and not args.quiet,
                         records_dir=args.records, train=not args.from_records)
    if args.out:
        from pathlib import Path

        atomic_write_json(Path(args.out).with_suffix(".json"), {"dataset": ds.name, "config": args.config,
                                                                "runs": res.as_dict(), "seconds": res.seconds})
        atomic_write_text(Path(args.out).with_suffix(".md"), res.table_md)
    if args.update_readme:
        from .reproduce import replace_readme_block

        command = "python -m qbert4rec_lib " + " ".join(sys.argv[1:]) if sys.argv[1:] else "experiment"
        body = (f"Generated by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())} from "
                f"{'the result records in `' + str(args.records) + '`' if args.records else 'this run'}.\n\n"
                + res.table_md)
        ok = replace_readme_block(body, args.update_readme)
        print(f"README block {args.update_readme!r} " + ("updated" if ok else "not found (no markers)"), file=sys.stderr)
    return _emit(args, {"dataset": ds.name, "runs": res.as_dict(), "table_md": res.table_md, "seconds": res.seconds},
                 res.table_md + f"\n({res.seconds:.0f} s)")


def cmd_ablations(args) -> int:
    from ..cache import atomic_write_text
    from ..experiments.experiment import ABLATIONS, ablation_table, run_ablations

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    runs = run_ablations(ds, cfg, args.names or tuple(ABLATIONS), seed=args.seed, progress=False,
                         log=None if args.json else print)
    table = ablation_table(runs)
    if args.out:
        atomic_write_text(args.out, table)
    return _emit(args, {n: r.test.metrics for n, r in runs.items()}, table)


def cmd_study(args) -> int:
    from ..cache import atomic_write_text
    from ..experiments.study import STUDY, run_study, study_table

    if args.list:
        print("\n".join(f"{name:28s} {desc}" for name, (desc, _) in STUDY.items()))
        return 0
    if args.from_records:
        from ..experiments.study import study_runs_from_records

        if not args.records:
            raise ValueError("study --from-records needs --records FOLDER")
        runs = study_runs_from_records(args.records)
    else:
        ds, cfg = _open(args.data), _experiment_config(args)
        runs = run_study(ds, cfg, args.rows or tuple(STUDY), seeds=args.seeds, records_dir=args.records,
                         epoch_log=not args.json and not args.quiet, log=None if args.json else print)
    table = study_table(runs)
    if args.out:
        atomic_write_text(args.out, table)
    if args.update_readme:
        from .reproduce import replace_readme_block

        body = (f"Generated by `python -m qbert4rec_lib {' '.join(sys.argv[1:])}` on "
                f"{time.strftime('%Y-%m-%d', time.gmtime())} from the result records in `{args.records}`.\n\n{table}")
        ok = replace_readme_block(body, args.update_readme)
        print(f"README block {args.update_readme!r} " + ("updated" if ok else "not found (no markers)"), file=sys.stderr)
    return _emit(args, {n: [r.test.metrics for r in rs] for n, rs in runs.items()}, table)


def cmd_cold_start(args) -> int:
    from pathlib import Path

    from ..cache import atomic_write_json, atomic_write_text
    from ..experiments.coldstart import run_cold_start

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    report = run_cold_start(ds, cfg, fraction=args.fraction, by=args.by, seeds=args.seeds, models=args.models,
                            log=None if args.json else print)
    table = report.table()
    payload = {"dataset": ds.name, "config": args.config} | report.to_json()
    if args.out:
        atomic_write_json(Path(args.out).with_suffix(".json"), payload)
        atomic_write_text(Path(args.out).with_suffix(".md"), table)
    _readme_block(args, f"{len(args.seeds)} seed(s), {report.seconds / 60:.0f} min", table)
    return _emit(args, payload, table + f"\n({report.seconds:.0f} s)")


def _readme_block(args, what: str, body: str) -> None:
    """With ``--update-readme MARKER``: ``body`` into README's generated block, headed by the exact command."""
    if not getattr(args, "update_readme", None):
        return
    from .reproduce import replace_readme_block

    head = (f"Generated by `python -m qbert4rec_lib {' '.join(sys.argv[1:])}` on "
            f"{time.strftime('%Y-%m-%d', time.gmtime())} ({what}).\n\n")
    ok = replace_readme_block(head + body, args.update_readme)
    print(f"README block {args.update_readme!r} " + ("updated" if ok else "not found (no markers)"), file=sys.stderr)


def cmd_dial(args) -> int:
    """The content-to-ID dial: cold-start protocol on generated catalogs along ``SyntheticConfig.id_driven``."""
    from pathlib import Path

    from ..cache import atomic_write_json, atomic_write_text
    from ..experiments.coldstart import dial_table, run_dial
    from . import viz

    cfg = _experiment_config(args)
    t0 = time.perf_counter()
    points = run_dial(cfg, args.values, seeds=args.seeds, path=args.path, by=args.by,
                      log=None if args.json else print)
    table = dial_table(points)
    seconds = time.perf_counter() - t0
    if args.out:
        out = Path(args.out)
        atomic_write_json(out.with_suffix(".json"), {"values": list(args.values), "seeds": list(args.seeds),
                                                     "path": args.path, "by": args.by, "seconds": seconds,
                                                     "points": points})
        atomic_write_text(out.with_suffix(".md"), table)
    if args.figure:
        viz.save_figure(viz.dial_figure(points), Path(args.figure).name, Path(args.figure).parent or None)
    _readme_block(args, f"{len(args.seeds)} seed(s) per point, {seconds / 60:.0f} min", table)
    return _emit(args, {"points": points}, table + f"\n({seconds:.0f} s)")


def cmd_cross_domain(args) -> int:
    from ..experiments.crossdomain import run_cross_domain

    from ..experiments.crossdomain import DEFAULT_SOURCE, DEFAULT_TARGET
    from ..experiments.presets import smoke_config
    from ..data.synthetic import load_default

    source = _open(args.source) if args.source else load_default(**DEFAULT_SOURCE)
    target = _open(args.target) if args.target else load_default(**DEFAULT_TARGET)

    cfg = _experiment_config(args, base=smoke_config(args.epochs_scale) if args.config == "smoke" else None)
    res = run_cross_domain(source, target, cfg, seed=args.seed, progress=not args.json, log=None if args.json else print)
    payload = {"source": source.name, "target": target.name, "shared_vocab_sizes": list(res.shared_vocab_sizes),
               "token_overlap": res.token_overlap, "source_test": res.source_test.metrics,
               "target_test": {k: v.metrics for k, v in res.test.items()},
               "protocol": next(iter(res.test.values())).protocol}
    return _emit(args, payload, res.table_md())


def cmd_generate(args) -> int:
    from ..data.synthetic import SyntheticConfig, generate_catalog

    cfg = SyntheticConfig(seed=args.seed)
    path = generate_catalog(cfg, args.out)
    print(path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import NotebookFailed, run_set, update_readme

    overrides = {}
    if args.data:  # notebooks run with cwd=notebooks/: make a folder given from here absolute
        from pathlib import Path

        overrides["dataset"] = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data
    try:
        report = run_set(args.set, out_dir=args.out, figures_dir=args.figures, only=args.only, overrides=overrides,
                         threads=args.threads, jobs=args.jobs or None)
    except NotebookFailed as exc:
        print(f"[reproduce] FAILED: {exc}", file=sys.stderr)
        return 1
    if args.update_readme:
        from pathlib import Path

        from .reproduce import REPO

        ok = update_readme(REPO / "figures" / "results" / f"{report.param_set}.md", marker=f"results-{report.param_set}")
        print("[reproduce] README results section " + ("updated" if ok else "not found (no markers)"))
    if args.publish:  # executed copies to read without running anything (e.g. committed, rendered by GitHub)
        from pathlib import Path

        from ..cache import atomic_write_text
        from .reproduce import REPO as REPO_ROOT

        dest = Path(args.publish)
        for nb in sorted((Path(report.out_dir) / "notebooks").glob("*.ipynb")):
            # paths inside the checkout written as <repo>/...: no machine path in a committed file
            atomic_write_text(dest / nb.name, nb.read_text(encoding="utf-8").replace(str(REPO_ROOT), "<repo>"))
        print(f"[reproduce] executed notebooks published to {dest}")
    return 0


def cmd_download(args) -> int:
    """Fetch a public Amazon dataset into a folder (see ``qbert4rec_lib.data.download``), then print its stats."""
    from ..data.download import DownloadError, download_dataset, list_datasets

    if args.list or not args.name:
        print(list_datasets())
        return 0 if args.list else 2
    folder = args.to or f"data/{args.name}"
    try:
        download_dataset(args.name, folder, base_url=args.base_url, retries=args.retries, timeout=args.timeout,
                         progress=not args.json, log=(lambda m: print(m, flush=True)) if not args.json else (lambda m: None))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return cmd_stats(argparse.Namespace(data=str(folder), json=args.json, name=None))
    except ValueError as exc:  # e.g. a folder holding several datasets: the loader needs name=...
        print(f"downloaded into {folder}, but its stats could not be read: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qbert4rec_lib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="dataset counts, modalities and load report")
    _add_data(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("download", help="fetch a public Amazon dataset (2014/2018 5-core + metadata) into a folder")
    p.add_argument("name", nargs="?", help="dataset name (see --list), e.g. beauty")
    p.add_argument("--to", default=None, help="folder for the files (default: data/NAME)")
    p.add_argument("--list", action="store_true", help="list the datasets, their files and approximate sizes")
    p.add_argument("--base-url", default=None, help="replace the release's base URL (a mirror; default: the public "
                   "one, or $QBERT4REC_DOWNLOAD_BASE_URL)")
    p.add_argument("--retries", type=int, default=3, help="retries per file after the first attempt (default 3)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to connect and per read (default 30)")
    p.add_argument("--json", action="store_true", help="no progress output; print the stats as JSON")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("generate", help="write the embedded default catalog to a folder")
    p.add_argument("out", help="a new or empty folder (or one written by generate before, which is replaced)")
    p.add_argument("--seed", type=_count, default=0)
    p.set_defaults(func=cmd_generate)

    def stage(name, help_, func, data=True):
        p = sub.add_parser(name, help=help_)
        _add_data(p, data)
        from ..experiments.presets import PRESETS

        p.add_argument("--config", default="smoke", choices=list(PRESETS),
                       help="preset (default: smoke; see experiments.preset)")
        p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field")
        p.add_argument("--seed", type=_count, default=0)
        p.add_argument("--threads", type=_count, default=0, help="torch CPU threads (0 = torch's default)")
        p.set_defaults(func=func)
        return p

    p = stage("features", "text / image / structural item features", cmd_features)
    p.add_argument("--text-model", help="HF model name or local folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--image-model", help='"fit" (CLIP fitted on the catalog) or an open_clip architecture, e.g. ViT-B-32')
    p.add_argument("--image-weights", help="open_clip pretrained tag (online) or a local .bin/.safetensors file")
    stage("fuse", "stage 1: fused item embeddings", cmd_fuse)
    stage("quantize", "stage 2: RQ-VAE semantic IDs", cmd_quantize)
    stage("pretrain", "stage 3: multi-mask pretraining + fine-tuning", cmd_pretrain)
    stage("finetune", "stage 3: fine-tuning only (no pretraining)", cmd_finetune)
    p = stage("evaluate", "test metrics and protocol of a model", cmd_evaluate)
    p.add_argument("--model", default="Q-Bert4Rec", choices=["Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID", "Popularity"])
    p = stage("experiment", "results table over seeds", cmd_experiment)
    p.add_argument("--models", nargs="*", default=["Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID", "Popularity"])
    p.add_argument("--seeds", nargs="*", type=_count, default=[0, 1, 2])
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--records", default=None, metavar="FOLDER",
                   help="result records (one small JSON per finished model x seed): finished runs are read from "
                        "here instead of trained, new ones are written here (commit them)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines (one line per finished run)")
    p.add_argument("--update-readme", default=None, metavar="MARKER",
                   help="write the table into README.md between <!-- MARKER:start --> and <!-- MARKER:end -->")
    p.add_argument("--from-records", action="store_true",
                   help="train nothing: the table of the runs --records already holds (missing ones are listed)")
    p = stage("ablations", "Q-Bert4Rec ablations (one seed)", cmd_ablations)
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--out", default=None, help="write the markdown table here")

    p = stage("study", "what makes Q-Bert4Rec competitive: one row per variant, each to early stopping", cmd_study)
    p.add_argument("--rows", nargs="*", default=None, help="study rows (default: all; see --list)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--records", default=None, metavar="FOLDER", help="result records: finished runs are read from "
                   "here, new ones written here")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--list", action="store_true", help="list the study rows and exit")
    p.add_argument("--from-records", action="store_true", help="train nothing: the table of the labelled records")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into a README block")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    from ..experiments.coldstart import MODELS as COLD_MODELS

    p = stage("cold-start", "new items: warm/cold table (protocol in coldstart.py)", cmd_cold_start)
    p.add_argument("--seeds", nargs="*", type=_count, default=[0, 1, 2])
    p.add_argument("--fraction", type=_positive, default=0.1, help="share of the items held out (default 0.1)")
    p.add_argument("--by", default="time", choices=["time", "random"], help="which items are new (default: time)")
    p.add_argument("--models", nargs="*", default=list(COLD_MODELS), choices=list(COLD_MODELS), metavar="MODEL",
                   help=f"rows of the table (default: all of {', '.join(COLD_MODELS)})")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into a README block")

    p = stage("dial", "when do semantic IDs help? cold-start protocol along the generator's content-to-ID dial",
              cmd_dial, data=False)
    p.add_argument("--values", nargs="*", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="SyntheticConfig.id_driven values (0 = content-driven, 1 = ID-driven)")
    p.add_argument("--seeds", nargs="*", type=_count, default=[0])
    p.add_argument("--path", default="unknown", help="stage-1 path of the new items (see coldstart.NEW_ITEM_PATHS)")
    p.add_argument("--by", default="time", choices=["time", "random"], help="which items are new (default: time)")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--figure", default=None, help="write the figure (PNG + HTML) at this path without suffix, "
                   "e.g. figures/07_interpretability_dial")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into a README block")

    p = stage("cross-domain", "pretrain on a source catalog, fine-tune on a target (shared semantic IDs)",
              cmd_cross_domain, data=False)
    p.add_argument("--source", default=None, help="source data folder (default: generated catalog, seed 11)")
    p.add_argument("--target", default=None, help="target data folder (default: generated catalog, seed 12, 4 top categories)")
    p.add_argument("--epochs-scale", type=_positive, default=1.0, help="with --config smoke: fraction of its epochs")

    p = sub.add_parser("reproduce", help="run all notebooks through papermill under a parameter set")
    p.add_argument("--set", default="smoke", help="parameter set name (notebooks/params/<name>.yaml) or a YAML path")
    p.add_argument("--data", default=None, help="override the dataset parameter (e.g. a data folder)")
    p.add_argument("--only", nargs="*", default=None, help="run only these notebooks (e.g. 01 03_fusion)")
    p.add_argument("--out", default=None, help="folder for executed notebooks and per-notebook results")
    p.add_argument("--figures", default=None, help="folder for figures (default: figures/ or figures/<set>/)")
    p.add_argument("--update-readme", action="store_true", help="write the results into README.md's results block")
    p.add_argument("--publish", default=None, metavar="FOLDER",
                   help="also copy the executed notebooks there (e.g. executed/smoke, committed: readable without running)")
    p.add_argument("--threads", type=_count, default=1, help="CPU threads of each notebook kernel (default 1; 0 = all)")
    p.add_argument("--jobs", type=_count, default=0,
                   help="notebooks run at once (default 0 = cores / --threads + 2, at most 4; 1 = one after another)")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    from ..cache import CacheError

    try:
        return args.func(args)
    except (ValueError, KeyError, OSError, CacheError) as exc:  # expected failures: one line, no traceback
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The message of an expected error on one line (a KeyError's message without its repr quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(text):
        text = f"{exc.filename}: {text}"
    text = " ".join(str(text).split())
    return text or type(exc).__name__
