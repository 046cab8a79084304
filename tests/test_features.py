"""Item features: text template + encoder, catalog CLIP, structural PPMI-SVD, cache and resume."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qbert4rec_lib.semantic import clip, encoders, features as F, similarity
from qbert4rec_lib.data.dataset import Dataset, ItemTable, Modalities
from qbert4rec_lib.semantic.features import FeatureConfig, build_features

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (235, 210, 30)}
SHAPES = ("circle", "square", "triangle")


def _render(path, colour, shape):
    im = Image.new("RGB", (48, 48), (235, 235, 235))
    draw = ImageDraw.Draw(im)
    box = (8, 8, 40, 40)
    {"circle": lambda: draw.ellipse(box, fill=colour), "square": lambda: draw.rectangle(box, fill=colour),
     "triangle": lambda: draw.polygon([(24, 6), (42, 42), (6, 42)], fill=colour)}[shape]()
    im.save(path)


def tiny_dataset(tmp_path, *, with_images=True, n_users=60) -> Dataset:
    """24 items (4 colours x 3 shapes x 2 brands) with rendered PNGs; item 24 has no image, item 23 no title."""
    rng = np.random.default_rng(0)
    rows = [(c, s, b) for c in COLOURS for s in SHAPES for b in ("Acme", "Zento")]
    titles, images = [], []
    for k, (c, s, b) in enumerate(rows):
        titles.append(f"{b} {c} {s} &amp; friends")
        path = tmp_path / f"item{k + 1}.png"
        _render(path, COLOURS[c], s)
        images.append(str(path) if with_images else "")
    titles[22] = ""
    if with_images:
        images[23] = ""
    items = ItemTable(
        raw_ids=[f"I{k + 1}" for k in range(len(rows))], titles=titles,
        categories=[("Shapes", s.title()) for _, s, _ in rows], brands=[b for _, _, b in rows],
        prices=np.full(len(rows), np.nan), descriptions=["<b>Bold</b> toy." if k % 2 else "" for k in range(len(rows))],
        images=images,
    )
    # users stay within one colour (so structure follows colour); item 22 only ever appears last (test target)
    seqs = []
    for _ in range(n_users):
        colour = rng.integers(0, len(COLOURS))
        pool = [k + 1 for k, r in enumerate(rows) if r[0] == list(COLOURS)[colour] and k + 1 != 22]
        seq = list(rng.choice(pool, size=min(len(pool), rng.integers(4, 7)), replace=False))
        seqs.append(np.array(seq + ([22] if _ % 5 == 0 else []), dtype=np.int64))
    return Dataset("tiny", items, [f"u{i}" for i in range(n_users)], seqs,
                   Modalities(text=True, image=with_images, image_source="files" if with_images else None))


@pytest.fixture(scope="module")
def encoder():
    return encoders.TextEncoder(max_tokens=32)


# ---- text -----------------------------------------------------------------------------------
def test_item_text_template():
    assert encoders.item_text("Rose &amp; Oud <i>Mist</i>", "Acme", ("Beauty", "Fragrance"), "  Soft\n scent. ") == \
        "Rose & Oud Mist; brand: Acme; category: Beauty > Fragrance; Soft scent."
    assert encoders.item_text("", "Acme", ("Beauty",), "") == "brand: Acme; category: Beauty"  # no title: the rest stays
    assert encoders.item_text("", "", (), "") == ""


def test_text_encoder_vectors(encoder):
    texts = ["red lipstick", "a long text " * 40, "crimson lip colour", "stainless steel frying pan", "red lipstick"]
    vecs = encoder.encode(texts, batch_size=2, progress=False)
    assert vecs.shape == (5, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[4], atol=1e-5)  # order restored after length sorting
    np.testing.assert_allclose(vecs[3], encoder.encode_batch([texts[3]])[0], atol=1e-4)  # padding does not leak
    assert vecs[0] @ vecs[2] > vecs[0] @ vecs[3]  # meaning: lipstick ~ lip colour, not frying pan
    assert encoder.token_lengths(texts).max() == 32  # truncated by the tokenizer


def test_text_resume_after_interruption(encoder, tmp_path, monkeypatch):
    texts = [f"item number {i} with {'words ' * (i % 7)}" for i in range(40)]
    full = encoder.encode(texts, batch_size=4, progress=False)
    calls = {"n": 0}
    real = encoders.TextEncoder.encode_batch

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real(self, batch)

    monkeypatch.setattr(encoders.TextEncoder, "encode_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode(texts, batch_size=4, progress=False, resume_dir=tmp_path, chunk_size=8)
    assert len(list(tmp_path.glob("text-*.npy"))) == 2  # two chunks of 8 (= 2 batches each) were saved
    calls["n"] = -100  # no more interruptions
    resumed = encoder.encode(texts, batch_size=4, progress=False, resume_dir=tmp_path, chunk_size=8)
    assert calls["n"] == -100 + 6  # only the 3 missing chunks (6 batches) were encoded
    np.testing.assert_allclose(resumed, full, atol=1e-5)


# ---- build_features on a tiny catalog ----------------------------------------------------------
SMALL_FIT = dict(image_fit_epochs=3, image_fit_batch=16, image_fit_size=32, image_fit_patch=8)


def test_build_features_tiny_and_cache(tmp_path, encoder, monkeypatch):
    ds = tiny_dataset(tmp_path)
    cfg = FeatureConfig(text_max_tokens=32, structural_dim=8, **SMALL_FIT)
    fs = build_features(ds, cfg, cache_root=tmp_path / "cache", progress=False)
    assert set(fs.modalities) == {"text", "image", "structural"} and fs.absent == {}
    assert fs.dims() == {"text": 384, "image": 64, "structural": 8}
    text, image, struct = fs.modalities["text"], fs.modalities["image"], fs.modalities["structural"]
    assert text.vectors.shape == (24, 1, 384) and text.present.all()  # item 23 has no title, but brand + category
    assert image.vectors.shape == (24, 1, 64) and image.present.sum() == 23 and not image.present[23]
    assert not image.vectors[23].any()
    assert image.meta["source"].startswith("fitted on this catalog") and len(image.meta["fit_epoch_losses"]) == 3
    assert np.isfinite(image.meta["fit_final_loss"]) and image.meta["fit"]["params"] > 0
    assert text.meta["cache"] == "miss" and text.meta["dataset_fingerprint"] == ds.fingerprint()
    assert {"numpy", "torch", "transformers"} <= set(text.meta["versions"])
    # structural: from the training split only -> item 22 (only ever a test target) is absent
    assert not struct.present[21] and struct.present.sum() == 23
    # second call: every modality is a cache hit, no encoder is even built
    monkeypatch.setattr(F, "TextEncoder", None)
    monkeypatch.setattr(F, "fit_catalog_clip", None)
    again = build_features(ds, cfg, cache_root=tmp_path / "cache", progress=False)
    for name, mod in again.modalities.items():
        assert mod.meta["cache"] == "hit"
        np.testing.assert_array_equal(mod.vectors, fs.modalities[name].vectors)
        np.testing.assert_array_equal(mod.present, fs.modalities[name].present)
    assert (tmp_path / "cache" / "features-text").is_dir()


def test_text_fields_mode(tmp_path, encoder):
    ds = tiny_dataset(tmp_path, with_images=False)
    fs = build_features(ds, FeatureConfig(modalities=("text",), text_fields="fields", text_max_tokens=32),
                        cache_root=tmp_path / "cache", progress=False)
    vecs = fs.modalities["text"].vectors
    assert vecs.shape == (24, 4, 384) and fs.modalities["text"].meta["rows"] == list(encoders.TEXT_FIELDS)
    joint = build_features(ds, FeatureConfig(modalities=("text",), text_max_tokens=32),
                           cache_root=tmp_path / "cache", progress=False).modalities["text"].vectors[:, 0]
    np.testing.assert_allclose(vecs[0, 3], joint[0], atol=1e-5)  # item 1 has no description -> joint copy
    np.testing.assert_allclose(vecs[22, 0], joint[22], atol=1e-5)  # item 23 has no title -> joint copy
    assert not np.allclose(vecs[1, 3], joint[1], atol=1e-3)  # item 2 has a description of its own
    assert fs.absent == {"image": "not requested (FeatureConfig.modalities)",
                         "structural": "not requested (FeatureConfig.modalities)"}


def test_build_text_resumes_through_cache(tmp_path, monkeypatch):
    ds = tiny_dataset(tmp_path, with_images=False)
    cfg = FeatureConfig(modalities=("text",), text_max_tokens=32, text_chunk_size=4, batch_size=2)
    calls = {"n": 0}
    real = encoders.TextEncoder.encode_batch

    def counting(self, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated interruption")
        return real(self, batch)

    monkeypatch.setattr(encoders.TextEncoder, "encode_batch", counting)
    with pytest.raises(KeyboardInterrupt):
        build_features(ds, cfg, cache_root=tmp_path / "cache", progress=False)
    partial = list((tmp_path / "cache" / "features-text").glob("*.partial"))
    assert len(partial) == 1 and len(list(partial[0].glob("*.npy"))) == 3
    calls["n"] = 100
    fs = build_features(ds, cfg, cache_root=tmp_path / "cache", progress=False)
    assert calls["n"] == 100 + 12 - 6  # 24 texts = 12 batches, 6 were already saved
    assert fs.modalities["text"].meta["cache"] == "miss"
    assert not list((tmp_path / "cache" / "features-text").glob("*.partial"))  # cleaned after the final write
    fresh = build_features(ds, FeatureConfig(modalities=("text",), text_max_tokens=32),
                           cache_root=tmp_path / "cache2", progress=False)
    np.testing.assert_allclose(fs.modalities["text"].vectors, fresh.modalities["text"].vectors, atol=1e-5)


def test_image_absent_and_no_silent_random_weights(tmp_path):
    ds = tiny_dataset(tmp_path, with_images=False)
    fs = build_features(ds, FeatureConfig(modalities=("image",)), cache_root=tmp_path / "cache", progress=False)
    assert fs.modalities == {} and "no images" in fs.absent["image"]
    with_images = tiny_dataset(tmp_path)
    for bad in (FeatureConfig(modalities=("image",), image_fit_epochs=0),
                FeatureConfig(modalities=("image",), image_model="ViT-B-32")):
        with pytest.raises(ValueError, match="random weights"):
            build_features(with_images, bad, cache_root=tmp_path / "cache", progress=False)
    with pytest.raises(FileNotFoundError):
        encoders.ImageEncoder.from_open_clip("ViT-B-32", str(tmp_path / "missing.safetensors"))


def test_image_encoder_from_local_weights(tmp_path):
    """A user's local open_clip folder (config + safetensors) loads for real: same vectors as the saved model."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    ds = tiny_dataset(tmp_path)
    torch.manual_seed(1)
    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                 "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
    saved = open_clip.CLIP(**model_cfg).eval()  # stands in for a user's downloaded checkpoint
    folder = tmp_path / "my_clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    cfg = FeatureConfig(modalities=("image",), image_model=f"local-dir:{folder}")
    fs = build_features(ds, cfg, cache_root=tmp_path / "cache", progress=False)
    vecs = fs.modalities["image"].vectors[:, 0]
    preprocess = open_clip.image_transform(32, is_train=False)
    with torch.inference_mode():
        ref = saved.encode_image(preprocess(Image.open(ds.items.images[0]).convert("RGB"))[None], normalize=True)
    assert vecs.shape == (24, 16)
    np.testing.assert_allclose(vecs[0], ref[0].numpy(), atol=1e-4)
    assert fs.modalities["image"].meta["source"].startswith("open_clip local-dir:")


# ---- structural ---------------------------------------------------------------------------
def test_structural_train_only_and_signal():
    train = [np.array([1, 2, 3, 1]), np.array([2, 3]), np.array([4, 5, 6]), np.array([5, 6, 4]), np.array([7])]
    res = encoders.structural_features(train, num_items=8, dim=4, window=2, seed=0)
    assert res.vectors.shape == (8, 4) and res.present.tolist() == [True] * 6 + [False, False]
    np.testing.assert_allclose(np.linalg.norm(res.vectors[res.present], axis=1), 1.0, atol=1e-5)
    assert not res.vectors[~res.present].any()
    sims = res.vectors @ res.vectors.T
    assert sims[0, 1] > sims[0, 4] and sims[3, 4] > sims[3, 1]  # same-cluster items nearer
    again = encoders.structural_features(train, num_items=8, dim=4, window=2, seed=0)
    np.testing.assert_array_equal(res.vectors, again.vectors)  # deterministic
    with pytest.raises(ValueError, match="outside"):
        encoders.structural_features([np.array([1, 9])], num_items=8)


def test_neighbour_helpers(tmp_path):
    ds = tiny_dataset(tmp_path, with_images=False)
    fs = build_features(ds, FeatureConfig(modalities=("structural",), structural_dim=8),
                        cache_root=tmp_path / "cache", progress=False)
    struct = fs.modalities["structural"]
    colour = np.array([k // 6 for k in range(24)])  # rows are grouped by colour
    assert similarity.neighbour_purity(struct, colour, k=3) > 0.8  # users stay within one colour
    near = similarity.nearest_items(struct, 1, k=4)
    assert len(near) == 4 and all(1 <= i <= 24 and i != 1 for i, _ in near)
    assert similarity.nearest_items(struct, 22) == []  # absent item


# ---- the embedded default and real Beauty ------------------------------------------------------
@pytest.fixture(scope="module")
def default_features(tmp_path_factory):
    pytest.importorskip("qbert4rec_lib.data.synthetic")
    from qbert4rec_lib import open_dataset

    ds = open_dataset("default")
    fs = build_features(ds, FeatureConfig(), progress=False)  # the session cache: notebook 02 needs the same
    return ds, fs


def test_default_catalog_all_modalities(default_features):
    ds, fs = default_features
    assert set(fs.modalities) == {"text", "image", "structural"}
    n = ds.num_items
    assert fs.modalities["text"].vectors.shape == (n, 1, 384) and fs.modalities["image"].vectors.shape == (n, 1, 64)
    assert fs.modalities["image"].present.all() and fs.modalities["structural"].present.mean() > 0.95
    # image features carry colour: same-colour items are nearer than different-colour items on average
    vecs, colour = F.pooled(fs.modalities["image"]), ds.ground_truth["colour"]
    sims, same = vecs @ vecs.T, colour[:, None] == colour[None, :]
    np.fill_diagonal(same, False)
    diff = colour[:, None] != colour[None, :]
    assert sims[same].mean() > sims[diff].mean() + 0.2
    assert similarity.neighbour_purity(fs.modalities["image"], colour, k=10) > 0.95  # chance is ~0.1
    meta = fs.modalities["image"].meta
    assert meta["fit_epoch_losses"][-1] < meta["fit_epoch_losses"][0] - 1.0
    # the fit learned something: the brand family's pattern is clearer than in the untrained tower
    import open_clip

    untrained = encoders.ImageEncoder(clip.catalog_clip(meta["fit"], seed=meta["fit"]["seed"]),
                               open_clip.image_transform(meta["fit"]["vision"]["image_size"], is_train=False))
    paths = encoders.image_paths(ds)
    before = F.ModalityFeatures("image", untrained.encode(paths, progress=False)[:, None], np.ones(n, bool), {})
    family = ds.ground_truth["brand_family"]
    assert similarity.neighbour_purity(fs.modalities["image"], family) > similarity.neighbour_purity(before, family) + 0.1
    # text knows the category, structure knows what is bought together
    tops = ds.ground_truth["top_category"]
    assert similarity.neighbour_purity(fs.modalities["text"], tops, k=10) > 0.6
    assert similarity.neighbour_purity(fs.modalities["structural"], tops, k=10) > 0.4


@pytest.fixture(scope="module")
def beauty(beauty_path):
    loaders = pytest.importorskip("qbert4rec_lib.data.loaders")
    return loaders.load_dataset(beauty_path)


def test_beauty_structural_and_image_absent(beauty, tmp_path):
    fs = build_features(beauty, FeatureConfig(modalities=("image", "structural")), cache_root=tmp_path, progress=False)
    assert "image" not in fs.modalities and "no images" in fs.absent["image"]
    struct = fs.modalities["structural"]
    assert struct.vectors.shape == (12101, 1, 64) and struct.present.mean() > 0.9
    train_items = np.unique(np.concatenate(beauty.split(max_len=0).train))
    assert not struct.present[np.setdiff1d(np.arange(1, 12102), train_items) - 1].any()  # unseen in train -> absent
    cats = beauty.items.top_categories()
    assert similarity.neighbour_purity(struct, cats, k=10, max_items=500) > 0.3
    again = build_features(beauty, FeatureConfig(modalities=("structural",)), cache_root=tmp_path, progress=False)
    assert again.modalities["structural"].meta["cache"] == "hit"


def test_beauty_text_subset(beauty, encoder):
    texts = encoders.item_texts(beauty.items)
    assert len(texts) == 12101 and all(texts)  # every item has at least its category path
    assert not any("&amp;" in t or "&#39;" in t for t in texts)
    sample = np.random.default_rng(0).choice(len(texts), 120, replace=False)
    vecs = encoder.encode([texts[i] for i in sample], progress=False)
    assert vecs.shape == (120, 384) and np.isfinite(vecs).all()
    cats = np.array(beauty.items.top_categories())[sample]
    sims = vecs @ vecs.T
    same = cats[:, None] == cats[None, :]
    np.fill_diagonal(same, False)
    assert sims[same].mean() > sims[cats[:, None] != cats[None, :]].mean()


_STRUCTURAL_SCRIPT = """
import sys, numpy as np
from qbert4rec_lib.semantic.encoders import structural_features
rng = np.random.default_rng(0)
train = [rng.zipf(1.3, size=rng.integers(3, 30)) % 1200 + 1 for _ in range(4000)]  # skewed, like real sequences
np.save(sys.argv[1], structural_features(train, num_items=1200, dim=64, seed=0).vectors)
"""


def test_structural_same_whatever_the_blas_threads(tmp_path):
    """The structural vectors (and so the semantic IDs) must not depend on how the building process set up BLAS:
    in float32 a process started with OPENBLAS_NUM_THREADS=1 got vectors ~1e-4 away from one with 2 threads."""
    import os
    import subprocess
    import sys

    out = {}
    for n in ("1", "2"):
        env = os.environ | {"OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}
        subprocess.run([sys.executable, "-c", _STRUCTURAL_SCRIPT, str(tmp_path / f"v{n}.npy")], env=env, check=True)
        out[n] = np.load(tmp_path / f"v{n}.npy")
    np.testing.assert_array_equal(out["1"], out["2"])


def test_image_fit_runs_on_its_own_thread_count(tmp_path, monkeypatch):
    """The catalog-CLIP fit's floats depend on torch's thread count (1 vs 2 threads moved the default catalog's image
    features by up to 0.13), so the fit and its encoding run under ``image_fit_threads`` whatever the caller set."""
    import torch

    seen = []
    real_fit = F.fit_catalog_clip

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(F, "fit_catalog_clip", spy)
    ds = tiny_dataset(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fs = build_features(ds, FeatureConfig(modalities=("image",), **SMALL_FIT), cache_root=tmp_path / "c1",
                            progress=False)
        assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and fs.modalities["image"].meta["fit_threads"] == 1
    other = FeatureConfig(modalities=("image",), image_fit_threads=2, **SMALL_FIT)
    assert F._key_fields(other, "image_", "seed") != F._key_fields(FeatureConfig(**SMALL_FIT), "image_", "seed")
