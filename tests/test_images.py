"""The image downloader against a local HTTP server on 127.0.0.1 (loopback only)."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from qbert4rec_lib.data.images import DownloadSummary, download_images, safe_stem

SLOW_SECONDS = 1.5


def _image_bytes(colour, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes((200, 30, 30), "PNG"), _image_bytes((30, 30, 200), "JPEG")
ROUTES = {  # path -> (status, content type, body)
    "/a.png": (200, "image/png", PNG),
    "/b": (200, "image/jpeg", JPEG),  # no extension in the URL: the file gets one from its content
    "/octet": (200, "application/octet-stream", PNG),
    "/broken.png": (200, "image/png", b"\x89PNG\r\n\x1a\n this is not really a png"),
    "/truncated.png": (200, "image/png", PNG[: len(PNG) // 2]),
    "/page.html": (200, "text/html", b"<html>not an image</html>"),
    "/big.png": (200, "image/png", PNG + b"\0" * 5000),
}


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/slow.png":
            time.sleep(SLOW_SECONDS)
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path == "/error500":
            self.send_response(500)
            self.end_headers()
            return
        status, ctype, body = ROUTES.get(self.path, (404, "text/plain", b"not found"))
        if self.path == "/slow.png":
            status, ctype, body = 200, "image/png", PNG
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_download_summary_and_files(server, tmp_path):
    urls = {
        "A1": f"{server}/a.png", "B2": f"{server}/b", "C3": f"{server}/octet",
        "broken": f"{server}/broken.png", "trunc": f"{server}/truncated.png", "html": f"{server}/page.html",
        "big": f"{server}/big.png", "gone": f"{server}/nothing-here.png", "slow": f"{server}/slow.png",
        "redirect": f"{server}/to-file", "scheme": "file:///etc/passwd", "nourl": "",
        "../../escape": f"{server}/a.png", "err": f"{server}/error500",
    }
    out = tmp_path / "imgs"
    _Handler.hits.clear()
    s = download_images(urls, out, timeout=0.5, retries=1, max_bytes=max(len(PNG), len(JPEG)) + 100, workers=4, progress=False)
    assert isinstance(s, DownloadSummary)
    assert s.fetched == 4  # A1, B2, C3 and the traversal-looking key (saved under a safe name)
    assert s.broken == 4  # broken, trunc, html, big
    assert s.missing == 6  # gone (404), slow (timeout), redirect, scheme, err (500), nourl
    assert s.skipped_existing == 0
    assert set(s.failures) == set(urls) - {"A1", "B2", "C3", "../../escape", "nourl"}
    assert "HTTP 404" in s.failures["gone"]
    assert "not an image" in s.failures["html"] and "max_bytes" in s.failures["big"]
    assert "network error" in s.failures["slow"] and "302" in s.failures["redirect"]
    assert "scheme" in s.failures["scheme"]
    assert _Handler.hits["/error500"] == 2 and _Handler.hits["/nothing-here.png"] == 1  # 5xx retried, 4xx not
    # only valid images were kept, every file inside out/, names from the key with the content's extension
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([s.paths[k].name for k in ("A1", "B2", "C3", "../../escape")])
    assert s.paths["A1"].name == "A1.png" and s.paths["B2"].name == "B2.jpg"
    assert all(p.parent == out for p in s.paths.values())
    assert not list(tmp_path.glob("escape*")) and ".." not in s.paths["../../escape"].name
    for p in s.paths.values():
        with Image.open(p) as im:
            im.load()


def test_download_resumes(server, tmp_path):
    urls = {"A1": f"{server}/a.png", "B2": f"{server}/b"}
    out = tmp_path / "imgs"
    out.mkdir()
    (out / "B2.jpg").write_bytes(b"half a file")  # a leftover invalid file is replaced
    first = download_images({"A1": urls["A1"]}, out, progress=False)
    assert (first.fetched, first.skipped_existing) == (1, 0)
    second = download_images(urls, out, progress=False)
    assert (second.fetched, second.skipped_existing, second.broken, second.missing) == (1, 1, 0, 0)
    assert set(second.paths) == {"A1", "B2"}
    third = download_images(urls, out, progress=False)
    assert (third.fetched, third.skipped_existing) == (0, 2)


def test_safe_stem_never_escapes():
    for key in ["../x", "/etc/passwd", "a/b\\c", "..", "", "ok_ID-1.2", "é"]:
        stem = safe_stem(key)
        assert "/" not in stem and "\\" not in stem and ".." not in stem and not stem.startswith(".") and stem
    assert safe_stem("ok_ID-1.2") == "ok_ID-1.2"
    assert safe_stem("a/b") != safe_stem("a_b")


def test_feature_stage_downloads_url_images_into_the_cache(server, tmp_path):
    """A dataset whose metadata holds URLs: the image stage fetches them into the cache, 404s become absent."""
    import numpy as np

    from qbert4rec_lib.data.dataset import Dataset, ItemTable, Modalities
    from qbert4rec_lib.semantic.encoders import image_paths

    urls = [f"{server}/a.png", f"{server}/nothing.png", "", f"{server}/b"]
    items = ItemTable(raw_ids=["A", "B", "C", "D"], titles=["a", "b", "c", "d"], categories=[()] * 4, brands=[""] * 4,
                      prices=np.full(4, np.nan), descriptions=[""] * 4, images=urls)
    ds = Dataset("urls", items, ["u"], [np.array([1, 2, 3, 4])], Modalities(text=True, image=True, image_source="urls"))
    paths = image_paths(ds, cache_root=tmp_path, progress=False)
    assert paths[1] is None and paths[2] is None
    assert paths[0].endswith("A.png") and paths[3].endswith("D.jpg")
    assert str(tmp_path / "images" / ds.fingerprint()) in paths[0]
    assert image_paths(ds, cache_root=tmp_path, progress=False) == paths  # second call: files reused
