"""The Amazon review dumps: McAuley 2014 (``reviews_<Cat>.json`` + ``meta_<Cat>.json``, Python literals) and
Ni/McAuley 2018 (JSON lines), plain or gzipped. Each reader returns the interaction log or the item metadata for
:mod:`~qbert4rec_lib.data.loaders`.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Iterator

from .dataset import DataFormatError, LoadReport
from .parsing import _clean, _Interactions, _iter_lines, _skip_or_raise, _TextStats


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
