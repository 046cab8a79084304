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
import sys

from .commands import (cmd_ablations, cmd_breakdown, cmd_cold_start, cmd_cross_domain, cmd_dial, cmd_download, cmd_evaluate,
                       cmd_experiment, cmd_features, cmd_finetune, cmd_fuse, cmd_generate, cmd_pretrain,
                       cmd_quantize, cmd_reproduce, cmd_stats, cmd_study)

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


def _count1(text: str) -> int:
    """argparse type: an int >= 1 (neighbours)."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
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
    p = stage("quantize", "stage 2: RQ-VAE semantic IDs", cmd_quantize)
    p.add_argument("--export-ids", default=None, metavar="FOLDER", help="also pin the semantic IDs in FOLDER (ids.npy + "
                   "ids.json) so that runs on other machines read this table (see qbert4rec_lib.experiments.pinned)")
    pinned_help = ("read Q-Bert4Rec's semantic IDs from a folder written by `quantize --export-ids` instead of "
                   "building them (other CPUs build slightly different IDs; pinned IDs make records agree)")
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
                   help="write the table between <!-- MARKER:start --> and <!-- MARKER:end --> (in README.md or docs/results.md, "
                        "whichever holds the marker)")
    p.add_argument("--from-records", action="store_true",
                   help="train nothing: the table of the runs --records already holds (missing ones are listed)")
    p.add_argument("--semantic-ids", default=None, metavar="FOLDER", help=pinned_help)
    p = stage("ablations", "Q-Bert4Rec ablations (one seed)", cmd_ablations)
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--out", default=None, help="write the markdown table here")

    p = stage("study", "what makes Q-Bert4Rec competitive: one row per variant, each to early stopping", cmd_study)
    p.add_argument("--rows", nargs="*", default=None, help="study rows (default: all; see --list); rows compose with '+', e.g. finetune_masked+hidden_128")
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--records", default=None, metavar="FOLDER", help="result records: finished runs are read from "
                   "here, new ones written here")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--list", action="store_true", help="list the study rows and exit")
    p.add_argument("--from-records", action="store_true", help="train nothing: the table of the labelled records")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into its generated block (README.md or docs/results.md)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--semantic-ids", default=None, metavar="FOLDER", help=pinned_help)

    from ..experiments.breakdown import GROUPINGS

    p = stage("breakdown", "test metrics per user group: by the test item's popularity, by history length", cmd_breakdown)
    p.add_argument("--models", nargs="*", default=["Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID", "Popularity"],
                   help="models of one seed (--seed), from the cache; a model that is not in the cache is trained first")
    p.add_argument("--by", nargs="*", default=list(GROUPINGS), choices=list(GROUPINGS), help="groupings (default: all)")
    p.add_argument("--groups", type=_count, default=5, help="groups per grouping, about equal in users (default 5)")
    p.add_argument("--metric", default="NDCG@10", help="metric of the table (default NDCG@10; the JSON holds all)")
    p.add_argument("--reference", default="SASRec-CE", help="model the others are divided by (default SASRec-CE)")
    p.add_argument("--from-records", default=None, metavar="FOLDER", help="train and load nothing: the means over the "
                   "seeds of the per-group metrics the result records in FOLDER keep (five groups per grouping)")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the tables into their generated block (README.md or docs/results.md)")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--semantic-ids", default=None, metavar="FOLDER", help=pinned_help)

    from ..experiments.coldstart import EXTRA_MODELS as COLD_EXTRA, MODELS as COLD_MODELS
    from ..experiments.coldstart import SELECT_BY

    p = stage("cold-start", "new items: warm/cold table (protocol in coldstart.py)", cmd_cold_start)
    p.add_argument("--seeds", nargs="*", type=_count, default=[0, 1, 2])
    p.add_argument("--fraction", type=_positive, default=0.1, help="share of the items held out (default 0.1)")
    p.add_argument("--by", default="time", choices=["time", "random"], help="which items are new (default: time)")
    p.add_argument("--models", nargs="*", default=list(COLD_MODELS), choices=list(COLD_MODELS + COLD_EXTRA),
                   metavar="MODEL", help=f"rows of the table (default: all of {', '.join(COLD_MODELS)}; also "
                                         f"{', '.join(COLD_EXTRA)})")
    p.add_argument("--select-by", default=None, choices=list(SELECT_BY),
                   help="validation metric that chooses the new items' stage-1 path (default: all_users_NDCG@10, "
                        "NDCG@10 over every user's validation item; with --from-json: the saved choice)")
    p.add_argument("--path-neighbours", type=_count1, default=10, metavar="K",
                   help="nearest warm items by content that the content and content+structure paths borrow their "
                        "query (and structure) from (default 10); a value that changes the new items' largest "
                        "disambiguation token changes Q-Bert4Rec's token table, so the model is trained again")
    p.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                   help="train nothing: re-tabulate a saved <out>.json (the path chosen again by --select-by); "
                        "several files of the same protocol (e.g. one run per seed) are merged into one table")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into its generated block (README.md or docs/results.md)")

    p = stage("dial", "when do semantic IDs help? cold-start protocol along the generator's content-to-ID dial",
              cmd_dial, data=False)
    p.add_argument("--values", nargs="*", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="SyntheticConfig.id_driven values (0 = content-driven, 1 = ID-driven)")
    p.add_argument("--seeds", nargs="*", type=_count, default=[0])
    p.add_argument("--path", default="unknown", help="stage-1 path of the new items (see coldstart_ids.QUERY_PATHS)")
    p.add_argument("--by", default="time", choices=["time", "random"], help="which items are new (default: time)")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    p.add_argument("--figure", default=None, help="write the figure (PNG + HTML) at this path without suffix, "
                   "e.g. figures/07_interpretability_dial")
    p.add_argument("--update-readme", default=None, metavar="MARKER", help="write the table into its generated block (README.md or docs/results.md)")

    p = stage("cross-domain", "pretrain on a source catalog, fine-tune on a target (shared semantic IDs)",
              cmd_cross_domain, data=False)
    p.add_argument("--source", default=None, help="source data folder (default: generated catalog, seed 11)")
    p.add_argument("--target", default=None, help="target data folder (default: generated catalog, seed 12, 4 top categories)")
    p.add_argument("--epochs-scale", type=_positive, default=1.0,
                   help="with --config smoke: fraction of the sequence models' epoch caps (stages 1-2 keep theirs)")

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
