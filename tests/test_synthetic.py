"""The embedded default dataset: deterministic, 5-core, real PNGs that follow the attributes, learnable order."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qbert4rec_lib.data import synthetic as S
from qbert4rec_lib.data import synthetic_folder as SF
from qbert4rec_lib.data import synthetic_images as SI
from qbert4rec_lib.data.dataset import kcore_mask
from qbert4rec_lib.data.loaders import load_dataset, read_ground_truth
from qbert4rec_lib.data.synthetic import SyntheticConfig

SMALL = SyntheticConfig(num_items=300, num_users=500)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic_cache")


@pytest.fixture(scope="module")
def default(cache_root):
    """The default-size catalog written where load_default keeps it, and its Dataset read from that folder."""
    cfg = SyntheticConfig()
    folder = SF.generate_catalog(cfg, SF.default_folder(cfg, cache_root))
    return folder, load_dataset(folder)


# ---- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_folders_and_other_seed_differs(tmp_path):
    a = SF.generate_catalog(SMALL, tmp_path / "a")
    S.generate.cache_clear()  # regenerate from scratch, not from the in-memory cache
    b = SF.generate_catalog(SMALL, tmp_path / "b")
    c = SF.generate_catalog(SyntheticConfig(num_items=300, num_users=500, seed=1), tmp_path / "c")
    assert SF.folder_fingerprint(a) == SF.folder_fingerprint(b)
    assert SF.folder_fingerprint(a) != SF.folder_fingerprint(c)
    assert load_dataset(a).fingerprint() == load_dataset(a).fingerprint()
    assert (a / "user_sequence.txt").read_bytes() != (c / "user_sequence.txt").read_bytes()


def test_fingerprint_does_not_depend_on_where_the_folder_lies(tmp_path):
    import shutil

    a = SF.generate_catalog(SMALL, tmp_path / "home1" / "cache" / "cat")
    moved = tmp_path / "home2" / "elsewhere" / "cat"
    shutil.copytree(a, moved)
    renamed = tmp_path / "home2" / "other"
    shutil.copytree(a, renamed)
    ds_a, ds_moved = load_dataset(a), load_dataset(moved)
    assert ds_a.items.images[0] != ds_moved.items.images[0]  # absolute paths differ ...
    assert ds_a.fingerprint() == ds_moved.fingerprint()  # ... the key does not: records match on every machine
    assert load_dataset(renamed).fingerprint() != ds_a.fingerprint()  # the folder's name (the generator key) counts


def test_rewrite_replaces_own_folder_but_refuses_a_foreign_one(tmp_path):
    out = SF.generate_catalog(SMALL, tmp_path / "data")
    before = SF.folder_fingerprint(out)
    assert SF.generate_catalog(SMALL, out) == out and SF.folder_fingerprint(out) == before
    stamp = (out / "config.json").stat().st_mtime_ns
    SF.generate_catalog(SMALL, out, replace=False)  # a concurrent writer's folder is kept as is
    assert (out / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp folders left behind"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="foreign"):
        SF.generate_catalog(SMALL, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_top_categories"):
        SyntheticConfig(num_top_categories=9)
    with pytest.raises(ValueError, match="complement_prob"):
        SyntheticConfig(complement_prob=0.9, same_brand_prob=0.3)


# ---- counts and the 5-core property -----------------------------------------------------------
def test_default_counts_and_five_core(default):
    folder, ds = default
    assert 2000 <= ds.num_users <= 2500
    assert 1150 <= ds.num_items <= 1500
    assert 15_000 <= ds.num_interactions <= 30_000
    lengths = ds.sequence_lengths()
    assert lengths.min() >= 5 and lengths.max() > 30  # long tail
    counts = ds.item_counts()[1:]
    assert counts.min() >= 5 and counts.max() > 10 * np.median(counts)  # popularity skew
    assert all(len(set(s.tolist())) == len(s) for s in ds.sequences)  # no repeats within a user
    first_seen = list(dict.fromkeys(int(i) for s in ds.sequences for i in s))
    assert first_seen == list(range(1, ds.num_items + 1))  # ids by first appearance
    meta = json.loads((folder / "config.json").read_text())
    assert meta["counts"]["users"] == ds.num_users and meta["counts"]["items"] == ds.num_items
    assert meta["counts"]["interactions"] == ds.num_interactions
    assert ds.modalities.as_dict() == {"text": True, "image": True, "image_source": "files"}
    split = ds.split(max_len=50)
    assert split.num_users == ds.num_users


def test_k_core_filter_is_a_fixed_point():
    """The one k-core (data.kcore_mask), which the generator and the loaders both apply."""
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, 61)
    seqs = [rng.choice(60, size=rng.integers(3, 12), replace=False, p=popularity / popularity.sum()) for _ in range(80)]
    user_of, item_of = np.repeat(np.arange(80), [len(s) for s in seqs]), np.concatenate(seqs)
    mask = kcore_mask(user_of, item_of, 5)
    users, keep = np.unique(user_of[mask]).tolist(), np.bincount(item_of[mask], minlength=60) > 0
    assert 0 < len(users) < 80 and 0 < keep.sum() < 60  # both users and items were dropped
    kept = [s[keep[s]] for s in (seqs[u] for u in users)]
    assert sum(map(len, kept)) == mask.sum()  # the core is induced: kept users keep every kept item they had
    assert all(len(s) >= 5 for s in kept)
    counts = np.bincount(np.concatenate(kept), minlength=60)
    assert counts[keep].min() >= 5 and counts[~keep].sum() == 0
    dropped = [u for u in range(80) if u not in users]
    assert all(len(seqs[u][keep[seqs[u]]]) < 5 for u in dropped)  # nobody dropped who still qualifies


# ---- files ------------------------------------------------------------------------------------
def test_folder_layout_and_catalog_format(default):
    folder, ds = default
    assert {p.name for p in folder.iterdir()} == {"user_sequence.txt", "catalog.item", "ground_truth.tsv", "ground_truth_labels.json", "images", "README.md", "config.json"}
    lines = (folder / "catalog.item").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "item_id:token\ttitle:token\tcategories:token_seq\tprice:float\tbrand:token\tdescription:token\timage:token"
    assert len(lines) == ds.num_items + 1
    for line in lines[1:]:
        rid, title, cats, price, brand, desc, image = line.split("\t")  # exactly 7 fields
        assert rid.startswith("I") and len(rid) == 6 and title and desc and brand
        assert cats.count("'") == 4 and ", " in cats
        assert float(price) > 0 and image == f"images/{rid}.png"
    users = (folder / "user_sequence.txt").read_text().splitlines()
    assert len(users) == ds.num_users and users[0].split()[0] == ds.user_ids[0]
    assert [ds.items.raw_ids[i - 1] for i in ds.sequences[0]] == users[0].split()[1:]


def test_every_item_has_a_real_png_of_the_right_size(default):
    folder, ds = default
    digests = set()
    for path in ds.items.images:
        assert Path(path).is_absolute() and Path(path).parent == folder / "images"
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"
        digests.add(Path(path).read_bytes())
    assert len(digests) == ds.num_items  # jitter: no two images are identical copies


def test_image_colour_follows_the_colour_attribute(default):
    _, ds = default
    labels = ds.ground_truth_labels["colour"]
    colour = np.array([labels[c] for c in ds.ground_truth["colour"]])

    def mean_rgb(name):
        paths = [ds.items.images[k] for k in np.flatnonzero(colour == name)[:40]]
        return np.mean([np.asarray(Image.open(p), dtype=np.float64)[16:48, 16:48].mean((0, 1)) for p in paths], 0)

    red, blue = mean_rgb("Red"), mean_rgb("Blue")
    assert red[0] - red[2] > 40 and blue[2] - blue[0] > 40
    assert np.linalg.norm(red - blue) > 60


def test_image_shape_follows_subcategory_and_pattern_follows_brand_family():
    rng = lambda: np.random.default_rng(3)  # noqa: E731 - identical jitter for both renders
    red = S.COLOURS["Red"][0]
    circle, bar = (SI.render_item_image(s, red, "plain", 64, rng()) for s in ("circle", "bar_tall"))
    plain, striped = (SI.render_item_image("square", red, p, 64, rng()) for p in ("plain", "stripes"))
    is_red = lambda im: (im[..., 0] > 150) & (im[..., 1] < 120)  # noqa: E731
    assert abs(int(is_red(circle).sum()) - int(is_red(bar).sum())) > 150  # different silhouettes
    assert is_red(plain).sum() > is_red(striped).sum() + 200  # stripes replace part of the fill


# ---- text and ground truth --------------------------------------------------------------------
def test_titles_mention_brand_and_a_product_noun_of_the_subcategory(default):
    _, ds = default
    gt, labels = ds.ground_truth, ds.ground_truth_labels
    for k, title in enumerate(ds.items.titles):
        sub = labels["subcategory"][gt["subcategory"][k]]
        nouns = S._subcategory_spec(sub)[2]
        assert ds.items.brands[k] in title
        assert any(n in title for n in nouns), (title, sub)
        assert ds.items.categories[k] == (labels["top_category"][gt["top_category"][k]], sub)
        assert "\t" not in title + ds.items.descriptions[k] and "\n" not in title + ds.items.descriptions[k]
    assert len(set(ds.items.titles)) > 0.8 * ds.num_items  # variety, not one title per subcategory
    verbatim = np.mean([ds.items.categories[k][1].lower() in t.lower() for k, t in enumerate(ds.items.descriptions)])
    assert verbatim < 0.5  # descriptions are not just the label


def test_ground_truth_shapes_and_consistency(default):
    folder, ds = default
    gt, labels = ds.ground_truth, ds.ground_truth_labels
    assert set(gt) == set(S.GROUND_TRUTH_ATTRIBUTES) == set(labels)
    for attr, codes in gt.items():
        assert codes.shape == (ds.num_items,) and codes.dtype == np.int64
        assert codes.min() >= 0 and codes.max() < len(labels[attr])
    assert len(labels["top_category"]) == 6 and len(labels["subcategory"]) == 24
    brand_family = {}
    for b, f in zip(gt["brand"], gt["brand_family"]):
        assert brand_family.setdefault(int(b), int(f)) == int(f)  # a brand has one family
    for b in np.unique(gt["brand"]):
        assert len(np.unique(gt["top_category"][gt["brand"] == b])) <= 2  # a brand sells in 1-2 categories
    rows = (folder / "ground_truth.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["item_id", *S.GROUND_TRUTH_ATTRIBUTES] and len(rows) == ds.num_items + 1
    codes, file_labels = read_ground_truth(folder / "ground_truth.tsv", ds.items.raw_ids)
    for attr in S.GROUND_TRUTH_ATTRIBUTES:
        assert [file_labels[attr][c] for c in codes[attr]] == [labels[attr][c] for c in gt[attr]]


def test_ground_truth_labels_have_one_order_on_every_path(default, cache_root):
    """Codes number each attribute's names in the generator's order (category tree, colours, price bands, brand
    families as declared; brands as generated), not sorted: in memory, on disk and through the folder loader."""
    folder, ds = default
    cat = S.generate(SyntheticConfig())
    loaded = SF.load_default(root=cache_root)
    codes, file_labels = read_ground_truth(folder / "ground_truth.tsv", ds.items.raw_ids)
    on_disk = json.loads((folder / "ground_truth_labels.json").read_text(encoding="utf-8"))
    generator = {a: list(cat.labels[a]) for a in S.GROUND_TRUTH_ATTRIBUTES}
    assert generator["top_category"] == list(S.CATEGORY_TREE)[:6] and generator["price_band"] == list(S.PRICE_BANDS)
    assert generator["colour"] == list(S.COLOURS)[: len(generator["colour"])] != sorted(generator["colour"])
    assert generator["brand_family"] == list(S.BRAND_FAMILIES) != sorted(generator["brand_family"])
    for labels in (ds.ground_truth_labels, loaded.ground_truth_labels, file_labels, on_disk):
        assert {a: list(labels[a]) for a in S.GROUND_TRUTH_ATTRIBUTES} == generator
    for attr in S.GROUND_TRUTH_ATTRIBUTES:  # hence the same codes too, aligned with item ids
        assert np.array_equal(ds.ground_truth[attr], loaded.ground_truth[attr])
        assert np.array_equal(ds.ground_truth[attr], codes[attr])


# ---- the sequential signal is learnable -------------------------------------------------------
def _hit_rates_on_last_item(ds, k: int = 10) -> tuple[float, float]:
    """HR@k of popularity vs a first-order subcategory-transition heuristic (history items excluded)."""
    sub = ds.ground_truth["subcategory"]  # [N] code per item id - 1
    n_sub = len(ds.ground_truth_labels["subcategory"])
    counts = np.zeros(ds.num_items + 1)
    transitions = np.ones((n_sub, n_sub))  # add-one smoothing
    for s in ds.sequences:
        history = s[:-1]
        np.add.at(counts, history, 1)
        np.add.at(transitions, (sub[history[:-1] - 1], sub[history[1:] - 1]), 1)
    next_sub = transitions / transitions.sum(1, keepdims=True)
    share_in_sub = (counts[1:] + 1) / (np.bincount(sub, weights=counts[1:], minlength=n_sub)[sub] + 1)
    pop_hits = heur_hits = 0
    for s in ds.sequences:
        history, target = s[:-1], s[-1]
        pop = counts.copy()
        heur = np.r_[0.0, next_sub[sub[history[-1] - 1], sub] * share_in_sub]
        for scores in (pop, heur):
            scores[0], scores[history] = -np.inf, -np.inf
        pop_hits += target in np.argpartition(-pop, k)[:k]
        heur_hits += target in np.argpartition(-heur, k)[:k]
    return pop_hits / ds.num_users, heur_hits / ds.num_users


def test_next_subcategory_heuristic_clearly_beats_popularity(default):
    _, ds = default
    pop_hr, heur_hr = _hit_rates_on_last_item(ds)
    assert pop_hr > 0.02  # popularity is a real signal too
    assert heur_hr > 1.5 * pop_hr, (pop_hr, heur_hr)


def test_without_sequential_structure_the_heuristic_gains_nothing(cache_root):
    cfg = SyntheticConfig(num_items=400, num_users=1500, complement_prob=0.0, same_brand_prob=0.0)
    pop_hr, heur_hr = _hit_rates_on_last_item(SF.load_default(cfg, root=cache_root))
    assert heur_hr < 1.25 * pop_hr, (pop_hr, heur_hr)


# ---- load_default and the folder loader agree -------------------------------------------------
def test_load_default_reuses_the_cache_and_accepts_overrides(default, cache_root):
    folder, ds = default
    stamp = (folder / "config.json").stat().st_mtime_ns
    loaded = SF.load_default(root=cache_root)
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert loaded.num_users == ds.num_users and loaded.num_items == ds.num_items
    small = SF.load_default(root=cache_root, num_items="300", num_users=500)
    assert SF.default_folder(SMALL, cache_root).is_dir() and small.num_items <= 300


def test_the_folder_holds_what_the_generator_made(default, cache_root):
    """The folder (read by the real-data loader: the only way a generated catalog becomes a Dataset) has the
    generator's counts, ids, texts and ground truth."""
    folder, ds = default
    cat = S.generate(SyntheticConfig())
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (cat.counts["users"], cat.counts["items"], cat.counts["interactions"])
    assert ds.user_ids == list(cat.user_ids) and sorted(ds.items.raw_ids) == sorted(cat.raw_ids)
    row = {r: k for k, r in enumerate(cat.raw_ids)}
    for i in (0, len(ds.items.raw_ids) // 2, len(ds.items.raw_ids) - 1):
        k = row[ds.items.raw_ids[i]]
        assert ds.items.brands[i] == cat.label("brand", k)
        for attr in S.GROUND_TRUTH_ATTRIBUTES:
            assert ds.ground_truth_labels[attr][ds.ground_truth[attr][i]] == cat.label(attr, k)
    assert any("5-core" in note for note in SF.load_default(root=cache_root).report.notes)
