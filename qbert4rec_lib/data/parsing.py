"""What every format reader shares: reading a (possibly gzipped) text file line by line with UTF-8 and gzip errors
that name the file and line, cleaning and parsing fields (text, CSV quotes, floats, category lists), and the flat
interaction log (:class:`_Interactions`) each reader fills for :mod:`~qbert4rec_lib.data.loaders`.
"""
from __future__ import annotations

import ast
import gzip
import html
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .dataset import DataFormatError, LoadReport


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


def _skip_or_raise(report: LoadReport, strict: bool, reason: str, error: DataFormatError) -> None:
    if strict:
        raise error
    report.skip(reason)
