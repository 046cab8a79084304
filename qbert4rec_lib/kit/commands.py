"""What each CLI command does (``cmd_<name>(args) -> exit status``): open the data, build the config from
``--config`` / ``--set``, run the stage or experiment, print a human summary or JSON. The argument parser and the
error handling are :mod:`~qbert4rec_lib.kit.cli`'s.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["cmd_stats", "cmd_features", "cmd_fuse", "cmd_quantize", "cmd_pretrain", "cmd_finetune", "cmd_evaluate", "cmd_experiment", "cmd_ablations", "cmd_study", "cmd_breakdown", "cmd_cold_start", "cmd_dial", "cmd_cross_domain", "cmd_generate", "cmd_reproduce", "cmd_download"]


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
    from ..experiments.stages import semantic_ids

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    ids = semantic_ids(ds, cfg, progress=not args.json)
    if args.export_ids:
        from ..experiments.pinned import export_semantic_ids

        folder = export_semantic_ids(ids, ds, cfg, args.export_ids)
        print(f"semantic IDs pinned in {folder} (key {ids.key}); read them with --semantic-ids {folder}", file=sys.stderr)
    if ids.quantize is None:  # attribute tokens (semantic_source metadata / ground_truth): no RQ-VAE ran
        summary = {"source": ids.source, "key": ids.key, "vocab_sizes": list(ids.table.vocab_sizes),
                   "items": len(ids.table.ids)}
        return _emit(args, summary, json.dumps(summary, indent=2))
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
    from ..atomic import atomic_write_json, atomic_write_text
    from ..experiments.experiment import run_experiment

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    res = run_experiment(ds, cfg, models=args.models, seeds=args.seeds, progress=False,
                         log=None if args.json else print, epoch_log=not args.json and not args.quiet,
                         records_dir=args.records, train=not args.from_records, pinned_ids=args.semantic_ids)
    if args.out:
        atomic_write_json(_out_file(args.out, ".json"), {"dataset": ds.name, "config": args.config,
                                                         "set": list(args.set or []), "runs": res.as_dict(),
                                                         "seconds": res.seconds})
        atomic_write_text(_out_file(args.out, ".md"), res.table_md)
    if args.update_readme:
        command = "python -m qbert4rec_lib " + " ".join(sys.argv[1:]) if sys.argv[1:] else "experiment"
        body = (f"Generated by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())} from "
                f"{'the result records in `' + str(args.records) + '`' if args.records else 'this run'}.\n\n"
                + res.table_md)
        _write_block(args.update_readme, body)
    return _emit(args, {"dataset": ds.name, "runs": res.as_dict(), "table_md": res.table_md, "seconds": res.seconds},
                 res.table_md + f"\n({res.seconds:.0f} s)")


def cmd_breakdown(args) -> int:
    """Test metrics per user group (target popularity, history length): the models of one seed from the cache, or
    (``--from-records``) the means over the seeds of a folder of result records."""
    from ..atomic import atomic_write_json, atomic_write_text
    from ..experiments.breakdown import (breakdown, breakdown_table, groups_from_records, recommendation_shares,
                                         shares_table, user_groups)
    from ..experiments.evaluate import evaluate, metric_names, protocol_text

    cfg = _experiment_config(args)  # bad values fail before any loading
    if args.metric not in metric_names(cfg.eval):
        raise ValueError(f"--metric {args.metric!r}: choose one of {metric_names(cfg.eval)}")
    parts, shares = {}, None
    if args.from_records:
        import json
        from pathlib import Path

        for by in args.by:
            parts[by] = groups_from_records(args.from_records, by)
        names = list(parts[args.by[0]][0]["metrics"])
        record = json.loads(next(p for p in sorted(Path(args.from_records).glob("*.json"))
                                 if "test_groups" in p.read_text(encoding="utf-8")).read_text(encoding="utf-8"))
        protocol, dataset_name = record["protocol"], record["dataset"]
        seeds = parts[args.by[0]][0]["seeds"]
        what = (f"{dataset_name}, the result records in `{args.from_records}` (means over seeds: "
                + ", ".join(f"{n} {k}" for n, k in seeds.items()) + ")")
    else:
        from ..experiments.runs import train_model
        from ..experiments.stages import semantic_ids
        from ..experiments.train import epoch_logger

        ds = _open(args.data, args.name)
        split = ds.split(max_len=cfg.max_len)
        ids = semantic_ids(ds, cfg, progress=False, pinned=args.semantic_ids) if "Q-Bert4Rec" in args.models else None
        ranks, tops = {}, {}
        for name in args.models:  # the cached weights when the run is cached (it is trained otherwise)
            run = train_model(name, ds, cfg, seed=args.seed, split=split, ids=ids, progress=False,
                              log=None if args.json else epoch_logger(f"{name} seed {args.seed}"))
            test = evaluate(run.model, split.test_history, split.test_target, ds.num_items, cfg.eval,
                            max_len=cfg.max_len, top_k=10)  # the same ranks as run.test, plus the top-10 items
            ranks[name], tops[name] = test.ranks, test.top_items  # [U], [U, 10]
            if not args.json:
                print(f"{name} seed {args.seed}: test {run.test}", flush=True)
        for by in args.by:
            labels, group_names = user_groups(split, ds.num_items, by, args.groups)
            parts[by] = breakdown(ranks, labels, group_names, cfg.eval)
        shares = recommendation_shares(tops, split, ds.num_items, args.groups)
        names, protocol = list(ranks), protocol_text(cfg.eval, "test", ds.num_items)
        what, dataset_name = f"{ds.name}, config `{args.config}`, seed {args.seed}", ds.name
    reference = args.reference if args.reference in names else None
    command = "python -m qbert4rec_lib " + " ".join(sys.argv[1:]) if sys.argv[1:] else "breakdown"
    lines = [f"Generated by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}: {what}.", ""]
    for by, rows in parts.items():
        lines += [f"Test users grouped by {by.replace('_', ' ')} (groups of about equal size):", "",
                  breakdown_table(rows, args.metric, reference), ""]
    if shares is not None:
        lines += ["How popular the recommendations are: the test users' top-10 items (history excluded) by the same "
                  "popularity groups:", "", shares_table(shares), ""]
    lines.append(f"Protocol: {protocol}.")
    table = "\n".join(lines)
    payload = {"dataset": dataset_name, "config": args.config, "set": list(args.set or []), "protocol": protocol,
               "groups": parts, **({"records": str(args.from_records)} if args.from_records else {"seed": args.seed}),
               **({"recommendations": shares} if shares is not None else {})}
    if args.out:
        atomic_write_json(_out_file(args.out, ".json"), payload)
        atomic_write_text(_out_file(args.out, ".md"), table + "\n")
    if args.update_readme:  # the table already starts with the command that made it
        _write_block(args.update_readme, table)
    return _emit(args, payload, table)


def cmd_ablations(args) -> int:
    from ..atomic import atomic_write_text
    from ..experiments.experiment import ABLATIONS, ablation_table, run_ablations

    cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
    runs = run_ablations(ds, cfg, args.names or tuple(ABLATIONS), seed=args.seed, progress=False,
                         log=None if args.json else print)
    table = ablation_table(runs)
    if args.out:
        atomic_write_text(args.out, table)
    return _emit(args, {n: r.test.metrics for n, r in runs.items()}, table)


def cmd_study(args) -> int:
    from ..atomic import atomic_write_text
    from ..experiments.study import STUDY, run_study, study_table

    if args.list:
        print("\n".join(f"{name:28s} {desc}" for name, (desc, _) in STUDY.items()))
        return 0
    if args.from_records:
        from ..experiments.study import study_runs_from_records

        if not args.records:
            raise ValueError("study --from-records needs --records FOLDER")
        runs = study_runs_from_records(args.records, base=_experiment_config(args))  # each record checked
    else:
        ds, cfg = _open(args.data), _experiment_config(args)
        runs = run_study(ds, cfg, args.rows or tuple(STUDY), seeds=args.seeds, records_dir=args.records,
                         epoch_log=not args.json and not args.quiet, log=None if args.json else print,
                         pinned_ids=args.semantic_ids)
    table = study_table(runs)
    if args.out:
        atomic_write_text(args.out, table)
    if args.update_readme:
        body = (f"Generated by `python -m qbert4rec_lib {' '.join(sys.argv[1:])}` on "
                f"{time.strftime('%Y-%m-%d', time.gmtime())} from the result records in `{args.records}`.\n\n{table}")
        _write_block(args.update_readme, body)
    return _emit(args, {n: [r.test.metrics for r in rs] for n, rs in runs.items()}, table)


def _read_json(path) -> dict:
    """A results JSON file, or a ValueError naming the file (and the line/column of a syntax error)."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a JSON object at the top level")
    return obj


def cmd_cold_start(args) -> int:
    from ..atomic import atomic_write_json, atomic_write_text
    from ..experiments.coldstart import SELECT_BY, merge_reports, report_from_json, run_cold_start

    if args.from_json:  # re-tabulate saved runs (several: merged): nothing is trained, the dataset is not opened
        saved = [_read_json(f) for f in args.from_json]
        report = (report_from_json(saved[0], select_by=args.select_by) if len(saved) == 1
                  else merge_reports(saved, args.from_json, select_by=args.select_by))
        payload = {k: saved[0][k] for k in ("dataset", "config", "set") if k in saved[0]} | report.to_json()
    else:
        cfg, ds = _experiment_config(args), _open(args.data, args.name)  # bad values fail before any loading
        report = run_cold_start(ds, cfg, fraction=args.fraction, by=args.by, seeds=args.seeds, models=args.models,
                                select_by=args.select_by or SELECT_BY[0], path_neighbours=args.path_neighbours,
                                log=None if args.json else print,
                                epoch_log=not args.json)
        payload = {"dataset": ds.name, "config": args.config, "set": list(args.set or [])} | report.to_json()
    table = report.table()
    if args.out:
        atomic_write_json(_out_file(args.out, ".json"), payload)
        atomic_write_text(_out_file(args.out, ".md"), table)
    _readme_block(args, f"{len(report.seeds)} seed(s), {report.seconds / 60:.0f} min", table)
    return _emit(args, payload, table + f"\n({report.seconds:.0f} s)")


def _out_file(out, ext: str):
    """``<out>.json`` / ``<out>.md`` for an ``--out`` base name; a dot inside the name is kept
    (``coldstart_lr0.5`` gives ``coldstart_lr0.5.json``, where ``Path.with_suffix`` would cut it)."""
    from pathlib import Path

    out = Path(out)
    return out.with_suffix(ext) if out.suffix in (".json", ".md") else out.with_name(out.name + ext)


def _readme_block(args, what: str, body: str) -> None:
    """With ``--update-readme MARKER``: ``body`` into the generated block, headed by the exact command."""
    if not getattr(args, "update_readme", None):
        return
    head = (f"Generated by `python -m qbert4rec_lib {' '.join(sys.argv[1:])}` on "
            f"{time.strftime('%Y-%m-%d', time.gmtime())} ({what}).\n\n")
    _write_block(args.update_readme, head + body)


def _write_block(marker: str, body: str) -> None:
    """``body`` into the block ``marker`` of the README or of docs/results.md (whichever holds it); says which."""
    from . import reproduce

    doc = reproduce.document_with_block(marker)  # found once, then written there
    ok = doc is not None and reproduce.replace_readme_block(body, marker, doc)
    where = f" in {doc.relative_to(reproduce.REPO)}" if doc is not None and doc.is_relative_to(reproduce.REPO) else ""
    print(f"block {marker!r} " + ("updated" + where if ok else "not found (no markers in README.md or docs/results.md)"),
          file=sys.stderr)


def cmd_dial(args) -> int:
    """The content-to-ID dial: cold-start protocol on generated catalogs along ``SyntheticConfig.id_driven``."""
    from pathlib import Path

    from ..atomic import atomic_write_json, atomic_write_text
    from ..experiments.coldstart import dial_table, run_dial
    from . import plots, viz

    cfg = _experiment_config(args)
    t0 = time.perf_counter()
    points = run_dial(cfg, args.values, seeds=args.seeds, path=args.path, by=args.by,
                      log=None if args.json else print)
    table = dial_table(points)
    seconds = time.perf_counter() - t0
    if args.out:
        out = Path(args.out)
        atomic_write_json(_out_file(out, ".json"), {"values": list(args.values), "seeds": list(args.seeds),
                                                     "path": args.path, "by": args.by, "seconds": seconds,
                                                     "points": points})
        atomic_write_text(_out_file(out, ".md"), table)
    if args.figure:
        viz.save_figure(plots.dial_figure(points), Path(args.figure).name, Path(args.figure).parent or None)
    _readme_block(args, f"{len(args.seeds)} seed(s) per point, {seconds / 60:.0f} min", table)
    return _emit(args, {"points": points}, table + f"\n({seconds:.0f} s)")


def cmd_cross_domain(args) -> int:
    from ..experiments.crossdomain import run_cross_domain

    from ..experiments.crossdomain import DEFAULT_SOURCE, DEFAULT_TARGET
    from ..experiments.presets import smoke_config
    from ..data.synthetic_folder import load_default

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
    from ..data.synthetic import SyntheticConfig
    from ..data.synthetic_folder import generate_catalog

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

        from ..atomic import atomic_write_text
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
