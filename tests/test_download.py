"""`download`: a loopback HTTP server (127.0.0.1, started here) serves Amazon-2014-format files written here.

Never touches the internet: every URL is the local server's, passed as the base URL.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qbert4rec_lib.data import download as dl
from qbert4rec_lib.kit.cli import main

# ---- tiny Amazon 2014 files (reviews: JSON lines; metadata: Python literals, as published) ------------------
USERS = [f"U{u}" for u in range(6)]
ITEMS = [f"B00000000{i}" for i in range(6)]


def _reviews() -> bytes:
    lines = []
    for u, user in enumerate(USERS):  # 6 users x 6 items: survives 5-core
        for i, item in enumerate(ITEMS):
            lines.append(json.dumps({"reviewerID": user, "asin": item, "overall": 5.0, "reviewText": "fine",
                                     "unixReviewTime": 1_300_000_000 + 86_400 * ((u + i) % 6)}))
    lines.append(json.dumps({"reviewerID": "U0", "asin": "B0000000ZZ", "unixReviewTime": 1_400_000_000}))
    for item in ITEMS[:2]:  # a user with 2 reviews and an item with 1: removed by 5-core
        lines.append(json.dumps({"reviewerID": "SHORT", "asin": item, "unixReviewTime": 1_300_000_000}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _meta() -> bytes:
    lines = [repr({"asin": item, "title": f"Lipstick {i} &amp; gloss", "price": 9.5,
                   "categories": [["Beauty", "Makeup", "Lips"]]}) for i, item in enumerate(ITEMS)]
    lines.append(repr({"asin": "B0000000ZZ", "title": "unused", "categories": [["Beauty"]]}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


REVIEWS, META = _reviews(), _meta()
COUNTS = (6, 6, 36)  # users, items, interactions after 5-core


class _Server:
    """Files by URL path, with Range/If-Range support; ``cut[path] = n`` sends n bytes then drops the connection
    (once); ``requests`` records (path, Range header)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.requests = dict(files), {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start, rng = 0, self.headers.get("Range")
                if rng and self.headers.get("If-Range", etag) == etag:
                    start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                n = outer.cut.pop(self.path, None)
                if n is not None:  # drop the connection mid-file
                    self.wfile.write(body[start:start + n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = _Server({"/reviews_Beauty_5.json.gz": REVIEWS, "/meta_Beauty.json.gz": META})
    yield srv
    srv.stop()


def _get(folder: Path, server, **kw):
    kw = {"retries": 2, "timeout": 5, "backoff": 0.01, "progress": False, "log": lambda m: None} | kw
    return dl.download_dataset("beauty", folder, base_url=server.url, **kw)


# ---- cases --------------------------------------------------------------------------------
def test_full_download_writes_the_files_a_manifest_and_prints_the_stats(server, tmp_path, capsys):
    folder = tmp_path / "beauty"
    assert main(["download", "beauty", "--to", str(folder), "--base-url", server.url, "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert (folder / "reviews_Beauty_5.json.gz").read_bytes() == REVIEWS
    assert (folder / "meta_Beauty.json.gz").read_bytes() == META
    assert sorted(p.name for p in folder.iterdir()) == [dl.MANIFEST, "meta_Beauty.json.gz", "reviews_Beauty_5.json.gz"]
    manifest = json.loads((folder / dl.MANIFEST).read_text())["files"]
    assert manifest["reviews_Beauty_5.json.gz"]["sha256"] == hashlib.sha256(REVIEWS).hexdigest()
    assert manifest["meta_Beauty.json.gz"]["size"] == len(META)
    assert manifest["meta_Beauty.json.gz"]["url"] == f"{server.url}/meta_Beauty.json.gz"
    assert "6 users, 6 items, 36 interactions" in out  # the `stats` lines, after 5-core

    assert main(["stats", str(folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == COUNTS

    n = len(server.requests)  # a second run finds both files complete: no request at all
    assert main(["download", "beauty", "--to", str(folder), "--base-url", server.url, "--json"]) == 0
    assert len(server.requests) == n
    assert json.loads(capsys.readouterr().out)["users"] == 6


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.cut["/meta_Beauty.json.gz"] = 100  # the first response stops after 100 bytes
    lines = []
    _get(tmp_path, server, log=lines.append)
    assert (tmp_path / "meta_Beauty.json.gz").read_bytes() == META
    meta_requests = [r for p, r in server.requests if p == "/meta_Beauty.json.gz"]
    assert meta_requests == [None, "bytes=100-"]
    assert any("attempt 2" in m for m in lines) and any("resuming" in m for m in lines)
    assert not list(tmp_path.glob("*.part*"))


def test_a_partial_file_left_by_an_interrupted_run_is_resumed(server, tmp_path):
    server.cut["/reviews_Beauty_5.json.gz"] = 50
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        _get(tmp_path, server, retries=0)
    assert (tmp_path / "reviews_Beauty_5.json.gz.part").stat().st_size == 50
    assert not (tmp_path / "reviews_Beauty_5.json.gz").exists()  # nothing incomplete in place
    _get(tmp_path, server)
    assert (tmp_path / "reviews_Beauty_5.json.gz").read_bytes() == REVIEWS
    assert [r for p, r in server.requests if p == "/reviews_Beauty_5.json.gz"] == [None, "bytes=50-"]


def test_a_404_is_a_clear_error_naming_the_url(server, tmp_path, capsys):
    del server.files["/meta_Beauty.json.gz"]
    assert main(["download", "beauty", "--to", str(tmp_path), "--base-url", server.url, "--json"]) == 1
    err = capsys.readouterr().err
    assert f"{server.url}/meta_Beauty.json.gz" in err and "404" in err
    assert [p for p, _ in server.requests].count("/meta_Beauty.json.gz") == 1  # a 404 is not retried
    assert not (tmp_path / "meta_Beauty.json.gz").exists()


def test_a_corrupt_gzip_is_a_clear_error_and_leaves_no_file(server, tmp_path):
    server.files["/meta_Beauty.json.gz"] = META[:-30]  # truncated: the gzip stream does not end
    with pytest.raises(dl.DownloadError) as err:
        _get(tmp_path, server)
    message = str(err.value)
    assert "meta_Beauty.json.gz" in message and "not a valid gzip" in message
    assert not (tmp_path / "meta_Beauty.json.gz").exists()
    assert not list(tmp_path.glob("meta_Beauty*"))  # no .part either
    server.files["/meta_Beauty.json.gz"] = b"<html>not gzip at all</html>"
    with pytest.raises(dl.DownloadError, match="not a valid gzip"):
        _get(tmp_path, server)


def test_a_manifest_mismatch_is_reported_and_the_file_downloaded_again(server, tmp_path):
    _get(tmp_path, server)
    target = tmp_path / "reviews_Beauty_5.json.gz"
    target.write_bytes(gzip.compress(b"tampered\n"))  # a valid gzip, but not the recorded file
    lines = []
    _get(tmp_path, server, log=lines.append)
    mismatch = [m for m in lines if "MISMATCH" in m]
    assert len(mismatch) == 1 and str(target) in mismatch[0] and "sha256" in mismatch[0]
    assert any("meta_Beauty.json.gz: already complete" in m for m in lines)
    assert target.read_bytes() == REVIEWS


def test_list_names_the_datasets_files_and_sizes(capsys):
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "beauty" in out and "reviews_Beauty_5.json.gz" in out and "meta_Beauty.json.gz" in out
    assert "beauty-2018" in out and "All_Beauty_5.json.gz" in out and "MB" in out
    assert "snap.stanford.edu" in out


def test_dataset_table_matches_the_loader_file_names(tmp_path):
    from qbert4rec_lib.data.loaders import detect_format

    for name, entry in dl.DATASETS.items():
        (_, reviews), (_, meta) = dl.dataset_files(name)
        folder = tmp_path / name  # the files as `download` saves them, beside a manifest: the loader's format
        folder.mkdir()
        for local in (reviews, meta, dl.MANIFEST):
            (folder / local).write_bytes(b"{}")
        found = detect_format(folder)
        assert (found.kind, found.interactions.name, found.metadata.name) == (entry.release, reviews, meta), name
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dl.dataset_files("nope")


def test_base_url_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url)
    dl.download_dataset("beauty", tmp_path, retries=0, timeout=5, progress=False, log=lambda m: None)
    assert (tmp_path / "reviews_Beauty_5.json.gz").read_bytes() == REVIEWS


def test_a_file_that_changed_on_the_server_is_not_glued_to_an_old_partial_one(server, tmp_path):
    server.cut["/reviews_Beauty_5.json.gz"] = 50
    with pytest.raises(dl.DownloadError):
        _get(tmp_path, server, retries=0)
    new = gzip.compress(gzip.decompress(REVIEWS) + b"\n", mtime=1)  # another version of the file
    server.files["/reviews_Beauty_5.json.gz"] = new
    _get(tmp_path, server)  # If-Range carries the old ETag: the server answers with the whole new file
    assert (tmp_path / "reviews_Beauty_5.json.gz").read_bytes() == new
    assert [r for p, r in server.requests if p == "/reviews_Beauty_5.json.gz"] == [None, "bytes=50-"]


def test_a_valid_file_copied_in_by_hand_is_verified_and_recorded_without_a_request(server, tmp_path):
    (tmp_path / "reviews_Beauty_5.json.gz").write_bytes(REVIEWS)
    _get(tmp_path, server)
    assert [p for p, _ in server.requests] == ["/meta_Beauty.json.gz"]
    entry = json.loads((tmp_path / dl.MANIFEST).read_text())["files"]["reviews_Beauty_5.json.gz"]
    assert entry["sha256"] == hashlib.sha256(REVIEWS).hexdigest() and entry["url"] is None
