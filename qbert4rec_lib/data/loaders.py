"""Real-format data loaders: a data folder -> one :class:`~qbert4rec_lib.data.dataset.Dataset`.

Paper stage: the input of everything (§4 "datasets"). Q-Bert4Rec's template work reads Amazon
reviews (5-core users and items, chronological, leave-one-out); the classic Beauty benchmark
circulates as ``user_sequence.txt`` + a RecBole ``.item`` file. Four formats are detected:

``seqfile``     ``user_sequence.txt`` (``USER ITEM ITEM ...`` per line, chronological) + an optional
                RecBole ``.item`` file (+ optional ``ground_truth.tsv``, written by the generator).
``recbole``     RecBole atomic ``<name>.inter`` + optional ``<name>.item`` (typed TSV headers).
``amazon2014``  McAuley 2014: ``reviews_<Cat>[_5].json(.gz)`` + ``meta_<Cat>.json(.gz)`` (Python literals).
``amazon2018``  Ni/McAuley 2018: ``<Cat>[_5].json(.gz)`` + ``meta_<Cat>.json(.gz)`` (JSON lines).

The readers live in :mod:`~qbert4rec_lib.data.recbole` (seqfile, RecBole atomic files) and
:mod:`~qbert4rec_lib.data.amazon` (the review dumps), on the shared line reading and field parsing of
:mod:`~qbert4rec_lib.data.parsing`; this module detects the format and builds the Dataset.

Detection (:func:`detect_format`) tries the formats in the order above; a folder holding several
candidate files of one kind needs ``name=`` to choose. Choices the paper leaves open:

- ``kcore`` (None = format default): iterative k-core on users AND items, counting interactions.
  Default 5 for recbole/amazon; 0 (off) for the seqfile, which is already 5-core.
- Item ids ``1..N`` by first appearance, reading users in order (seqfile: line order; other formats:
  order of each user's first interaction in the file) and each user's items chronologically
  (stable sort by timestamp, then file order). For Beauty this reproduces S3-Rec's ``Beauty.txt``.
- Amazon formats drop repeated user-item interactions (keeping the earliest); seqfile and recbole
  keep them (they are data there).
- Users with fewer than 3 interactions cannot be split leave-one-out: skipped and counted (an error
  with ``strict=True``). A seqfile line with a user id and no items is always an error.
- An item with no metadata row keeps empty metadata and is counted in ``report.skipped`` (an error
  naming the item and the sequence line with ``strict=True``). Metadata rows of items that are in
  no sequence are ignored and counted.
- Text is cleaned: HTML entities unescaped (counted as one aggregate repair), whitespace
  (newlines, tabs, ``&nbsp;``) collapsed to single spaces. A field wrapped in ``"..."`` is
  CSV-unquoted (``""`` -> ``"``). Categories are parsed with :func:`ast.literal_eval`, never ``eval``.
- Known record defects are repaired and reported (one ``report.repairs`` line per record, naming
  the item id and line): a record split by a newline (continuation lines are joined only when the
  result has exactly the header's field count with parseable numbers and no joined line could stand
  alone as a record; anything else is an error naming file and line) and tabs inside the title
  (surplus fields merged back).
- Line ends ``\n``, ``\r\n`` and a lone ``\r`` are all line ends. A truncated, corrupt or fake
  ``.gz`` file is an error naming the file (and the line being read).
- Bytes that are not UTF-8 are always an error naming file, line, field and byte offset: guessing
  an encoding would silently corrupt ids and titles.
- ``strict=True`` turns every counted skip caused by noise into an error; repairs still happen
  (they lose nothing) and filtering by design (k-core, unused metadata rows) is still counted.
- Images: ``http(s)`` values are kept as URLs (``image_source="urls"``), other values are paths
  relative to the folder, stored absolute (``"files"``); a missing file is a counted skip, and so is
  a path that resolves outside the folder (``/etc/passwd``, ``../../x``) unless ``$QBERT4REC_IMAGE_ROOTS``
  lists the folder it points into.
  Amazon 2018 takes the first ``imageURLHighRes`` (else ``imageURL``).
- ``ground_truth.tsv`` (``item_id<TAB>attr...``) -> ``Dataset.ground_truth``: codes index the
  attribute's names in the order of an optional ``ground_truth_labels.json`` (``{attr: [names]}``),
  else sorted (as strings). Codes cover the kept items; unused names stay in the label list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .amazon import _read_amazon_meta, _read_reviews
from .dataset import DataFormatError, Dataset, ItemTable, LoadReport, Modalities, kcore_mask
from .parsing import _Interactions, _iter_lines, _skip_or_raise
from .recbole import _read_inter_file, _read_item_file, _read_seqfile

__all__ = ["FORMATS", "DetectedFormat", "detect_format", "describe_format", "load_dataset", "read_ground_truth"]

FORMATS = ("seqfile", "recbole", "amazon2014", "amazon2018")
DEFAULT_KCORE = {"seqfile": 0, "recbole": 5, "amazon2014": 5, "amazon2018": 5}
MIN_SEQUENCE = 3  # leave-one-out needs a train, a validation and a test item
LOOKED_FOR = (
    "seqfile: user_sequence.txt (+ optional <name>.item); "
    "recbole: <name>.inter (+ optional <name>.item); "
    "amazon2014: reviews_<Cat>_5.json[.gz] or reviews_<Cat>.json[.gz] + meta_<Cat>.json[.gz]; "
    "amazon2018: <Cat>_5.json[.gz] or <Cat>.json[.gz] + meta_<Cat>.json[.gz]"
)


# ---- interactions -> sequences ------------------------------------------------------------
def _sequences(log: _Interactions, kcore: int, dedupe: bool, report: LoadReport, strict: bool):
    """Chronological per-user sequences of raw item ids, filtered. Users in first-appearance order."""
    if not log.users:
        raise DataFormatError("no interactions", path=log.path)
    user_index: dict[str, int] = {}  # raw id -> index, in order of first appearance in the file
    user_rank = np.array([user_index.setdefault(u, len(user_index)) for u in log.users], dtype=np.int64)
    item_index: dict[str, int] = {}
    item_idx = np.array([item_index.setdefault(i, len(item_index)) for i in log.items], dtype=np.int64)
    item_names = list(item_index)
    times, rows = np.asarray(log.times, dtype=np.float64), np.arange(len(user_rank))
    order = np.lexsort((rows, times, user_rank))  # user (file order), then time, then file order
    keep = np.ones(len(order), dtype=bool)
    if dedupe:
        pair = user_rank[order].astype(np.int64) * len(item_names) + item_idx[order]
        _, first = np.unique(pair, return_index=True)
        keep[:] = False
        keep[first] = True
        if (~keep).sum():
            report.skip("repeated user-item interaction (earliest kept)", int((~keep).sum()))
    order = order[keep]
    if kcore > 0:
        mask = kcore_mask(user_rank[order], item_idx[order], kcore)
        for what, idx in (("users", user_rank), ("items", item_idx), ("interactions", None)):
            before = len(np.unique(idx[order])) if idx is not None else len(order)
            after = len(np.unique(idx[order[mask]])) if idx is not None else int(mask.sum())
            if before > after:
                report.skip(f"{what} removed by {kcore}-core filtering", before - after)
        order = order[mask]
    users_sorted = user_rank[order]
    bounds = np.flatnonzero(np.diff(users_sorted)) + 1
    groups = np.split(order, bounds) if len(order) else []
    kept, short_users = [], 0
    for g in groups:
        if len(g) < MIN_SEQUENCE:
            user = log.users[g[0]]
            _skip_or_raise(report, strict, f"user with fewer than {MIN_SEQUENCE} interactions",
                           DataFormatError(f"user {user!r} has {len(g)} item(s); leave-one-out needs {MIN_SEQUENCE}",
                                           path=log.path, line=log.lines[g[0]], field="items"))
            short_users += len(g)
            continue
        kept.append(g)
    if short_users:
        report.skip(f"interactions of users with fewer than {MIN_SEQUENCE} interactions", short_users)
    if not kept:
        raise DataFormatError(f"no user left after filtering (k-core {kcore}, min length {MIN_SEQUENCE})",
                              path=log.path)
    return kept, item_idx, item_names


def _resolve_image(value: str, folder: Path) -> tuple[str, str | None]:
    """(absolute path or URL, problem): a local path must resolve inside the dataset folder (or a root allowed
    by ``$QBERT4REC_IMAGE_ROOTS``) and be a file; otherwise ``("", "outside" | "missing")``."""
    from .images import allowed_image_roots, is_inside

    if not value or value.startswith(("http://", "https://")):
        return value, None
    p = (Path(value) if Path(value).is_absolute() else folder / value).resolve()
    if not is_inside(p, allowed_image_roots(folder)):
        return "", "outside"
    return (str(p), None) if p.is_file() else ("", "missing")


def _build(name: str, folder: Path, log: _Interactions, meta: dict | None, meta_path: Path | None,
           kcore: int, dedupe: bool, report: LoadReport, strict: bool) -> Dataset:
    groups, item_idx, item_names = _sequences(log, kcore, dedupe, report, strict)
    flat = np.concatenate(groups)
    uniq, first = np.unique(item_idx[flat], return_index=True)
    by_appearance = uniq[np.argsort(first)]  # temp item index, in first-appearance order
    new_id = np.zeros(len(item_names), dtype=np.int64)  # temp index -> item id 1..N
    new_id[by_appearance] = np.arange(1, len(by_appearance) + 1)
    raw_ids = [str(item_names[t]) for t in by_appearance]
    sequences = [new_id[item_idx[g]] for g in groups]
    user_ids = [log.users[g[0]] for g in groups]

    empty = {"title": "", "brand": "", "description": "", "image": "", "price": float("nan"), "categories": (),
             "line": None}
    rows, log_lines = [], None
    if meta is None:
        report.notes.append("no item metadata file: items carry no text (text modality absent)")
        meta = {}
    else:
        unused = set(meta) - set(raw_ids)
        if unused and meta_path is not None and meta_path.suffix == ".item":
            report.skip("metadata rows for items not in any sequence", len(unused))
    for t, raw in zip(by_appearance, raw_ids):
        row = meta.get(raw)
        if row is None and meta_path is not None:
            log_lines = np.asarray(log.lines) if log_lines is None else log_lines
            line = int(log_lines[item_idx == t].min())
            _skip_or_raise(report, strict, "item without metadata row (kept with empty metadata)",
                           DataFormatError(f"item {raw!r} has no row in {meta_path.name}",
                                           path=log.path, line=line, field="item_id"))
        row = dict(row or empty)
        image, problem = _resolve_image(row["image"], folder)
        if problem == "missing":
            _skip_or_raise(report, strict, "image file missing (image dropped)",
                           DataFormatError(f"image file {row['image']!r} of item {raw!r} not found under {folder}",
                                           path=meta_path, line=row.get("line"), field="image"))
        elif problem == "outside":
            _skip_or_raise(report, strict, "image path outside the dataset folder (image dropped)",
                           DataFormatError(f"image path {row['image']!r} of item {raw!r} resolves outside {folder} "
                                           "(allow a folder with $QBERT4REC_IMAGE_ROOTS)",
                                           path=meta_path, line=row.get("line"), field="image"))
        row["image"] = image
        rows.append(row)
    images = [r["image"] for r in rows]
    items = ItemTable(
        raw_ids=raw_ids, titles=[r["title"] for r in rows], categories=[r["categories"] for r in rows],
        brands=[r["brand"] for r in rows], prices=np.array([r["price"] for r in rows], dtype=np.float64),
        descriptions=[r["description"] for r in rows], images=images,
    )
    has_image = any(images)
    urls = any(i.startswith(("http://", "https://")) for i in images)
    modalities = Modalities(
        text=any(r["title"] or r["description"] or r["categories"] for r in rows),
        image=has_image, image_source=("urls" if urls else "files") if has_image else None,
    )
    ds = Dataset(name=name, items=items, user_ids=user_ids, sequences=sequences, modalities=modalities,
                 report=report, source=str(folder))
    gt_path = folder / "ground_truth.tsv"
    if gt_path.is_file():
        ds.ground_truth, ds.ground_truth_labels = read_ground_truth(gt_path, raw_ids)
    return ds


def read_ground_truth(path: Path, raw_ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Codes (aligned with ``raw_ids``) and labels of a ``ground_truth.tsv``: each attribute's names in the code
    order of ``ground_truth_labels.json`` beside it (the generator's order), else sorted as strings."""
    lines = list(_iter_lines(path))
    header = lines[0][1].split("\t") if lines else []
    if not header or header[0] != "item_id" or len(header) < 2:
        raise DataFormatError("expected a header 'item_id<TAB>attribute...'", path=path, line=1, field="item_id")
    values: dict[str, list[str]] = {}
    for lineno, text in lines[1:]:
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != len(header):
            raise DataFormatError(f"{len(fields)} fields, header has {len(header)}", path=path, line=lineno,
                                  field=header[min(len(fields), len(header) - 1)])
        values.setdefault(fields[0], fields[1:])
    missing = [r for r in raw_ids if r not in values]
    if missing:
        raise DataFormatError(f"{len(missing)} item(s) have no row (first: {missing[0]!r})", path=path,
                              field="item_id")
    order_path = path.with_name("ground_truth_labels.json")  # optional {attr: [names in code order]}
    order = json.loads(order_path.read_text(encoding="utf-8")) if order_path.is_file() else {}
    codes, labels = {}, {}
    for a, attr in enumerate(header[1:]):
        column = [values[r][a] for r in raw_ids]
        names = list(order.get(attr) or sorted(set(column)))
        lookup = {v: c for c, v in enumerate(names)}
        unknown = next((v for v in column if v not in lookup), None)
        if unknown is not None:
            raise DataFormatError(f"value {unknown!r} is not listed in {order_path.name}", path=path, field=attr)
        codes[attr] = np.array([lookup[v] for v in column], dtype=np.int64)
        labels[attr] = names
    return codes, labels


# ---- format detection ---------------------------------------------------------------------
@dataclass(frozen=True)
class DetectedFormat:
    """What :func:`detect_format` found: the format, its folder and the files it will read."""

    kind: str  # one of FORMATS
    folder: Path
    interactions: Path  # user_sequence.txt / .inter / reviews file
    metadata: Path | None  # .item / meta_<Cat> file (None = none)
    name: str  # default dataset name


def _json_stem(p: Path) -> str | None:
    for ext in (".json.gz", ".json"):
        if p.name.endswith(ext):
            return p.name[: -len(ext)]
    return None


def _pick(candidates: list[Path], name: str | None, what: str, folder: Path) -> Path | None:
    if name is not None:
        named = [c for c in candidates if c.name.split(".")[0] in (name, f"reviews_{name}", f"reviews_{name}_5",
                                                                    f"{name}_5", f"meta_{name}")]
        candidates = named or candidates
    if len(candidates) > 1:
        raise DataFormatError(f"several {what} files ({', '.join(c.name for c in candidates)}); "
                              "pass name=<one of them> to choose (CLI: --name)", path=folder)
    return candidates[0] if candidates else None


def _amazon_meta(folder: Path, cat: str) -> Path | None:
    return next((folder / f"meta_{cat}{e}" for e in (".json.gz", ".json") if (folder / f"meta_{cat}{e}").is_file()), None)


def detect_format(path: str | Path, name: str | None = None) -> DetectedFormat:
    """Find the format of a data folder (or of a sequence / ``.inter`` / reviews file)."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"no such file or folder. Looked for {LOOKED_FOR}", path=path)
    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in folder.iterdir() if p.is_file()) if path.is_dir() else [path]
    items = sorted(folder.glob("*.item"))

    seq = [p for p in files if p.name == "user_sequence.txt" or (not path.is_dir() and p.suffix == ".txt")]
    if seq:
        meta = _pick(items, name, ".item", folder)
        return DetectedFormat("seqfile", folder, seq[0], meta, name or folder.name)
    inter = [p for p in files if p.suffix == ".inter"]
    if inter:
        chosen = _pick(inter, name, ".inter", folder)
        meta = folder / f"{chosen.stem}.item"
        return DetectedFormat("recbole", folder, chosen, meta if meta.is_file() else None, name or chosen.stem)
    reviews14 = [p for p in files if p.name.startswith("reviews_") and _json_stem(p)]
    if reviews14:
        five = [p for p in reviews14 if _json_stem(p).endswith("_5")]
        chosen = _pick(five or reviews14, name, "reviews_<Cat>", folder)
        cat = _json_stem(chosen)[len("reviews_"):].removesuffix("_5")
        return _with_meta("amazon2014", folder, chosen, cat, name)
    # 2018 reviews: <Cat>_5.json, or any <Cat>.json with a meta_<Cat> beside it (or named directly)
    reviews18 = [p for p in files if _json_stem(p) and not p.name.startswith(("meta_", "reviews_"))
                 and (_json_stem(p).endswith("_5") or _amazon_meta(folder, _json_stem(p)) or not path.is_dir())]
    if reviews18:
        five = [p for p in reviews18 if _json_stem(p).endswith("_5")]
        chosen = _pick(five or reviews18, name, "<Cat>.json", folder)
        return _with_meta("amazon2018", folder, chosen, _json_stem(chosen).removesuffix("_5"), name)
    found = ", ".join(p.name for p in files[:12]) + (" ..." if len(files) > 12 else "") or "nothing"
    raise DataFormatError(f"no known dataset format. Looked for {LOOKED_FOR}. Found: {found}", path=path)


def _with_meta(kind: str, folder: Path, reviews: Path, cat: str, name: str | None) -> DetectedFormat:
    meta = _amazon_meta(folder, cat)
    if meta is None:
        raise DataFormatError(f"found {reviews.name} but no meta_{cat}.json[.gz] beside it ({kind} needs both)",
                              path=folder)
    return DetectedFormat(kind, folder, reviews, meta, name or f"{kind}-{cat}")


def describe_format(path: str | Path) -> str:
    """The detected format name: "seqfile", "recbole", "amazon2014" or "amazon2018"."""
    return detect_format(path).kind


# ---- public entry point -------------------------------------------------------------------
def load_dataset(path: str | Path, *, kcore: int | None = None, name: str | None = None, strict: bool = False,
                 progress: bool = False) -> Dataset:
    """Load a data folder (format auto-detected, see the module docstring) into a :class:`Dataset`.

    ``kcore``: iterative user AND item k-core (None = the format's default, 0 = off).
    ``name``: dataset name, and which files to read when a folder holds several datasets.
    ``strict``: raise instead of skipping noisy records. Everything skipped or repaired is in
    ``dataset.report``.
    """
    fmt = detect_format(path, name)
    kcore = DEFAULT_KCORE[fmt.kind] if kcore is None else int(kcore)
    if kcore < 0:
        raise ValueError(f"kcore must be >= 0, got {kcore}")
    report = LoadReport()
    report.notes.append(f"format {fmt.kind}: {fmt.interactions.name}"
                        + (f" + {fmt.metadata.name}" if fmt.metadata else "") + f"; k-core {kcore}")
    if fmt.kind == "seqfile":
        log = _read_seqfile(fmt.interactions, report)
    elif fmt.kind == "recbole":
        log = _read_inter_file(fmt.interactions, report)
    else:
        log = _read_reviews(fmt.interactions, report, strict, fmt.kind == "amazon2014", progress)
    if fmt.kind in ("seqfile", "recbole"):
        meta = _read_item_file(fmt.metadata, report) if fmt.metadata else None
    else:
        meta = _read_amazon_meta(fmt.metadata, set(log.items), report, fmt.kind == "amazon2014", progress)
    return _build(fmt.name, fmt.folder, log, meta, fmt.metadata, kcore,
                  dedupe=fmt.kind.startswith("amazon"), report=report, strict=strict)
