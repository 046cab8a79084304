"""The RecBole formats: atomic files (``<name>.inter`` / ``<name>.item`` with typed TSV headers, and the defects
real dumps have: records split by a newline, tabs inside titles) and the ``user_sequence.txt`` sequence file.
Each reader returns the interaction log or the item metadata for :mod:`~qbert4rec_lib.data.loaders`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .dataset import DataFormatError, LoadReport
from .parsing import _Interactions, _iter_lines, _parse_categories, _parse_float, _TextStats, _unquote

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
