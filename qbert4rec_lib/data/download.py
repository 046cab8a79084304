"""Fetch the public Amazon review files the loaders read: ``python -m qbert4rec_lib download beauty --to data/beauty``.

Paper stage: the input of everything (§4 "datasets"). :mod:`qbert4rec_lib.data.loaders` reads the McAuley lab's
Amazon releases as they are published; this module only puts those files in a folder, safely:

- one small table, :data:`DATASETS`: a name -> a release (2014 or 2018) and a category. Each release knows its
  public base URL and its file names (2014: ``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``; 2018:
  ``categoryFilesSmall/<Cat>_5.json.gz`` + ``metaFiles2/meta_<Cat>.json.gz``, saved without the folder part);
- the base URL can be replaced (``base_url=``, ``--base-url``, or the ``QBERT4REC_DOWNLOAD_BASE_URL`` environment
  variable): a mirror, or a local server in the tests, which never touch the internet;
- streamed in 1 MiB chunks with a progress bar (:mod:`tqdm.auto`; plus flushed log lines when stderr is not a
  terminal), into ``<file>.part``, resumed with an HTTP ``Range`` request (``If-Range`` on the server's ETag or
  Last-Modified, so a file that changed on the server restarts from zero); a timeout on connecting and on every
  read; a bounded number of retries with exponential backoff; 4xx answers fail at once, naming the URL;
- every file is checked by decompressing it to the end (gzip CRC and length) before it is renamed into place
  (``os.replace``: a complete file or none); a corrupt file is deleted and named in the error;
- ``download_manifest.json`` beside the files records each file's URL, size and sha256. A later run re-hashes the
  files: matching ones are skipped, a mismatch is reported (file, expected vs found) and the file downloaded
  again. A file that is there without a manifest entry (copied by hand) is verified and adopted.

The sizes in :data:`DATASETS` are rough estimates for planning disk space (they were not measured here; the
manifest records the real ones). Image URLs in the metadata stay URLs: the feature stage downloads images.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Callable

from ..atomic import atomic_write_json

__all__ = ["RELEASES", "DATASETS", "MANIFEST", "DownloadError", "Release", "DatasetEntry", "dataset_files",
           "download_dataset", "list_datasets", "verify_gzip", "sha256_of"]

MANIFEST = "download_manifest.json"
BASE_URL_ENV = "QBERT4REC_DOWNLOAD_BASE_URL"
CHUNK = 1 << 20
USER_AGENT = "qbert4rec-study-kit (python urllib)"


class DownloadError(RuntimeError):
    """A download that cannot be completed; the message names the URL or the file."""


@dataclass(frozen=True)
class Release:
    """One public release: where it lives and how its files are named (``{cat}`` = the category)."""

    key: str
    base_url: str
    reviews: str  # path under base_url
    meta: str
    page: str  # the release's public page (citation, licence)
    about: str


RELEASES = {
    "amazon2014": Release(
        "amazon2014", "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles",
        "reviews_{cat}_5.json.gz", "meta_{cat}.json.gz", "http://jmcauley.ucsd.edu/data/amazon/index_2014.html",
        "McAuley et al. 2015 / He & McAuley 2016: 5-core reviews + product metadata (the Beauty/Sports/Toys "
        "benchmarks of S3-Rec, TIGER)"),
    "amazon2018": Release(
        "amazon2018", "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
        "categoryFilesSmall/{cat}_5.json.gz", "metaFiles2/meta_{cat}.json.gz",
        "https://nijianmo.github.io/amazon/index.html",
        "Ni, Li & McAuley 2019: 5-core reviews + product metadata (JSON lines)"),
}


@dataclass(frozen=True)
class DatasetEntry:
    release: str  # key of RELEASES
    category: str
    approx_mb: tuple[float, float]  # rough (reviews, metadata) sizes in MB: estimates, not measurements
    note: str = ""


DATASETS: dict[str, DatasetEntry] = {
    # Amazon 2014 (the classic sequential-recommendation benchmarks)
    "beauty": DatasetEntry("amazon2014", "Beauty", (40, 90), "the kit's Beauty benchmark (22,363 users after 5-core)"),
    "sports": DatasetEntry("amazon2014", "Sports_and_Outdoors", (60, 150)),
    "toys": DatasetEntry("amazon2014", "Toys_and_Games", (35, 100)),
    "clothing": DatasetEntry("amazon2014", "Clothing_Shoes_and_Jewelry", (30, 350)),
    "home": DatasetEntry("amazon2014", "Home_and_Kitchen", (100, 120)),
    "cellphones": DatasetEntry("amazon2014", "Cell_Phones_and_Accessories", (40, 80)),
    "health": DatasetEntry("amazon2014", "Health_and_Personal_Care", (70, 80)),
    "videogames": DatasetEntry("amazon2014", "Video_Games", (100, 20)),
    "office": DatasetEntry("amazon2014", "Office_Products", (20, 40)),
    "grocery": DatasetEntry("amazon2014", "Grocery_and_Gourmet_Food", (30, 50)),
    "pets": DatasetEntry("amazon2014", "Pet_Supplies", (35, 40)),
    "electronics": DatasetEntry("amazon2014", "Electronics", (500, 200)),
    # Amazon 2018
    "beauty-2018": DatasetEntry("amazon2018", "All_Beauty", (1, 15), "small: about 5 thousand 5-core reviews"),
    "luxury-beauty-2018": DatasetEntry("amazon2018", "Luxury_Beauty", (10, 10)),
    "sports-2018": DatasetEntry("amazon2018", "Sports_and_Outdoors", (400, 300)),
    "toys-2018": DatasetEntry("amazon2018", "Toys_and_Games", (250, 250)),
    "clothing-2018": DatasetEntry("amazon2018", "Clothing_Shoes_and_Jewelry", (1200, 1000)),
    "videogames-2018": DatasetEntry("amazon2018", "Video_Games", (150, 50)),
}


def dataset_files(name: str) -> list[tuple[str, str]]:
    """``[(path under the release's base URL, local file name), ...]`` of a dataset: reviews, then metadata."""
    entry = _entry(name)
    rel = RELEASES[entry.release]
    paths = [rel.reviews.format(cat=entry.category), rel.meta.format(cat=entry.category)]
    return [(p, p.rsplit("/", 1)[-1]) for p in paths]


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (see `download --list`)")
    return DATASETS[name]


def list_datasets() -> str:
    """The table printed by ``download --list``."""
    lines = [f"{'name':<20} {'release':<11} files (approx. size)", "-" * 100]
    for name, entry in DATASETS.items():
        files = "  +  ".join(f"{local} (~{mb:g} MB)" for (_, local), mb in zip(dataset_files(name), entry.approx_mb))
        lines.append(f"{name:<20} {entry.release:<11} {files}")
        if entry.note:
            lines.append(f"{'':<33}{entry.note}")
    lines += ["", "Sizes are rough estimates (the download shows the real size). Sources:"]
    lines += [f"  {r.key}: {r.base_url}/ - {r.about}; {r.page}" for r in RELEASES.values()]
    lines.append(f"Research use only; cite the papers on those pages. Another base URL: --base-url or ${BASE_URL_ENV}.")
    return "\n".join(lines)


# ---- integrity ----------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_gzip(path: Path) -> int:
    """Decompress ``path`` to the end (checks every member's CRC and length); returns the decompressed size.

    Raises :class:`DownloadError` naming the file when it is not a complete, valid gzip stream.
    """
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; truncation is an EOFError
        raise DownloadError(f"{path.name} is not a valid gzip file ({type(exc).__name__}: {exc})") from None
    return total


# ---- one file -----------------------------------------------------------------------------
@dataclass
class _Progress:
    """tqdm bar + (when stderr is not a terminal) a flushed log line every ~10%."""

    name: str
    total: int | None
    start: int
    enabled: bool
    log: Callable[[str], None]
    bar: object = None
    done: int = 0
    next_mark: float = 0.1
    last_log: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.done = self.start
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, unit="B", unit_scale=True, unit_divisor=1000,
                            desc=self.name, leave=True)
        if self.total:
            self.next_mark = (int(self.start / self.total * 10) + 1) / 10

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.enabled and not _stderr_is_tty():
            now = time.monotonic()
            if (self.total and self.done >= self.next_mark * self.total) or now - self.last_log > 30:
                self.log(f"[download] {self.name}: {_mb(self.done)}" + (f" of {_mb(self.total)} "
                         f"({self.done / self.total:.0%})" if self.total else ""))
                self.last_log = now
                if self.total:
                    self.next_mark = (int(self.done / self.total * 10) + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, log) -> None:
    """One HTTP request: resume ``part`` from its current size (Range + If-Range), append to the end.

    Raises ``urllib.error.HTTPError`` (status), ``ConnectionError`` (cut short) or ``OSError`` (timeouts, ...).
    """
    info_path = part.with_name(part.name + ".json")  # the server's validator, for If-Range on resume
    have = part.stat().st_size if part.exists() else 0
    info = {}
    if have and info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
    if have and not info.get("validator"):  # cannot tell whether the server's file changed: start over
        have = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = info["validator"]
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: the part may already be complete
            total = _total_from_content_range(exc.headers.get("Content-Range", ""))
            exc.close()
            if total == have:
                return
            part.unlink(missing_ok=True)
            raise ConnectionError(f"server refused to resume at byte {have} (HTTP 416); starting over") from None
        raise
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start = _start_from_content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)
                raise ConnectionError(f"server resumed at byte {start}, expected {have}; starting over")
            total = _total_from_content_range(resp.headers.get("Content-Range", "")) or (
                have + length if length is not None else None)
            mode = "ab"
            if have:
                log(f"[download] resuming {part.name[:-5]} at {_mb(have)}")
        else:  # 200: the whole file (first request, server without Range support, or the file changed)
            have, total, mode = 0, length, "wb"
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            atomic_write_json(info_path, {"url": url, "validator": validator, "total": total})
        bar = _Progress(part.name[:-5], total, have, progress, log)
        written = have
        try:
            with open(part, mode) as fh:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    if total is not None and written < total:
        raise ConnectionError(f"connection closed after {written:,} of {total:,} bytes")
    if total is not None and written > total:
        part.unlink(missing_ok=True)
        raise ConnectionError(f"received {written:,} bytes, more than the announced {total:,}; starting over")


def _start_from_content_range(value: str) -> int | None:
    try:  # "bytes 100-199/200"
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_from_content_range(value: str) -> int | None:
    try:  # "bytes 100-199/200" or "bytes */200"
        tail = value.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    except IndexError:
        return None


def fetch(url: str, dest: Path, *, retries: int = 3, timeout: float = 30.0, backoff: float = 2.0,
          progress: bool = True, log: Callable[[str], None] = print) -> None:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed across attempts and runs), verify the gzip,
    then rename into place. Client errors (4xx except 408/429) fail at once; the rest are retried ``retries``
    times with exponential backoff (``backoff`` seconds, doubling)."""
    part = dest.with_name(dest.name + ".part")
    info_path = part.with_name(part.name + ".json")
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            log(f"[download] {dest.name}: attempt {attempt + 1} of {retries + 1} in {wait:g} s ({last})")
            time.sleep(wait)
        try:
            _fetch_once(url, part, timeout, progress, log)
            break
        except urllib.error.HTTPError as exc:
            exc.close()
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            last = exc
        except (ConnectionError, TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last = exc  # refused, reset, cut short, timed out: retried, resuming from the .part file
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} attempt(s): {last}"
                            + (f" (partial download kept in {part}; run again to resume)" if part.exists() else ""))
    try:
        verify_gzip(part)
    except DownloadError as exc:
        part.unlink(missing_ok=True)
        info_path.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the downloaded {exc}; removed it, nothing was written to {dest}") from None
    os.replace(part, dest)
    info_path.unlink(missing_ok=True)


# ---- a dataset ----------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {"files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DownloadError(f"{path} is not valid JSON ({exc}); delete it to re-verify every file") from None
    data.setdefault("files", {})
    return data


def download_dataset(name: str, folder: str | Path, *, base_url: str | None = None, retries: int = 3,
                     timeout: float = 30.0, backoff: float = 2.0, progress: bool = True,
                     log: Callable[[str], None] = print) -> dict:
    """Download dataset ``name`` (a key of :data:`DATASETS`) into ``folder``; returns its manifest entries.

    ``base_url`` (else ``$QBERT4REC_DOWNLOAD_BASE_URL``, else the release's public URL) replaces the release's
    base: files are fetched from ``<base_url>/<path>`` with the release's paths (see :func:`dataset_files`).
    """
    entry = _entry(name)
    release = RELEASES[entry.release]
    base = (base_url or os.environ.get(BASE_URL_ENV) or release.base_url).rstrip("/")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    results = {}
    for path, local in dataset_files(name):
        url = f"{base}/{path}"
        dest = folder / local
        recorded = manifest["files"].get(local)
        if dest.exists():
            size, digest = dest.stat().st_size, sha256_of(dest)
            if recorded and (recorded.get("size"), recorded.get("sha256")) == (size, digest):
                log(f"[download] {local}: already complete ({_mb(size)}, sha256 matches {MANIFEST}); skipped")
                results[local] = recorded
                continue
            if recorded:
                log(f"[download] MISMATCH {dest}: {MANIFEST} records {recorded.get('size')} bytes, sha256 "
                    f"{str(recorded.get('sha256'))[:16]}..., the file has {size} bytes, sha256 {digest[:16]}...; "
                    "downloading it again")
                dest.unlink()
            else:
                try:
                    verify_gzip(dest)
                except DownloadError as exc:
                    log(f"[download] {dest} is there but not in {MANIFEST} and {exc}; downloading it again")
                    dest.unlink()
                else:
                    log(f"[download] {local}: already there (valid gzip, not in {MANIFEST}); recorded, skipped")
                    results[local] = manifest["files"][local] = {
                        "url": None, "size": size, "sha256": digest, "recorded": _now(), "dataset": name}
                    atomic_write_json(folder / MANIFEST, manifest)
                    continue
        log(f"[download] {url} -> {dest}")
        t0 = time.perf_counter()
        fetch(url, dest, retries=retries, timeout=timeout, backoff=backoff, progress=progress, log=log)
        size, digest = dest.stat().st_size, sha256_of(dest)
        if recorded and recorded.get("sha256") not in (None, digest):
            log(f"[download] note: {local} from the server differs from the copy recorded earlier "
                f"(sha256 {str(recorded['sha256'])[:16]}... -> {digest[:16]}...)")
        results[local] = manifest["files"][local] = {
            "url": url, "size": size, "sha256": digest, "recorded": _now(), "dataset": name}
        atomic_write_json(folder / MANIFEST, manifest)  # after every file: an interrupted run keeps what it has
        log(f"[download] {local}: {_mb(size)} in {time.perf_counter() - t0:.1f} s, gzip verified, sha256 {digest[:16]}...")
    return results


def _now() -> str:
    return formatdate(usegmt=True)
