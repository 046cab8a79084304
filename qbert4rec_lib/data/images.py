"""Fetching item images from the URLs in a dataset's metadata into a local folder.

Real Amazon metadata carries image *URLs* (``imUrl`` in 2014, ``imageURL`` in 2018); the image
encoder of :mod:`qbert4rec_lib.semantic.features` needs local files. :func:`download_images` fetches them
defensively:

* only ``http``/``https`` URLs, and redirects only to ``http``/``https``;
* a timeout per socket operation (``timeout``) and a hard **total deadline per image**
  (``deadline``, default ``4 * timeout``) covering connecting, headers, body and every retry: a
  watchdog shuts the socket down when it passes, so a server that drips one byte a second cannot
  hold a download; ``retries`` extra attempts with a short back-off on timeouts, connection errors
  and HTTP 5xx (never on 4xx) while time is left;
* a size cap (``max_bytes``), a ``Content-Type`` check (``image/*`` or a generic binary type) and a
  full decode with Pillow: a file that is not a valid image is never kept;
* the file name comes from the item id (sanitised: letters, digits, ``_-.``; a short hash is
  added when sanitising changed it), **never from the URL**, so a URL cannot choose a path;
* atomic writes (temporary file + rename) and resumable: a valid file already present is skipped.

The result is a :class:`DownloadSummary`: fetched / skipped_existing / missing / broken counts,
the reason for every failure, and the local path of every image now available.
"""
from __future__ import annotations

import http.client
import io
import os
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..keys import digest

__all__ = ["DownloadSummary", "download_images", "safe_stem", "find_existing", "IMAGE_ROOTS_ENV",
           "allowed_image_roots", "is_inside", "check_image_file"]

IMAGE_ROOTS_ENV = "QBERT4REC_IMAGE_ROOTS"  # extra folders (os.pathsep-separated) local image paths may point into

# Pillow format -> file extension used when saving
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


@dataclass
class DownloadSummary:
    """What :func:`download_images` did. ``failures`` maps an item key to the reason it has no image."""

    fetched: int = 0  # downloaded and validated in this call
    skipped_existing: int = 0  # a valid file was already in the folder
    missing: int = 0  # no URL, a refused URL, HTTP 4xx, or network errors after all retries
    broken: int = 0  # the server answered, but not with a valid image within the size cap
    failures: dict[str, str] = field(default_factory=dict)  # key -> reason (attempted items only)
    paths: dict[str, Path] = field(default_factory=dict)  # key -> local image file, for every available image

    def as_dict(self) -> dict:
        return {"fetched": self.fetched, "skipped_existing": self.skipped_existing, "missing": self.missing,
                "broken": self.broken, "failures": dict(self.failures), "available": len(self.paths)}


class _Broken(Exception):
    """The response is not a usable image (counted as broken, not retried)."""


class _Missing(Exception):
    """There is no image to get (counted as missing, not retried)."""


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise _Missing(f"refused redirect to a non-http(s) URL ({newurl[:80]})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Watchdog:
    """Shuts down every socket a download opened once its total deadline passes (unblocking any read)."""

    def __init__(self, deadline_at: float):
        self.deadline_at, self.expired, self._socks, self._lock = deadline_at, False, [], threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline_at - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def attach(self, sock) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


_CURRENT = threading.local()  # the watchdog of the download running in this thread


def _watch(conn) -> None:
    watchdog = getattr(_CURRENT, "watchdog", None)
    if watchdog is not None and conn.sock is not None:
        watchdog.attach(conn.sock)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        _watch(self)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        _watch(self)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_WatchedHTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        extra = {"check_hostname": self._check_hostname} if hasattr(self, "_check_hostname") else {}  # Python < 3.12
        return self.do_open(_WatchedHTTPSConnection, req, context=self._context, **extra)


_OPENER = urllib.request.build_opener(_SafeRedirects, _HTTPHandler, _HTTPSHandler)


def safe_stem(key: str) -> str:
    """A file-name stem derived from an item key: no separators, no dot-files, no traversal."""
    stem = re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))).strip(".")[:80] or "item"
    if stem != str(key):  # sanitising changed it: keep distinct keys distinct
        stem = f"{stem}_{digest([str(key).encode('utf-8', 'surrogatepass')], length=8)}"
    return stem


def _validate(data: bytes) -> str:
    """Decode ``data`` fully with Pillow; return its extension or raise :class:`_Broken`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()  # a full decode catches truncated files that verify() lets through
    except Exception as exc:
        raise _Broken(f"not a valid image ({type(exc).__name__})") from exc
    if fmt not in _EXTENSIONS:
        raise _Broken(f"unsupported image format {fmt}")
    return _EXTENSIONS[fmt]


def allowed_image_roots(folder: str | Path | None) -> list[Path]:
    """Folders a local image path in metadata may resolve into: the dataset folder, plus the folders
    listed in ``$QBERT4REC_IMAGE_ROOTS`` (an explicit opt-in; ``os.pathsep``-separated)."""
    roots = [Path(folder).resolve()] if folder is not None else []
    roots += [Path(p).expanduser().resolve() for p in os.environ.get(IMAGE_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return roots


def is_inside(path: str | Path, roots: list[Path]) -> bool:
    """True when ``path`` (symlinks and ``..`` resolved) lies inside one of ``roots``."""
    resolved = Path(path).resolve()
    return any(resolved == r or resolved.is_relative_to(r) for r in roots)


def check_image_file(path: str | Path, max_bytes: int = 50_000_000) -> str | None:
    """None when ``path`` is a readable image file (fully decoded), else the reason it is not."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return f"{size} bytes > {max_bytes}"
        _validate(path.read_bytes())
    except _Broken as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable ({type(exc).__name__}: {exc.strerror or exc})"
    return None


def find_existing(out_dir: Path, stem: str) -> Path | None:
    """A valid image already saved for ``stem`` (any supported extension), else None."""
    for ext in sorted(set(_EXTENSIONS.values())):
        path = out_dir / f"{stem}{ext}"
        if path.is_file():
            try:
                _validate(path.read_bytes())
                return path
            except _Broken:
                path.unlink(missing_ok=True)  # a leftover bad file: fetch again
    return None


def _fetch(url: str, timeout: float, max_bytes: int, watchdog: _Watchdog) -> bytes:
    """One attempt: the body of ``url``, within ``timeout`` per socket operation and the watchdog's deadline."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _Missing(f"refused URL scheme {scheme or '(none)'!r}: only http/https")
    request = urllib.request.Request(url, headers={"User-Agent": "qbert4rec-image-fetcher/1"})
    _CURRENT.watchdog = watchdog
    try:
        with _OPENER.open(request, timeout=max(0.001, min(timeout, watchdog.remaining()))) as resp:
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if not (ctype.startswith("image/") or ctype in _GENERIC_TYPES):
                raise _Broken(f"Content-Type {ctype!r} is not an image")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _Broken(f"{int(length)} bytes > max_bytes={max_bytes}")
            buf = bytearray()
            while not watchdog.expired and (chunk := resp.read1(65536)):  # read1: what has arrived, not 64 KiB
                buf += chunk
                if len(buf) > max_bytes:
                    raise _Broken(f"more than max_bytes={max_bytes} bytes")
            if watchdog.expired:
                raise _Deadline()
            return bytes(buf)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 500:  # not found, forbidden, or a redirect urllib refused (e.g. to file://)
            raise _Missing(f"HTTP {exc.code} {exc.reason}") from exc
        raise
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.expired:  # the watchdog shut the socket down under a read
            raise _Deadline() from exc
        raise
    finally:
        _CURRENT.watchdog = None


class _Deadline(Exception):
    """The total deadline of one image passed (counted as missing, not retried)."""


def _save_atomic(out_dir: Path, name: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out_dir / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_dir / name


def _download_one(url: str, out_dir: Path, stem: str, timeout: float, retries: int, max_bytes: int,
                  deadline: float) -> Path:
    watchdog = _Watchdog(time.monotonic() + deadline)
    try:
        for attempt in range(retries + 1):
            try:
                data = _fetch(url, timeout, max_bytes, watchdog)
                return _save_atomic(out_dir, stem + _validate(data), data)
            except (_Missing, _Broken):
                raise
            except _Deadline:
                raise _Missing(f"deadline of {deadline:g} s per image passed (attempt {attempt + 1})") from None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError,
                    http.client.HTTPException) as exc:
                backoff = 0.2 * 2 ** attempt
                if attempt == retries or watchdog.remaining() <= backoff:
                    reason = getattr(exc, "reason", None) or exc
                    raise _Missing(f"network error after {attempt + 1} attempt(s): {type(exc).__name__}: {reason}") from exc
                time.sleep(backoff)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        watchdog.cancel()


def _url_map(dataset_or_url_map) -> dict[str, str]:
    if isinstance(dataset_or_url_map, Mapping):
        return {str(k): str(v or "") for k, v in dataset_or_url_map.items()}
    items = dataset_or_url_map.items  # a Dataset: keys are the raw item ids (ASINs)
    return {str(rid): (url if url.lower().startswith(("http://", "https://")) else "")
            for rid, url in zip(items.raw_ids, items.images)}


def download_images(dataset_or_url_map, out_dir: str | Path, *, timeout: float = 10, retries: int = 2,
                    max_bytes: int = 5_000_000, workers: int = 4, progress: bool = True,
                    deadline: float | None = None) -> DownloadSummary:
    """Fetch every item's image URL into ``out_dir`` (a Dataset, or a ``{item key: url}`` map).

    ``timeout`` bounds each socket operation; ``deadline`` (default ``4 * timeout``) bounds each image in
    total, retries included.

    Items of a Dataset are keyed by their raw id; entries that are not http(s) URLs (local
    paths, empty) count as missing without a failure entry. Safe to call again: valid files
    already present are skipped, so an interrupted download resumes.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    urls = _url_map(dataset_or_url_map)
    summary, todo = DownloadSummary(), []
    stems: dict[str, str] = {}
    for key, url in urls.items():
        stem = safe_stem(key)
        if stems.setdefault(stem, key) != key:
            raise ValueError(f"item keys {stems[stem]!r} and {key!r} map to the same file name {stem!r}")
        existing = find_existing(out, stem)
        if existing is not None:
            summary.skipped_existing += 1
            summary.paths[key] = existing
        elif not url:
            summary.missing += 1
        else:
            todo.append((key, url, stem))
    if timeout <= 0 or (deadline is not None and deadline <= 0):
        raise ValueError(f"timeout and deadline must be > 0 seconds, got {timeout} and {deadline}")
    deadline = 4 * timeout if deadline is None else deadline
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = {pool.submit(_download_one, url, out, stem, timeout, retries, max_bytes, deadline): key
                for key, url, stem in todo}
        for job in tqdm(as_completed(jobs), total=len(jobs), desc="images", unit="img", disable=not progress):
            key = jobs[job]
            try:
                summary.paths[key] = job.result()
                summary.fetched += 1
            except _Broken as exc:
                summary.broken += 1
                summary.failures[key] = f"broken: {exc}"
            except _Missing as exc:
                summary.missing += 1
                summary.failures[key] = f"missing: {exc}"
    return summary
