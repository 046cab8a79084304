"""Reliability (issue 14): a cache hit is never wrong, bad files never pass as data, every error names its cause.

Each test builds the bad input or the fault itself and asserts the clear error, the counted skip or the
rebuilt artifact, and that no wrong data flows on. The whole-chain fault injection is at the end.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from qbert4rec_lib.cache import CacheError, StageDir, load_chunk, save_chunk
from qbert4rec_lib.data.dataset import DataFormatError
from qbert4rec_lib.data.loaders import load_dataset


# ---- item 2 / 9: integrity records and cache errors that name the file ------------------------------------
def _stage(tmp_path, **arrays) -> StageDir:
    sd = StageDir(tmp_path, "features-text", "k1")
    sd.write(arrays or {"vectors": np.arange(24, dtype=np.float32).reshape(4, 6)}, {"note": "x"})
    return sd


def _zero_inside(path: Path, start: int = 200, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[start:start + n] = bytes(n)
    path.write_bytes(bytes(data))


def test_write_records_shape_dtype_and_hash_of_every_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    sd = StageDir(tmp_path, "seqmodel", "k")
    weights = {"w": torch.ones(3, 2), "b": torch.zeros(5, dtype=torch.float64)}
    sd.write({"ids": np.ones((7, 3), np.int64)}, {}, binary={"model.safetensors": lambda p: save_file(weights, p)})
    files = sd.meta()["integrity"]["files"]
    assert files["ids.npy"]["shape"] == [7, 3] and files["ids.npy"]["dtype"] == "<i8"
    assert files["model.safetensors"]["tensors"] == {"b": {"shape": [5], "dtype": "F64"}, "w": {"shape": [3, 2], "dtype": "F32"}}
    assert all(len(f["blake2b"]) == 32 and f["bytes"] > 0 for f in files.values())
    assert sd.usable()


@pytest.mark.parametrize("fault", ["zeroed", "cut", "deleted", "replaced_same_size"])
def test_damaged_npy_is_reported_and_not_trusted(tmp_path, capsys, fault):
    sd = _stage(tmp_path, vectors=np.random.default_rng(0).normal(size=(179, 32)).astype(np.float32))
    path = sd.path / "vectors.npy"
    if fault == "zeroed":
        _zero_inside(path, 300, 2000)
    elif fault == "cut":
        np.save(path, np.load(path)[:10])  # a valid .npy with 10 of 179 rows
    elif fault == "deleted":
        path.unlink()
    else:
        np.save(path, np.zeros((179, 32), np.float32))
    assert not sd.usable()
    err = capsys.readouterr().err
    assert str(path) in err and "rebuilding" in err


def test_cache_errors_name_the_path(tmp_path):
    sd = _stage(tmp_path)
    npy = sd.path / "vectors.npy"
    npy.write_bytes(npy.read_bytes()[:90])  # truncated .npy
    with pytest.raises(CacheError, match=str(npy)):
        sd.load_npy("vectors")
    sd.meta_path.write_text("{not json", encoding="utf-8")  # garbage meta.json
    with pytest.raises(CacheError, match=f"{sd.meta_path}.*unreadable cache record"):
        sd.meta()
    assert not sd.usable()
    sd.meta_path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CacheError, match="expected an object"):
        sd.meta()


def test_truncated_safetensors_names_the_file(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    sd = StageDir(tmp_path, "seqmodel", "k")
    sd.write({}, {}, binary={"model.safetensors": lambda p: save_file({"w": torch.ones(64, 64)}, p)})
    path = sd.path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:500])
    assert not sd.usable()
    assert str(path) in capsys.readouterr().err
    with pytest.raises(CacheError, match=f"{path}.*unreadable weights"):
        sd.load_safetensors("model.safetensors")
    path.unlink()
    with pytest.raises(CacheError, match=f"{path}.*missing"):
        sd.load_safetensors("model.safetensors")


def test_legacy_folder_without_record_gets_structural_checks(tmp_path, capsys):
    sd = _stage(tmp_path)
    meta = sd.meta()
    del meta["integrity"]
    sd.meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert sd.usable()  # an older intact folder is still a hit
    assert not sd.usable(require=("model.safetensors",))  # ... but not when a required file is missing
    npy = sd.path / "vectors.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    assert not sd.usable()
    assert str(npy) in capsys.readouterr().err


@pytest.mark.parametrize("fault", ["truncated", "zeroed", "garbage", "wrong_shape"])
def test_bad_resume_chunk_is_dropped(tmp_path, capsys, fault):
    path = tmp_path / "text-abc-8-00000.npy"
    save_chunk(path, np.ones((8, 4), np.float32))
    assert load_chunk(path, (8, 4)) is not None
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif fault == "zeroed":
        _zero_inside(path, 140, 16)
    elif fault == "garbage":
        path.write_bytes(b"garbage")
    else:
        np.save(path, np.ones((4, 4), np.float32))
        (tmp_path / (path.name + ".b2")).unlink()  # an old-style chunk without a digest: shape still checked
    assert load_chunk(path, (8, 4)) is None
    assert not path.exists() and str(path) in capsys.readouterr().err


def test_text_encoder_recomputes_a_truncated_chunk(tmp_path, capsys):
    from qbert4rec_lib.semantic.encoders import TextEncoder

    enc = TextEncoder(max_tokens=16)
    texts = [f"item {i} {'word ' * (i % 5)}" for i in range(12)]
    full = enc.encode(texts, batch_size=4, progress=False, resume_dir=tmp_path, chunk_size=4)
    chunks = sorted(tmp_path.glob("text-*.npy"))
    assert len(chunks) == 3
    chunks[1].write_bytes(chunks[1].read_bytes()[:120])  # an interrupted copy, a full disk ...
    again = enc.encode(texts, batch_size=4, progress=False, resume_dir=tmp_path, chunk_size=4)
    np.testing.assert_allclose(again, full, atol=1e-6)
    assert str(chunks[1]) in capsys.readouterr().err and chunks[1].is_file()  # recomputed and saved again


# ---- items 3-5, 7: loaders -------------------------------------------------------------------------------
ITEM_HEADER = "item_id:token\ttitle:token\tprice:float\tbrand:token"


def _seq_folder(tmp_path, item_lines, seq_text=None) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    seq_text = seq_text or "u1 A B C\nu2 B C D\nu3 C D A\n"
    (folder / "user_sequence.txt").write_text(seq_text, encoding="utf-8", newline="")
    (folder / "cat.item").write_text("\n".join([ITEM_HEADER, *item_lines]) + "\n", encoding="utf-8")
    return folder


def test_item_row_with_only_its_id_is_an_error_not_a_join(tmp_path):
    folder = _seq_folder(tmp_path, ["A\tAlpha\t1.0\tX", "B", "C\tGamma\t3.0\tZ", "D\tDelta\t4.0\tW"])
    with pytest.raises(DataFormatError, match=r"cat\.item, line 3.*1 of 4 fields"):
        load_dataset(folder)


def test_genuine_split_record_is_still_joined(tmp_path):
    folder = _seq_folder(tmp_path, ["A\tAlpha\t1.0\tX", "B\tBeta", "shampoo\t2.0\tY", "C\tGamma\t3.0\tZ", "D\tD\t4.0\tW"])
    ds = load_dataset(folder)
    assert ds.items.titles[ds.items.raw_ids.index("B")] == "Beta shampoo"
    assert ds.items.titles[ds.items.raw_ids.index("C")] == "Gamma"
    assert any("line 3): record split by a newline" in r for r in ds.report.repairs)


def test_join_that_would_not_parse_is_an_error(tmp_path):
    folder = _seq_folder(tmp_path, ["A\tAlpha\t1.0\tX", "B\tBeta", "shampoo\tnot-a-price\tY", "C\tG\t3.0\tZ", "D\tD\t4.0\tW"])
    with pytest.raises(DataFormatError, match=r"line 3.*cannot be repaired"):
        load_dataset(folder)


def test_space_separated_inter_line_is_an_error(tmp_path):
    folder = tmp_path / "inter"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"u{u}\ti{i}\t{u * 10 + i}" for u in range(6) for i in range(6)]
    rows.insert(5, "u9 i1 100")  # space-separated: would swallow the next interaction if joined
    (folder / "x.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"x\.inter, line 6.*space-separated"):
        load_dataset(folder)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_read_the_same(tmp_path, newline):
    seq = newline.join(["u1 A B C", "u2 B C D", "u3 C D A", "u4 A D B"]) + newline
    folder = _seq_folder(tmp_path, ["A\tAlpha\t1.0\tX", "B\tBeta\t2.0\tY", "C\tGamma\t3.0\tZ", "D\tDelta\t4.0\tW"], seq)
    item = folder / "cat.item"
    item.write_bytes(item.read_bytes().replace(b"\n", newline.encode()))
    ds = load_dataset(folder)
    assert ds.user_ids == ["u1", "u2", "u3", "u4"] and ds.num_items == 4
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [2, 3, 4], [3, 4, 1], [1, 4, 2]]
    assert ds.items.titles == ["Alpha", "Beta", "Gamma", "Delta"]


def test_literal_quotes_in_titles_are_kept(tmp_path):
    folder = _seq_folder(tmp_path, ['A\t"Best" Shampoo "Ever"\t1.0\tX', 'B\t"A ""quoted"" title"\t2.0\tY',
                                    "C\tGamma\t3.0\tZ", "D\tDelta\t4.0\tW"])
    ds = load_dataset(folder)
    assert ds.items.titles[:2] == ['"Best" Shampoo "Ever"', 'A "quoted" title']


def _amazon2018(tmp_path, meta_rows, gz=True) -> Path:
    folder = tmp_path / "a18"
    folder.mkdir(exist_ok=True)
    reviews = [{"reviewerID": f"U{u}", "asin": a, "unixReviewTime": 100 * u + k}
               for u in range(6) for k, a in enumerate(["REAL1", "B2", "B3", "B4", "B5"])]
    opener = gzip.open if gz else open
    with opener(folder / ("Cat_5.json.gz" if gz else "Cat_5.json"), "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    with opener(folder / ("meta_Cat.json.gz" if gz else "meta_Cat.json"), "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in meta_rows) + "\n")
    return folder


def test_asin_inside_a_title_does_not_hide_the_real_row(tmp_path):
    rows = [{"title": "Kit {'asin': 'OTHER123'} edition", "asin": "REAL1"}] + [{"asin": f"B{k}", "title": f"t{k}"} for k in range(2, 6)]
    ds = load_dataset(_amazon2018(tmp_path, rows), kcore=0)
    assert ds.items.titles[ds.items.raw_ids.index("REAL1")] == "Kit {'asin': 'OTHER123'} edition"
    assert not ds.report.skipped.get("item without metadata row (kept with empty metadata)")


@pytest.mark.parametrize("fault", ["truncated", "bad_crc", "corrupt", "not_gzip"])
def test_damaged_gz_names_the_file(tmp_path, fault):
    rows = [{"asin": f"B{k}", "title": f"t{k}"} for k in range(1, 6)] + [{"asin": "REAL1", "title": "r"}]
    folder = _amazon2018(tmp_path, rows * 200)
    path = folder / "meta_Cat.json.gz"
    data = bytearray(path.read_bytes())
    if fault == "truncated":
        data = data[: len(data) // 2]
    elif fault == "bad_crc":
        data[-8] ^= 0xFF  # CRC32 of the trailer
    elif fault == "corrupt":
        data[len(data) // 2] ^= 0xFF
        data[len(data) // 2 + 1] ^= 0xFF
    else:
        data = bytearray(b'{"asin": "B1"}\n')  # plain text under a .gz name
    path.write_bytes(bytes(data))
    # corrupt deflate data may first decode into a garbage line (an error naming it); the CRC check at the end of
    # the stream stops everything else, so no damaged row is ever loaded
    expected = r".*" if fault == "corrupt" else r".*(gzip|damaged)"
    with pytest.raises(DataFormatError, match=rf"{path}, line \d+(, field 'record')?: {expected}"):
        load_dataset(folder, kcore=0)


# ---- item 6: a total deadline per image download ----------------------------------------------------------
DRIP, MAX_DRIPS = 0.1, 100  # one byte per 0.1 s, at most 100 bytes: the server is bounded (10 s) but slow


@pytest.fixture()
def drip_server(monkeypatch):
    """A loopback-only HTTP server (127.0.0.1, a free port) that drips its headers or its body."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            try:
                if self.path == "/slow-headers":
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                    for _ in range(MAX_DRIPS):
                        self.wfile.write(b"a")
                        self.wfile.flush()
                        time.sleep(DRIP)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(MAX_DRIPS):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(DRIP)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("route", ["/slow-body", "/slow-headers"])
def test_image_download_has_a_total_deadline(tmp_path, drip_server, route):
    import time

    from qbert4rec_lib.data.images import download_images

    t0 = time.monotonic()
    s = download_images({"X": drip_server + route}, tmp_path / "img", timeout=0.5, deadline=1.0, retries=2,
                        progress=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.5, elapsed  # one byte per 0.1 s never trips the 0.5 s socket timeout; the deadline does
    assert (s.fetched, s.missing) == (0, 1) and "deadline of 1 s" in s.failures["X"]
    assert not list((tmp_path / "img").iterdir())


# ---- item 8: local image paths stay inside the dataset folder; unreadable images are counted --------------
def _image_folder(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "imgdata"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "images" / "A.png")
    (folder / "images" / "B.png").write_text("not an image at all", encoding="utf-8")
    (tmp_path / "elsewhere.png").write_bytes((folder / "images" / "A.png").read_bytes())
    header = "item_id:token\ttitle:token\timage:token"
    rows = ["A\tAlpha\timages/A.png", "B\tBeta\timages/B.png", "C\tGamma\t/etc/hostname",
            "D\tDelta\t../../../../../../etc/passwd", "E\tEps\t../elsewhere.png"]
    (folder / "cat.item").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (folder / "user_sequence.txt").write_text("u1 A B C D E\nu2 E D C B A\nu3 A C E\n", encoding="utf-8")
    return folder


def test_image_paths_outside_the_folder_are_refused_and_counted(tmp_path):
    folder = _image_folder(tmp_path)
    ds = load_dataset(folder)
    assert ds.report.skipped["image path outside the dataset folder (image dropped)"] == 3
    assert ds.items.images[2:] == ["", "", ""]
    with pytest.raises(DataFormatError, match=r"cat\.item, line 4, field 'image'.*outside"):
        load_dataset(folder, strict=True)


def test_allowed_image_root_is_explicit(tmp_path, monkeypatch):
    folder = _image_folder(tmp_path)
    monkeypatch.setenv("QBERT4REC_IMAGE_ROOTS", str(tmp_path))
    ds = load_dataset(folder)
    assert ds.items.images[4] == str((tmp_path / "elsewhere.png").resolve())  # inside the allowed root
    assert ds.items.images[2] == ""  # /etc/hostname still is not


def test_unreadable_local_images_become_counted_broken_entries(tmp_path, capsys):
    from dataclasses import replace

    from qbert4rec_lib.semantic.encoders import resolve_images
    from qbert4rec_lib.semantic.features import FeatureConfig, build_features

    folder = _image_folder(tmp_path)
    ds = load_dataset(folder)
    res = resolve_images(ds, cache_root=tmp_path / "cache", progress=False)
    assert res.paths[0].endswith("A.png") and res.paths[1:] == [None] * 4
    assert res.summary.broken == 1 and res.summary.failures["B"].startswith("broken: not a valid image")
    assert "[features]" in capsys.readouterr().err
    # an in-memory item table that points outside its source folder is refused the same way
    ds.items.images[2] = "/etc/hostname"
    ds.items.images[3] = str(folder / ".." / ".." / "etc" / "passwd")
    res = resolve_images(ds, cache_root=tmp_path / "cache", progress=False)
    assert res.paths[2] is None and "outside the dataset folder" in res.summary.failures["C"]
    assert res.paths[3] is None and "outside the dataset folder" in res.summary.failures["D"]
    # the feature stage skips the broken image instead of crashing (here no image is left: absent, with a reason)
    ds.items.images[:] = ["images/B.png"] * 5
    fs = build_features(ds, replace(FeatureConfig(), modalities=("image",)), cache_root=tmp_path / "cache",
                        progress=False)
    assert "image" not in fs.modalities and fs.absent["image"] == "no item image could be found or downloaded"


# ---- item 10: config validation and one-line CLI errors --------------------------------------------------
BAD_ARGS = [
    (["quantize", "default", "--set", "rqvae.levels=True"], "RQVAEConfig.levels: expected int, got bool"),
    (["quantize", "default", "--set", "fusion.width=-8"], "FusionConfig.width must be an int >= 1, got -8"),
    (["quantize", "default", "--set", "max_len.x=3"], "ExperimentConfig.max_len is an int field, not a section"),
    (["features", "default", "--set", "features.structural_dim=-5"], "FeatureConfig.structural_dim must be an int >= 1"),
    (["fuse", "default", "--set", "fusion.batch_size=0"], "FusionConfig.batch_size must be an int >= 1, got 0"),
    (["quantize", "default", "--set", "rqvae.encoder_hidden=(64,-1)"], "RQVAEConfig.encoder_hidden: every element"),
    (["quantize", "default", "--set", "qbert.dropout=1.5"], "QBertConfig.dropout must be a number in [0, 1)"),
    (["quantize", "default", "--set", "pretrain.lr=nan"], "TrainConfig.lr: cannot parse 'nan'"),
    (["quantize", "default", "--set", "nosuch.x=1"], "ExperimentConfig has no section 'nosuch'"),
    (["quantize", "default", "--set", "fusion.gate=maybe"], "FusionConfig.gate must be one of 'dynamic', 'off'"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGS, ids=[a[-1] for a, _ in BAD_ARGS])
def test_cli_bad_values_are_one_line_errors(capsys, argv, message):
    from qbert4rec_lib.kit.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_cli_rejects_negative_threads(capsys):
    from qbert4rec_lib.kit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["quantize", "default", "--threads", "-1"])
    assert exc.value.code == 2 and "--threads: must be >= 0, got -1" in capsys.readouterr().err


def test_cli_generate_into_a_non_empty_folder(tmp_path, capsys):
    from qbert4rec_lib.kit.cli import main

    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["generate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {tmp_path} exists and was not written by" in err
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"  # untouched


def test_cli_name_chooses_among_two_item_files(tmp_path, capsys):
    from qbert4rec_lib.kit.cli import main

    folder = _seq_folder(tmp_path, ["A\tAlpha\t1.0\tX", "B\tBeta\t2.0\tY", "C\tGamma\t3.0\tZ", "D\tDelta\t4.0\tW"])
    (folder / "other.item").write_text((folder / "cat.item").read_text(encoding="utf-8").replace("Alpha", "Other"),
                                       encoding="utf-8")
    assert main(["stats", str(folder)]) == 2
    assert "several .item files (cat.item, other.item)" in capsys.readouterr().err
    assert main(["stats", str(folder), "--name", "other", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 4


def test_config_types_and_ranges_are_checked_in_post_init():
    from dataclasses import replace

    from qbert4rec_lib.models.baselines import BERT4RecConfig, SASRecConfig
    from qbert4rec_lib.config import ConfigError, ConfigTypeError, override, override_path
    from qbert4rec_lib.experiments.evaluate import EvalConfig
    from qbert4rec_lib.semantic.features import FeatureConfig
    from qbert4rec_lib.semantic.fusion import FusionConfig
    from qbert4rec_lib.models.masking import MaskConfig
    from qbert4rec_lib.experiments import ExperimentConfig
    from qbert4rec_lib.models.qbert import QBertConfig
    from qbert4rec_lib.semantic.quantize import RQVAEConfig
    from qbert4rec_lib.experiments.train import TrainConfig

    cases = [
        (lambda: FeatureConfig(batch_size=0), "FeatureConfig.batch_size must be an int >= 1"),
        (lambda: FeatureConfig(text_dtype="int8"), "FeatureConfig.text_dtype must be one of"),
        (lambda: FusionConfig(tau=0.0), "FusionConfig.tau must be a number > 0"),
        (lambda: RQVAEConfig(levels=True), "RQVAEConfig.levels must be an int, got bool"),
        (lambda: QBertConfig(hidden=64, heads=3), "QBertConfig.hidden (64) must be divisible by heads (3)"),
        (lambda: QBertConfig(level_weights=(1.0, -1.0)), "QBertConfig.level_weights: every element"),
        (lambda: MaskConfig(max_span=2.5), "MaskConfig.max_span must be an int, got float"),
        (lambda: TrainConfig(weight_decay=-1e-4), "TrainConfig.weight_decay must be a number >= 0"),
        (lambda: TrainConfig(time_limit_s=float("inf")), "TrainConfig.time_limit_s must be a finite number"),
        (lambda: EvalConfig(seed=-1), "EvalConfig.seed must be an int >= 0"),
        (lambda: ExperimentConfig(max_len=0), "ExperimentConfig.max_len must be an int >= 1"),
        (lambda: ExperimentConfig(fusion=RQVAEConfig()), "ExperimentConfig.fusion must be a FusionConfig"),
        (lambda: SASRecConfig(dropout=1.0), "SASRecConfig.dropout must be a number in [0, 1)"),
        (lambda: BERT4RecConfig(n_heads=0), "BERT4RecConfig.n_heads must be an int >= 1"),
        (lambda: override(FusionConfig(), width="'wide'"), "FusionConfig.width: expected int, got str"),
        (lambda: override(RQVAEConfig(), kmeans_init=1), "RQVAEConfig.kmeans_init: expected bool, got int"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError) as exc:
            make()
        assert message in str(exc.value), (message, str(exc.value))
    with pytest.raises(ConfigTypeError):  # a wrong type is also a TypeError
        RQVAEConfig(levels="3")
    with pytest.raises(TypeError):
        RQVAEConfig(levels="3")
    # valid values still pass, lists become tuples, and the defaults of every preset validate
    assert RQVAEConfig(encoder_hidden=[64, 32]).encoder_hidden == (64, 32)
    assert override_path(ExperimentConfig(), "fusion.width", "64").fusion.width == 64
    assert override_path(ExperimentConfig(), "max_len", "20").max_len == 20
    assert replace(FeatureConfig(), image_pretrained="/x.safetensors").image_pretrained == "/x.safetensors"
    assert override(FeatureConfig(), image_pretrained="laion2b_s34b_b79k").image_pretrained == "laion2b_s34b_b79k"


# ---- the whole chain: damage each cached artifact kind in turn, rerun, get the clean run's metrics ----------
def _chain_config():
    from qbert4rec_lib.semantic.features import FeatureConfig
    from qbert4rec_lib.semantic.fusion import FusionConfig
    from qbert4rec_lib.experiments import ExperimentConfig
    from qbert4rec_lib.models.qbert import QBertConfig
    from qbert4rec_lib.semantic.quantize import RQVAEConfig
    from qbert4rec_lib.experiments.train import TrainConfig

    return ExperimentConfig(
        features=FeatureConfig(text_max_tokens=16, text_chunk_size=32, batch_size=16, image_fit_epochs=1,
                               image_fit_size=32, image_fit_batch=32, image_fit_width=32, image_fit_layers=1,
                               image_fit_dim=16, structural_dim=8),
        fusion=FusionConfig(width=32, heads=2, max_depth=2, epochs=2, batch_size=64),
        rqvae=RQVAEConfig(levels=2, code_dim=8, encoder_hidden=(32,), epochs=3, kmeans_iters=10, batch_size=128),
        qbert=QBertConfig(hidden=16, layers=1, heads=1),
        pretrain=TrainConfig(epochs=1, batch_size=64), finetune=TrainConfig(epochs=1, batch_size=64),
        max_len=20)


def _artifact(root: Path, stage: str) -> Path:
    folders = [p for p in (root / stage).iterdir() if p.is_dir() and "." not in p.name]
    assert len(folders) == 1, folders
    return folders[0]


def _cut_rows(path: Path, rows: int = 10) -> None:
    np.save(path, np.load(path)[:rows])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAULTS = [  # (what, stage folder, file, damage)
    ("text features zeroed inside", "features-text", "vectors.npy", lambda p: _zero_inside(p, 400, 4000)),
    ("image features deleted", "features-image", "vectors.npy", lambda p: p.unlink()),
    ("structural meta.json garbage", "features-structural", "meta.json", lambda p: p.write_text("{oops")),
    ("fused embeddings zeroed", "fusion", "embeddings.npy", lambda p: _zero_inside(p, 300, 2000)),
    ("RQ-VAE codebooks truncated", "quantize", "codebooks.npy", _truncate),
    ("semantic IDs cut to 10 rows", "quantize", "semantic_ids.npy", _cut_rows),
    ("semantic IDs zeroed", "quantize", "semantic_ids.npy", lambda p: np.save(p, np.zeros_like(np.load(p)))),
    ("model weights deleted", "seqmodel", "model.safetensors", lambda p: p.unlink()),
    ("model weights truncated", "seqmodel", "model.safetensors", _truncate),
]


def test_fault_injection_through_the_whole_chain(tmp_path, capsys, monkeypatch):
    from qbert4rec_lib.semantic import encoders
    from qbert4rec_lib.experiments import train_model
    from qbert4rec_lib.data.synthetic_folder import load_default

    root = tmp_path / "cache"
    ds = load_default(root=root, seed=31, num_items=150, num_users=220)
    cfg = _chain_config()

    def run():
        return train_model("Q-Bert4Rec", ds, cfg, seed=0, cache_root=root, progress=False)

    clean = run()
    assert not clean.from_cache
    assert run().from_cache and run().test.metrics == clean.test.metrics  # an intact cache is a hit
    capsys.readouterr()
    for what, stage, name, damage in FAULTS:
        folder = _artifact(root, stage)
        damage(folder / name)
        again = run()
        err = capsys.readouterr().err
        assert f"{folder / name}" in err and "rebuilding" in err, (what, err)
        assert again.test.metrics == clean.test.metrics, what  # no wrong data flowed on
        assert again.valid.metrics == clean.valid.metrics, what
        assert _artifact(root, stage).joinpath(name).is_file(), what  # rebuilt in place

    # resume chunks: an interrupted text encoding leaves chunks; one of them is truncated before the rerun
    text_folder = _artifact(root, "features-text")
    text_before = np.load(text_folder / "vectors.npy")
    import shutil

    shutil.rmtree(text_folder)
    real, calls = encoders.TextEncoder.encode_batch, {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # 2 chunks of 32 texts (2 batches each) are saved, then the run stops
            raise KeyboardInterrupt("simulated interruption")
        return real(self, batch)

    monkeypatch.setattr(encoders.TextEncoder, "encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(encoders.TextEncoder, "encode_batch", real)
    chunks = sorted((root / "features-text").glob("*.partial/text-*.npy"))
    assert len(chunks) == 2
    _truncate(chunks[0])
    again = run()
    err = capsys.readouterr().err
    assert f"{chunks[0]}: bad resume chunk" in err
    np.testing.assert_array_equal(np.load(_artifact(root, "features-text") / "vectors.npy"), text_before)
    assert again.test.metrics == clean.test.metrics and again.from_cache  # same features -> same model key: a hit

    # a cached file that cannot be used as it is (weights that do not fit the model) fails naming the file
    from safetensors.torch import save_file
    import torch

    weights_file = _artifact(root, "seqmodel") / "model.safetensors"
    meta = json.loads((weights_file.parent / "meta.json").read_text())
    save_file({"unexpected": torch.zeros(2)}, str(weights_file))
    from qbert4rec_lib.cache import _file_record

    meta["integrity"]["files"]["model.safetensors"] = _file_record(weights_file)  # consistent record, wrong weights
    (weights_file.parent / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=f"{weights_file}: does not fit Q-Bert4Rec"):
        run()


def test_exported_semantic_id_table_errors_name_the_file(tmp_path):
    from qbert4rec_lib.semantic.quantize import SemanticIDTable

    SemanticIDTable(np.arange(12, dtype=np.int64).reshape(4, 3) % 3, (3, 3, 3)).save(tmp_path)
    assert SemanticIDTable.load(tmp_path).ids.shape == (4, 3)
    npy = tmp_path / "semantic_ids.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{npy}: cannot read"):
        SemanticIDTable.load(tmp_path)
