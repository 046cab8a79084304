"""Real-format data loaders: a data folder -> one :class:`~qbert4rec_lib.data.dataset.Dataset`.

Paper stage: the input of everything (§4 "datasets"). Q-Bert4Rec's template work reads Amazon
reviews (5-core users and items, chronological, leave-one-out); the classic Beauty benchmark
circulates as ``user_sequence.txt`` + a RecBole ``.item`` file. Four formats are detected:

``seqfile``     ``user_sequence.txt`` (``USER ITEM ITEM ...`` per line, chronological) + an optional
                RecBole ``.item`` file (+ optional ``ground_truth.tsv``, written by the generator).
``recbole``     RecBole atomic ``<name>.inter`` + optional ``<name>.item`` (typed TSV headers).
``amazon2014``  McAuley 2014: ``reviews_<Cat>[_5].json(.gz)`` + ``meta_<Cat>.json(.gz)`` (Python literals).
``amazon2018``  Ni/McAuley 2018: ``<Cat>[_5].json(.gz)`` + ``meta_<Cat>.json(.gz)`` (JSON lines).

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

import ast
import gzip
import html
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .dataset import DataFormatError, Dataset, ItemTable, LoadReport, Modalities, kcore_mask

__all__ = ["FORMATS", "DetectedFormat", "detect_format", "describe_format", "load_dataset", "read_ground_truth"]

FORMATS = ("seqfile", "recbole", "amazon2014", "amazon2018")
DEFAULT_KCORE = {"seqfile": 0, "recbole": 5, "amazon2014": 5, "amazon2018": 5}
MIN_SEQUENCE = 3  # leave-one-out needs a train, a validation and a test item
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
# ItemTable field <- accepted .item column names (first match wins)
ITEM_COLUMNS = {
    "title": ("title", "name", "item_name", "movie_title"),
    "categories": ("categories", "category", "genre", "genres"),
    "brand": ("brand",),
    "price": ("price",),
    "description": ("description", "desc"),
    "image": ("image", "image_url", "imurl", "image_path"),
}
LOOKED_FOR = (
    "seqfile: user_sequence.txt (+ optional <name>.item); "
    "recbole: <name>.inter (+ optional <name>.item); "
    "amazon2014: reviews_<Cat>_5.json[.gz] or reviews_<Cat>.json[.gz] + meta_<Cat>.json[.gz]; "
    "amazon2018: <Cat>_5.json[.gz] or <Cat>.json[.gz] + meta_<Cat>.json[.gz]"
)


# ---- reading lines ------------------------------------------------------------------------
def _iter_lines(path: Path, field_of: Callable[[str], str | None] | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of a (gzipped) UTF-8 file.

    Line ends ``\\n``, ``\\r\\n`` and a lone ``\\r`` (old Mac files) all end a line, as in Python's universal
    newlines, so a file reads the same whichever convention wrote it. Non-UTF-8 bytes raise
    :class:`DataFormatError` with line, byte offset and (via ``field_of``, given the decoded text before the bad
    byte) the field they fall in; a truncated or corrupt ``.gz`` raises one naming the file and the line
    being read when the stream broke.
    """
    gz = path.suffix == ".gz"
    opener = gzip.open if gz else open
    offset, lineno = 0, 0
    try:
        with opener(path, "rb") as f:
            for chunk in f:  # split on \n; a \r inside is a line end too
                body = chunk[:-1] if chunk.endswith(b"\n") else chunk
                body = body[:-1] if body.endswith(b"\r") else body
                pieces = body.split(b"\r") if b"\r" in body else [body]
                for k, raw in enumerate(pieces):
                    lineno += 1
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        prefix = raw[: e.start].decode("utf-8", errors="replace")
                        raise DataFormatError(
                            f"bytes that are not UTF-8 ({raw[e.start:e.start + 4]!r}) at byte offset {offset + e.start}"
                            f"{' of the decompressed text' if gz else ''} (column {e.start + 1}); "
                            "re-encode the file as UTF-8",
                            path=path, line=lineno, field=field_of(prefix) if field_of else None,
                        ) from None
                    offset += len(raw) + 1
                    yield lineno, text.removeprefix("\ufeff") if lineno == 1 else text
                offset += len(chunk) - len(body) - 1  # the line end(s) after the last piece
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        what = "not a gzip file" if isinstance(exc, gzip.BadGzipFile) else "truncated or corrupt gzip data"
        raise DataFormatError(f"{what} ({type(exc).__name__}: {exc}); the file is damaged: download it again",
                              path=path, line=lineno + 1) from None


def _clean(text: str) -> tuple[str, bool]:
    """Unescape HTML entities and collapse whitespace. Returns (clean text, had entities)."""
    unescaped = html.unescape(text) if "&" in text else text
    return " ".join(unescaped.split()), unescaped != text


_CSV_QUOTED = re.compile(r'"(?:[^"]|"")*"', re.DOTALL)


def _unquote(value: str) -> tuple[str, bool]:
    """CSV-style unquoting of a field that is one quoted CSV value (``"a ""b"" c"`` -> ``a "b" c``).

    Only a field whose inner quotes are all doubled is CSV-quoted; literal quotes such as
    ``"Best" Shampoo "Ever"`` are text and stay as they are.
    """
    if len(value) >= 2 and _CSV_QUOTED.fullmatch(value):
        return value[1:-1].replace('""', '"'), True
    return value, False


def _parse_float(value: str, path: Path, line: int, field: str) -> float:
    if not value.strip():
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(f"not a number: {value[:40]!r}", path=path, line=line, field=field) from None


_category_cache: dict[str, tuple[str, ...]] = {}


def _parse_categories(value: str, path: Path, line: int, field: str) -> tuple[str, ...]:
    """``'A', 'B', "C's"`` (or ``[...]``, or plain ``A, B`` / ``A B``) -> ``("A", "B", "C's")``."""
    if value in _category_cache:
        return _category_cache[value]
    text = value.strip()
    if not text:
        names: list = []
    elif '"' in text or "'" in text or text.startswith("["):
        try:
            names = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFormatError(
                f"cannot parse {value[:60]!r}: expected a comma-separated list of quoted names",
                path=path, line=line, field=field) from None
        if names and isinstance(names[0], list):  # a list of category paths: take the first
            names = names[0]
        if not all(isinstance(n, str) for n in names):
            raise DataFormatError(f"expected names (strings), got {value[:60]!r}", path=path, line=line, field=field)
    else:  # RecBole token_seq: comma- or space-separated tokens
        names = text.split(",") if "," in text else text.split()
    result = tuple(c for c in (_clean(n)[0] for n in names) if c)
    _category_cache[value] = result
    return result


# ---- RecBole atomic files -----------------------------------------------------------------
def _read_atomic(path: Path, report: LoadReport, text_field: str | None = "title") -> tuple[list[str], Iterator]:
    """Read a RecBole atomic file: returns the column names and an iterator of ``(line, fields)``.

    Repairs (each reported with the record's id and line): a record split by newlines is joined
    until it has the header's field count; a tab inside a quoted field (or, failing that, surplus
    fields) is merged back into ``text_field``. Fields are CSV-unquoted.
    """
    columns: list[str] = []  # filled from the header before any later line is decoded
    lines_iter = _iter_lines(path, lambda prefix: _column_at(columns, prefix))
    header = next(lines_iter, (1, ""))[1]
    if not header.strip():
        raise DataFormatError("empty file: expected a typed header such as 'item_id:token'", path=path, line=1)
    for spec in header.split("\t"):
        name, sep, ctype = spec.strip().partition(":")
        if not sep or ctype not in RECBOLE_TYPES:
            raise DataFormatError(
                f"header column {spec!r} has {'unknown type ' + repr(ctype) if sep else 'no type'}; "
                f"expected name:type with type in {RECBOLE_TYPES}", path=path, line=1, field=spec)
        columns.append(name)
    lines = [(1, header), *lines_iter]

    types = [spec.strip().partition(":")[2] for spec in header.split("\t")]

    def rows() -> Iterator[tuple[int, list[str]]]:
        n, i = len(columns), 1
        while i < len(lines):
            lineno, text = lines[i]
            i += 1
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) < n:  # a record split by newlines? join only what is unambiguous
                fields, i = _join_continuation(fields, lines, i, columns, types, path, lineno, report)
            if len(fields) > n:
                fields = _merge_surplus(fields, columns, text_field, path, lineno, report)
            yield lineno, fields

    return columns, rows()


def _parses(fields: list[str], types: list[str]) -> bool:
    """Every ``float`` column of the record is empty or a number (what a joined record must satisfy)."""
    for value, ctype in zip(fields, types):
        if ctype == "float" and value.strip():
            try:
                float(value)
            except ValueError:
                return False
    return True


def _join_continuation(fields, lines, i, columns, types, path, lineno, report) -> tuple[list[str], int]:
    """Join the continuation lines of a record split by newlines; returns (fields, index of the next line).

    The lines after a short record are joined only when the result has exactly the header's field count,
    its number columns parse, and no joined line could stand alone as a record (it has fewer fields than
    the header). Anything else (a record holding only some fields, a space-separated line, a short record
    followed by a valid one) is a :class:`DataFormatError` naming the file and the line.
    """
    n, joined, fields = len(columns), list(fields), list(fields)
    j = i
    while len(joined) < n and j < len(lines):
        nxt = lines[j][1]
        if len(nxt.split("\t")) >= n:  # the next line can stand alone: it is a record of its own
            break
        first, *rest = nxt.split("\t")
        joined[-1] += "\n" + first
        joined += rest
        j += 1
    if j > i and len(joined) == n and _parses(joined, types):
        report.repair(f"{joined[0]} (line {lineno}): record split by a newline; "
                      f"{j - i} continuation line(s) joined")
        return joined, j
    hint = ("it looks space-separated: RecBole files separate fields with tabs" if len(fields) == 1 and " " in fields[0]
            else "joining the following line(s) would not give exactly one valid record")
    raise DataFormatError(f"record has {len(fields)} of {n} fields (tab-separated) and cannot be repaired: {hint}",
                          path=path, line=lineno, field=columns[len(fields)])


def _column_at(columns: list[str], prefix: str) -> str | None:
    k = prefix.count("\t")
    return columns[k] if k < len(columns) else (f"column {k + 1}" if columns else None)


def _merge_surplus(fields, columns, text_field, path, lineno, report) -> list[str]:
    """Too many fields: a tab inside a field. Merge the surplus back into the field that opens a
    quote without closing it, else into ``text_field`` (the title); else the record is an error."""
    surplus = len(fields) - len(columns)
    opening = [k for k, f in enumerate(fields) if f.startswith('"') and not (len(f) > 1 and f.endswith('"'))]
    k = opening[0] if opening else (columns.index(text_field) if text_field in columns else None)
    if k is None or k + surplus >= len(fields):
        raise DataFormatError(f"record has {len(fields)} fields, the header has {len(columns)}, and no quoted or "
                              "title field can take the surplus", path=path, line=lineno, field=columns[-1])
    report.repair(f"{fields[0]} (line {lineno}): tab inside the {columns[k]}; "
                  f"{surplus} surplus field(s) merged back into it")
    return fields[:k] + ["\t".join(fields[k:k + surplus + 1])] + fields[k + surplus + 1:]


class _TextStats:
    """Aggregate counts for text cleaning (one repair line, not one per item)."""

    def __init__(self) -> None:
        self.entity_fields, self.entity_items, self.unquoted = 0, set(), 0

    def clean(self, value: str, item: str) -> str:
        value, quoted = _unquote(value)
        self.unquoted += quoted
        text, had = _clean(value)
        if had:
            self.entity_fields += 1
            self.entity_items.add(item)
        return text

    def flush(self, path: Path, report: LoadReport) -> None:
        if self.entity_fields:
            report.repair(f"{path.name}: HTML entities (&amp; &#39; &nbsp; ...) unescaped in "
                          f"{self.entity_fields} field(s) of {len(self.entity_items)} item(s)")
        if self.unquoted:
            report.notes.append(f"{path.name}: {self.unquoted} CSV-quoted field(s) unquoted")


def _read_item_file(path: Path, report: LoadReport) -> dict[str, dict]:
    """RecBole ``.item`` -> ``{raw item id: metadata dict}`` (first row wins)."""
    columns, rows = _read_atomic(path, report)
    if "item_id" not in columns:
        raise DataFormatError(f"no item_id column (columns: {columns})", path=path, line=1, field="item_id")
    pick = {key: next((columns.index(c) for c in names if c in columns), None) for key, names in ITEM_COLUMNS.items()}
    idx_id, stats, meta = columns.index("item_id"), _TextStats(), {}
    for lineno, fields in rows:
        item = fields[idx_id].strip()
        if not item:
            raise DataFormatError("empty item id", path=path, line=lineno, field="item_id")
        if item in meta:
            report.skip("duplicate metadata row (first kept)")
            continue
        get = lambda key: fields[pick[key]] if pick[key] is not None else ""  # noqa: E731
        cats_raw, quoted = _unquote(get("categories"))
        stats.unquoted += quoted
        meta[item] = {
            "line": lineno,
            "title": stats.clean(get("title"), item),
            "brand": stats.clean(get("brand"), item),
            "description": stats.clean(get("description"), item),
            "image": _unquote(get("image").strip())[0],
            "price": _parse_float(get("price"), path, lineno, "price") if pick["price"] is not None else float("nan"),
            "categories": _parse_categories(cats_raw, path, lineno, columns[pick["categories"]])
            if pick["categories"] is not None else (),
        }
    stats.flush(path, report)
    return meta


@dataclass
class _Interactions:
    """Flat interaction log in file order: parallel lists of user, item, time and file line."""

    path: Path
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def add(self, user: str, items: list[str], times: list[float], line: int) -> None:
        self.users += [user] * len(items)
        self.items += items
        self.times += times
        self.lines += [line] * len(items)


def _read_inter_file(path: Path, report: LoadReport) -> _Interactions:
    columns, rows = _read_atomic(path, report, text_field=None)
    for need in ("user_id", "item_id"):
        if need not in columns:
            raise DataFormatError(f"no {need} column (columns: {columns})", path=path, line=1, field=need)
    iu, ii = columns.index("user_id"), columns.index("item_id")
    it = columns.index("timestamp") if "timestamp" in columns else None
    if it is None:
        report.notes.append(f"{path.name}: no timestamp column; file order is the chronological order")
    log = _Interactions(path)
    for lineno, fields in rows:
        user, item = fields[iu].strip(), fields[ii].strip()
        for value, column in ((user, "user_id"), (item, "item_id")):
            if not value:
                raise DataFormatError("empty id", path=path, line=lineno, field=column)
        time = _parse_float(fields[it], path, lineno, "timestamp") if it is not None else 0.0
        if np.isnan(time):
            raise DataFormatError("empty timestamp", path=path, line=lineno, field="timestamp")
        log.add(user, [item], [time], lineno)
    return log


# ---- seqfile ------------------------------------------------------------------------------
def _read_seqfile(path: Path, report: LoadReport) -> _Interactions:
    log, seen = _Interactions(path), {}
    for lineno, text in _iter_lines(path, lambda prefix: "items" if (" " in prefix or "\t" in prefix) else "user_id"):
        parts = text.split()
        if not parts:
            report.skip("blank line")
            continue
        if len(parts) == 1:
            raise DataFormatError(f"user {parts[0]!r} has no items", path=path, line=lineno, field="items")
        if parts[0] in seen:
            raise DataFormatError(f"user {parts[0]!r} already has a line (line {seen[parts[0]]})",
                                  path=path, line=lineno, field="user_id")
        seen[parts[0]] = lineno
        log.add(parts[0], parts[1:], list(range(len(parts) - 1)), lineno)
    return log


# ---- Amazon JSON dumps --------------------------------------------------------------------
_ASIN_RE = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def _parse_record(text: str, path: Path, lineno: int, literal: bool) -> dict:
    """One JSON (or, for the 2014 dumps, Python-literal) object per line; never ``eval``."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        if not literal:
            raise DataFormatError(f"invalid JSON: {e.msg} at column {e.colno}", path=path, line=lineno,
                                  field="record") from None
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e2:
            raise DataFormatError(f"neither JSON nor a Python literal: {e2}", path=path, line=lineno,
                                  field="record") from None
    if not isinstance(record, dict):
        raise DataFormatError(f"expected an object, got {type(record).__name__}", path=path, line=lineno,
                              field="record")
    return record


def _json_lines(path: Path, progress: bool) -> Iterator[tuple[int, str]]:
    lines = _iter_lines(path, lambda prefix: "record")
    if progress:
        from tqdm.auto import tqdm

        lines = tqdm(lines, desc=f"reading {path.name}", unit=" lines")
    return lines


def _skip_or_raise(report: LoadReport, strict: bool, reason: str, error: DataFormatError) -> None:
    if strict:
        raise error
    report.skip(reason)


def _read_reviews(path: Path, report: LoadReport, strict: bool, literal: bool, progress: bool) -> _Interactions:
    log = _Interactions(path)
    lines = _json_lines(path, progress)
    for lineno, text in lines:
        if not text.strip():
            continue
        record = _parse_record(text, path, lineno, literal)
        missing = next((k for k in ("reviewerID", "asin", "unixReviewTime") if record.get(k) in (None, "")), None)
        if missing:
            _skip_or_raise(report, strict, f"review without {missing}",
                           DataFormatError("review has no value", path=path, line=lineno, field=missing))
            continue
        try:
            time = float(record["unixReviewTime"])
        except (TypeError, ValueError):
            raise DataFormatError(f"not a number: {record['unixReviewTime']!r}", path=path, line=lineno,
                                  field="unixReviewTime") from None
        log.add(str(record["reviewerID"]), [str(record["asin"])], [time], lineno)
    return log


def _amazon_price(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*\$?\s*([\d,]+(?:\.\d+)?)\s*", str(value or ""))
    return float(m.group(1).replace(",", "")) if m else float("nan")  # ranges / HTML junk -> unknown


def _first(value) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


def _read_amazon_meta(path: Path, needed: set[str], report: LoadReport, literal: bool, progress: bool) -> dict:
    """Amazon metadata rows of the ``needed`` items only (others are counted, not parsed)."""
    meta, stats, unused = {}, _TextStats(), 0
    lines = _json_lines(path, progress)
    for lineno, text in lines:
        if not text.strip():
            continue
        asins = _ASIN_RE.findall(text)  # a fast pre-filter; an asin-like string in a title is also found, so
        if asins and not any(a in needed for a in asins):  # a row is skipped only if none of them is needed
            unused += 1
            continue
        record = _parse_record(text, path, lineno, literal)
        item = str(record.get("asin") or "")
        if item not in needed:
            if not item:
                report.skip("metadata line without asin")
            else:
                unused += 1
            continue
        if item in meta:
            report.skip("duplicate metadata row (first kept)")
            continue
        cats = record.get("categories" if literal else "category") or []
        if cats and isinstance(cats[0], list):
            cats = cats[0]
        desc = record.get("description") or ""
        image = _first(record.get("imageURLHighRes")) or _first(record.get("imageURL")) or _first(record.get("imUrl"))
        meta[item] = {
            "line": lineno,
            "title": stats.clean(str(record.get("title") or ""), item),
            "brand": stats.clean(str(record.get("brand") or ""), item),
            "description": stats.clean(" ".join(map(str, desc)) if isinstance(desc, list) else str(desc), item),
            "categories": tuple(c for c in (_clean(str(x))[0] for x in cats) if c),
            "price": _amazon_price(record.get("price")),
            "image": image.strip(),
        }
    if unused:
        report.skip("metadata rows for items not in any sequence", unused)
    stats.flush(path, report)
    return meta


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
