"""The embedded default dataset: a small multimodal department-store catalog the kit generates itself.

A fresh machine has no Amazon data, yet every stage of Q-Bert4Rec needs items with *text* and
*images* (stage 1 fuses them), and user *sequences* with real order (stage 3 learns them). This
module builds exactly that, deterministically from one seed, with a known **ground truth** so
the notebooks can check what each stage recovered (do semantic-ID codes follow the category?
does the image tower see the colour?).

What is generated (all from a ``numpy`` Generator, so the same seed gives byte-identical files):

* a category tree (6 top categories x 4 subcategories, e.g. ``Kitchen > Cookware``), brands
  that each sell in 1-2 top categories and belong to a brand *family*, colours with RGB
  values, and four price bands;
* per item: a title and a short description written from the attributes by templates with
  some variety (synonyms, product nouns instead of category names), and a price;
* per item a PNG whose content follows the attributes: **shape <- subcategory**,
  **fill colour <- colour**, **pattern (plain / stripes / dots / checks) <- brand family**, with
  jitter in position, size, rotation and background noise;
* users with Dirichlet tastes over top categories, colours and price bands, Zipf-like item
  popularity, and sequential structure: after an item, the next one comes from its designated
  *complementary* subcategory with probability ``complement_prob`` (Cookware -> Utensils, ...)
  or from the same brand with probability ``same_brand_prob``. Sequence lengths are long-tailed
  (lognormal), items are not repeated within a user, and a 5-core filter (users and items) runs last.

Choices the paper leaves open (it evaluates on Amazon data only), all config knobs in
:class:`SyntheticConfig`: the catalog size, tree shape, strength of every signal and the image size.

The output folder (read by :func:`qbert4rec_lib.data.loaders.load_dataset`, the same code path as real data)::

    user_sequence.txt   USER_ID ITEM_ID ...   (one user a line, chronological)
    catalog.item        RecBole atomic TSV: item_id, title, categories, price, brand, description, image
    ground_truth.tsv    item_id, top_category, subcategory, brand, brand_family, colour, price_band
    ground_truth_labels.json  each attribute's names in code order (read by the loader)
    images/<item>.png   one rendered image per item
    config.json         the generator config, counts and the complement map
    README.md           the same in prose
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from ..cache import stage_dir
from ..config import override, to_dict
from .dataset import Dataset, ItemTable, LoadReport, Modalities, kcore_mask

__all__ = [
    "SyntheticConfig", "GeneratedCatalog", "CATEGORY_TREE", "COLOURS", "PRICE_BANDS", "BRAND_FAMILIES",
    "SHAPES", "GROUND_TRUTH_ATTRIBUTES", "generate", "render_item_image", "generate_catalog",
    "build_dataset", "load_default", "default_folder", "folder_fingerprint",
]

# The marker in a generated folder's config.json (and its notes): the module's name before the layout move, kept
# so folders generated earlier are still recognised (and replaced only when they are ours).
GENERATOR = "qbert4rec_lib.synthetic"
GENERATOR_VERSION = 2  # bump when the output changes for an unchanged config (keys the cache)
GROUND_TRUTH_ATTRIBUTES = ("top_category", "subcategory", "brand", "brand_family", "colour", "price_band")

# ---- vocabulary -----------------------------------------------------------------------------
# top category -> (feature phrases, [(subcategory, complementary subcategory, product nouns, uses)])
CATEGORY_TREE: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...]]] = {
    "Beauty": (("gentle on sensitive skin", "dermatologist tested", "paraben free", "long lasting"), (
        ("Skin Care", "Makeup", ("Face Cream", "Serum", "Cleanser", "Toner", "Night Cream"), ("a daily skincare routine", "dry or combination skin")),
        ("Makeup", "Fragrance", ("Lipstick", "Mascara", "Foundation", "Eyeliner", "Blush"), ("everyday looks", "evening glam")),
        ("Hair Care", "Skin Care", ("Shampoo", "Conditioner", "Hair Mask", "Hair Oil"), ("smooth shiny hair", "colour treated hair")),
        ("Fragrance", "Hair Care", ("Eau de Parfum", "Body Mist", "Cologne", "Perfume Oil"), ("a fresh all-day scent", "special occasions")))),
    "Kitchen": (("dishwasher safe", "easy to clean", "made from food-grade materials", "built for busy kitchens"), (
        ("Cookware", "Utensils", ("Frying Pan", "Saucepan", "Stock Pot", "Skillet", "Dutch Oven"), ("searing and sauteing", "slow cooking")),
        ("Utensils", "Storage", ("Spatula", "Whisk", "Ladle", "Tongs", "Peeler"), ("everyday cooking", "baking projects")),
        ("Tableware", "Cookware", ("Dinner Plate", "Bowl Set", "Mug", "Serving Platter"), ("family dinners", "entertaining guests")),
        ("Storage", "Tableware", ("Food Container", "Spice Jar", "Bread Box", "Canister"), ("meal prep", "an organised pantry")))),
    "Home": (("thoughtfully designed", "made to last", "easy to care for", "styled in a modern minimalist way"), (
        ("Bedding", "Decor", ("Duvet Cover", "Pillowcase", "Throw Blanket", "Sheet Set"), ("restful sleep", "cosy evenings")),
        ("Lighting", "Bath", ("Table Lamp", "Floor Lamp", "String Lights", "Desk Lamp"), ("reading corners", "ambient light")),
        ("Decor", "Lighting", ("Vase", "Picture Frame", "Candle Holder", "Wall Clock"), ("living rooms", "a thoughtful gift")),
        ("Bath", "Skin Care", ("Bath Towel", "Bath Mat", "Shower Curtain", "Soap Dispenser"), ("a spa-like bathroom", "guest bathrooms")))),
    "Sports": (("lightweight and durable", "built for daily training", "weather resistant", "suitable for all levels"), (
        ("Fitness", "Outdoor", ("Yoga Mat", "Dumbbell", "Resistance Band", "Kettlebell", "Jump Rope"), ("home workouts", "strength training")),
        ("Outdoor", "Cycling", ("Camping Tent", "Sleeping Bag", "Hiking Backpack", "Trekking Poles"), ("weekend hikes", "camping trips")),
        ("Cycling", "Team Sports", ("Bike Helmet", "Cycling Gloves", "Bike Light", "Saddle Bag"), ("the daily commute", "long rides")),
        ("Team Sports", "Fitness", ("Football", "Basketball", "Shin Guards", "Goalkeeper Gloves"), ("club training", "match day")))),
    "Toys": (("suitable for ages 3 and up", "designed for creative play", "made from non-toxic materials", "great for family game night"), (
        ("Building Sets", "Puzzles", ("Block Set", "Construction Kit", "Marble Run"), ("young engineers", "rainy afternoons")),
        ("Puzzles", "Arts and Crafts", ("Jigsaw Puzzle", "Brain Teaser", "Floor Puzzle"), ("quiet time", "puzzle lovers")),
        ("Plush", "Building Sets", ("Teddy Bear", "Plush Bunny", "Plush Dragon"), ("bedtime cuddles", "a first birthday")),
        ("Arts and Crafts", "Plush", ("Crayon Set", "Paint Kit", "Modeling Clay"), ("little artists", "school projects")))),
    "Electronics": (("compatible with most devices", "sleek and compact", "easy to set up", "backed by a two-year warranty"), (
        ("Audio", "Phone Accessories", ("Headphones", "Earbuds", "Bluetooth Speaker", "Soundbar"), ("music on the go", "home cinema")),
        ("Phone Accessories", "Computer Accessories", ("Phone Case", "Charging Cable", "Power Bank", "Screen Protector"), ("everyday carry", "travel")),
        ("Computer Accessories", "Smart Home", ("Wireless Mouse", "Keyboard", "Laptop Stand", "USB Hub"), ("the home office", "gaming setups")),
        ("Smart Home", "Lighting", ("Smart Plug", "Smart Bulb", "Doorbell Camera", "Thermostat"), ("a connected home", "energy saving")))),
}
# colour -> (RGB, words used in text)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "Red": ((200, 35, 40), ("red", "crimson", "scarlet", "cherry")),
    "Blue": ((35, 70, 190), ("blue", "cobalt", "sapphire", "navy")),
    "Yellow": ((240, 205, 30), ("yellow", "lemon", "mustard", "golden")),
    "Green": ((50, 150, 60), ("green", "emerald", "moss green", "forest green")),
    "Black": ((30, 30, 30), ("black", "charcoal", "jet black", "onyx")),
    "Pink": ((235, 120, 170), ("pink", "rose", "blush", "fuchsia")),
    "Orange": ((240, 130, 20), ("orange", "tangerine", "amber", "apricot")),
    "Purple": ((120, 50, 160), ("purple", "violet", "plum", "aubergine")),
    "Teal": ((20, 140, 140), ("teal", "turquoise", "aqua", "petrol")),
    "Brown": ((120, 75, 40), ("brown", "chocolate", "walnut", "mocha")),
}
# price band -> (low, high, phrases)
PRICE_BANDS: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "Budget": (3.0, 10.0, ("An affordable everyday pick", "Great value", "Budget-friendly")),
    "Mid-range": (10.0, 30.0, ("A solid mid-range choice", "Good quality at a fair price")),
    "Premium": (30.0, 80.0, ("Premium quality", "Made with premium materials")),
    "Luxury": (80.0, 250.0, ("A luxury piece", "Top-of-the-line craftsmanship")),
}
BRAND_FAMILIES = {"Classic": "plain", "Sport": "stripes", "Playful": "dots", "Heritage": "checks"}  # family -> image pattern
SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star5", "star4", "cross", "ring",
          "ellipse_wide", "ellipse_tall", "bar_wide", "bar_tall", "triangle_down", "trapezoid", "parallelogram",
          "half_disc", "arrow", "tee", "hourglass", "chevron", "sunburst", "ell")  # subcategory k of the full tree -> SHAPES[k]
_SERIES = ("Aura", "Pulse", "Nova", "Terra", "Luxe", "Prime", "Flow", "Core", "Zen", "Vita")
_ADJECTIVES = ("Classic", "Everyday", "Deluxe", "Essential", "Pro", "Signature", "Ultra", "Gentle", "Smart", "Pure")
_SIZES = ("Large", "Compact", "Set of 2", "Travel Size", "Family Size", "Mini")
_NAME_PARTS = (("Lu", "No", "Ve", "Au", "Ca", "Ze", "Ma", "Be", "So", "Ki", "Ori", "Va", "Te", "Ra", "Fi", "Ha", "Ela", "Qui", "Dra", "Mo"),
               ("m", "v", "r", "l", "n", "x", "st", "br", "d", "s"),
               ("era", "ique", "ora", "ella", "ix", "ara", "ino", "ova", "en", "is", "a", "o"))


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0  # master seed: every random draw derives from it
    num_items: int = 1500  # items generated before 5-core filtering
    num_users: int = 2400  # users simulated before 5-core filtering
    image_size: int = 64  # side of the rendered PNGs in pixels
    num_top_categories: int = 6  # top categories taken from CATEGORY_TREE (1..6)
    subcategories_per_category: int = 4  # subcategories per top category (1..4)
    num_brands: int = 36  # brands; each sells in 1-2 top categories
    second_category_prob: float = 0.4  # chance a brand also sells in a second top category
    num_colours: int = 10  # colours taken from COLOURS (2..10)
    popularity_exponent: float = 0.7  # Zipf exponent of item popularity over random ranks (0 = uniform)
    user_category_concentration: float = 0.4  # Dirichlet alpha of a user's top-category taste (small = focused)
    user_taste_concentration: float = 1.0  # Dirichlet alpha of a user's colour and price-band taste
    complement_prob: float = 0.35  # chance the next item is from the previous item's complementary subcategory
    same_brand_prob: float = 0.2  # chance the next item is another item of the previous item's brand
    min_sequence_length: int = 5  # shortest simulated sequence (before filtering)
    length_median_extra: float = 3.0  # median of the lognormal number of items beyond the minimum
    length_sigma: float = 1.0  # lognormal sigma of sequence lengths (larger = longer tail)
    max_sequence_length: int = 60  # longest simulated sequence
    core: int = 5  # k of the k-core filter applied to users and items
    id_driven: float = 0.0  # the dial: chance that the next item is one of the previous item's own follow-up items
    # (id_follow_ups random items per item, no attribute explains them) instead of the attribute-driven draw above;
    # 0 = content-driven world (the default catalog), 1 = every transition is item-specific
    id_follow_ups: int = 3  # follow-up items per item when id_driven > 0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.num_top_categories <= len(CATEGORY_TREE), f"num_top_categories must be 1..{len(CATEGORY_TREE)}"),
            (1 <= self.subcategories_per_category <= 4, "subcategories_per_category must be 1..4"),
            (2 <= self.num_colours <= len(COLOURS), f"num_colours must be 2..{len(COLOURS)}"),
            (self.num_brands >= self.num_top_categories, "num_brands must be >= num_top_categories"),
            (self.image_size >= 16, "image_size must be >= 16"),
            (0 <= self.complement_prob + self.same_brand_prob <= 1, "complement_prob + same_brand_prob must be in [0, 1]"),
            (1 <= self.min_sequence_length <= self.max_sequence_length, "need 1 <= min_sequence_length <= max_sequence_length"),
            (self.num_items >= 10 and self.num_users >= 10, "num_items and num_users must be >= 10"),
            (0 <= self.id_driven <= 1, "id_driven must be in [0, 1]"),
            (self.id_follow_ups >= 1, "id_follow_ups must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {msg} (got {self})")


@dataclass(frozen=True)
class GeneratedCatalog:
    """Everything the generator decided, in memory (items after 5-core, in raw-id order)."""

    raw_ids: list[str]  # "I00001"... in catalog order
    titles: list[str]
    descriptions: list[str]
    prices: np.ndarray  # float64 [N]
    attributes: dict[str, np.ndarray]  # GROUND_TRUTH_ATTRIBUTES -> int codes [N] into labels
    labels: dict[str, list[str]]  # attribute -> code -> name
    generator_index: np.ndarray  # int64 [N]: item index before filtering (seeds its image)
    user_ids: list[str]
    sequences: list[np.ndarray]  # rows into the item arrays above (0-based), chronological
    complements: dict[str, str]  # subcategory -> complementary subcategory
    counts: dict[str, int]  # before / after filtering

    def label(self, attr: str, row: int) -> str:
        """The name of item ``row``'s ground-truth ``attr`` (e.g. ``label("colour", 0) == "Red"``)."""
        return self.labels[attr][int(self.attributes[attr][row])]


# ---- catalog ----------------------------------------------------------------------------------
def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = "".join(str(rng.choice(part)) for part in _NAME_PARTS)
        if name not in names:
            names.append(name)
    return names


class Taxonomy(NamedTuple):
    tops: list[str]  # top categories in use
    subs: list[str]  # subcategories in use, grouped by top category
    sub_top: np.ndarray  # int [S]: top category of each subcategory
    shape_of: np.ndarray  # int [S]: index into SHAPES (position in the full tree)
    complements: dict[str, str]  # subcategory -> complementary subcategory


def _tree(cfg: SyntheticConfig) -> Taxonomy:
    tops = list(CATEGORY_TREE)[: cfg.num_top_categories]
    subs, sub_top, shape_of = [], [], []
    for t, top in enumerate(tops):
        for s, (name, *_rest) in enumerate(CATEGORY_TREE[top][1][: cfg.subcategories_per_category]):
            subs.append(name)
            sub_top.append(t)
            shape_of.append(list(CATEGORY_TREE).index(top) * 4 + s)
    complements = {}
    for k, name in enumerate(subs):  # designated complement, or the next subcategory of the same top category
        wanted = _subcategory_spec(name)[1]
        siblings = [j for j in range(len(subs)) if sub_top[j] == sub_top[k]]
        fallback = subs[siblings[(siblings.index(k) + 1) % len(siblings)]]
        complements[name] = wanted if wanted in subs else fallback
    return Taxonomy(tops, subs, np.array(sub_top), np.array(shape_of), complements)


def _subcategory_spec(name: str):
    for _features, specs in CATEGORY_TREE.values():
        for spec in specs:
            if spec[0] == name:
                return spec
    raise KeyError(name)


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _a(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


def _item_text(rng, top: str, sub: str, brand: str, colour: str, band: str) -> tuple[str, str]:
    """Title and description from the attributes: product nouns and colour synonyms, never the raw labels alone."""
    _, _, nouns, uses = _subcategory_spec(sub)
    noun, word = _pick(rng, nouns), _pick(rng, COLOURS[colour][1])
    series, adj, size = _pick(rng, _SERIES), _pick(rng, _ADJECTIVES), _pick(rng, _SIZES)
    titles = (f"{brand} {series} {noun}, {colour}", f"{brand} {noun} in {word.title()}",
              f"{word.title()} {noun} by {brand}", f"{brand} {adj} {noun} - {size}")
    feature, use = _pick(rng, CATEGORY_TREE[top][0]), _pick(rng, uses)
    price_phrase = _pick(rng, PRICE_BANDS[band][2])
    descriptions = (f"{_a(word).capitalize()} {noun.lower()} from {brand}, {feature}. {price_phrase}.",
                    f"{price_phrase}: this {noun.lower()} is {feature} and ideal for {use}.",
                    f"Part of the {brand} {series} line, finished in {word}. Perfect for {use}; {feature}.",
                    f"{feature.capitalize()}. {_a(sub.lower()).capitalize()} essential for {use}. {price_phrase} in {word}.")
    return _pick(rng, titles), _pick(rng, descriptions)


class SimulatedItems(NamedTuple):
    attributes: dict[str, np.ndarray]  # GROUND_TRUTH_ATTRIBUTES -> int codes [num_items]
    labels: dict[str, list[str]]  # attribute -> code -> name
    prices: np.ndarray  # float64 [num_items]
    popularity: np.ndarray  # float64 [num_items], Zipf weights
    text: list[tuple[str, str]]  # (title, description) per item


def _simulate_items(cfg: SyntheticConfig, rng: np.random.Generator, tops, subs, sub_top) -> SimulatedItems:
    n_top, n_sub, n_col, bands = len(tops), len(subs), cfg.num_colours, list(PRICE_BANDS)
    # brands: a primary top category round-robin (every category gets brands), maybe a second one
    brand_names = _brand_names(rng, cfg.num_brands)
    families = list(BRAND_FAMILIES)
    brand_family = rng.permutation(np.arange(cfg.num_brands) % len(families))
    brand_tops = np.zeros((cfg.num_brands, n_top), dtype=bool)
    brand_tops[np.arange(cfg.num_brands), rng.permutation(np.arange(cfg.num_brands) % n_top)] = True
    for b in np.flatnonzero(rng.random(cfg.num_brands) < cfg.second_category_prob):
        if n_top > 1:
            brand_tops[b, rng.choice(np.flatnonzero(~brand_tops[b]))] = True
    brand_tier = rng.integers(0, len(bands), cfg.num_brands)  # each brand has a home price band
    brand_size = rng.lognormal(0.0, 0.6, cfg.num_brands)
    # items
    top_w = rng.dirichlet(np.full(n_top, 8.0))
    sub_w = np.concatenate([rng.dirichlet(np.full((sub_top == t).sum(), 4.0)) for t in range(n_top)])
    colour_w = 0.7 * rng.dirichlet(np.full(n_col, 0.7), size=n_sub) + 0.3 / n_col  # [S, C] colours typical of a subcategory
    top = rng.choice(n_top, cfg.num_items, p=top_w)
    sub = np.array([rng.choice(np.flatnonzero(sub_top == t), p=sub_w[sub_top == t] / sub_w[sub_top == t].sum()) for t in top])
    brand = np.array([rng.choice(np.flatnonzero(brand_tops[:, t]), p=brand_size[brand_tops[:, t]] / brand_size[brand_tops[:, t]].sum()) for t in top])
    colour = np.array([rng.choice(n_col, p=colour_w[s]) for s in sub])
    band = np.clip(brand_tier[brand] + rng.choice([-1, 0, 1], cfg.num_items, p=[0.2, 0.6, 0.2]), 0, len(bands) - 1)
    low, high = np.array([PRICE_BANDS[b][0] for b in bands]), np.array([PRICE_BANDS[b][1] for b in bands])
    price = np.exp(rng.uniform(np.log(low[band]), np.log(high[band])))
    price = np.maximum(np.round(price) - 0.01, 0.99)
    popularity = (rng.permutation(cfg.num_items) + 1.0) ** -cfg.popularity_exponent
    colours = list(COLOURS)[:n_col]
    text = [_item_text(rng, tops[top[i]], subs[sub[i]], brand_names[brand[i]], colours[colour[i]], bands[band[i]]) for i in range(cfg.num_items)]
    attributes = {"top_category": top, "subcategory": sub, "brand": brand, "brand_family": brand_family[brand],
                  "colour": colour, "price_band": band}
    labels = {"top_category": list(tops), "subcategory": list(subs), "brand": brand_names, "brand_family": families,
              "colour": colours, "price_band": bands}
    return SimulatedItems(attributes, labels, price, popularity, text)


def _simulate_users(cfg: SyntheticConfig, rng: np.random.Generator, attrs: dict, popularity: np.ndarray, complement_idx: np.ndarray):
    n_items = len(popularity)
    top, sub, brand, colour, band = (attrs[k] for k in ("top_category", "subcategory", "brand", "colour", "price_band"))
    by_sub = [np.flatnonzero(sub == s) for s in range(len(complement_idx))]
    by_brand = [np.flatnonzero(brand == b) for b in range(brand.max() + 1)]
    everything = np.arange(n_items)
    sequences = []
    rng_id = follow_ups = None
    if cfg.id_driven > 0:  # its own generator: the default world's draws are unchanged
        rng_id = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7919]))
        follow_ups = np.stack([rng_id.choice(n_items, cfg.id_follow_ups, replace=False) for _ in range(n_items)])
    for _ in range(cfg.num_users):
        top_pref = rng.dirichlet(np.full(top.max() + 1, cfg.user_category_concentration))
        colour_pref = 0.5 * rng.dirichlet(np.full(colour.max() + 1, cfg.user_taste_concentration)) + 0.5 / (colour.max() + 1)
        band_pref = 0.5 * rng.dirichlet(np.full(len(PRICE_BANDS), cfg.user_taste_concentration)) + 0.5 / len(PRICE_BANDS)
        weight = popularity * (top_pref[top] + 1e-3) * colour_pref[colour] * band_pref[band]  # [N] this user's taste
        length = int(min(cfg.max_sequence_length, cfg.min_sequence_length + np.floor(rng.lognormal(np.log(cfg.length_median_extra), cfg.length_sigma))))
        seen = np.zeros(n_items, dtype=bool)
        seq: list[int] = []
        for _step in range(min(length, n_items)):
            r = rng.random()
            if seq and rng_id is not None and rng_id.random() < cfg.id_driven and (~seen[follow_ups[seq[-1]]]).any():
                pool = follow_ups[seq[-1]]  # an item-specific transition: popularity decides, not taste
                w = popularity[pool] * ~seen[pool]
                cum = np.cumsum(w)
                item = int(pool[min(np.searchsorted(cum, rng_id.random() * cum[-1], side="right"), len(pool) - 1)])
                seen[item] = True
                seq.append(item)
                continue
            if seq and r < cfg.complement_prob:
                pool = by_sub[complement_idx[sub[seq[-1]]]]
            elif seq and r < cfg.complement_prob + cfg.same_brand_prob:
                pool = by_brand[brand[seq[-1]]]
            else:
                pool = everything
            w = weight[pool] * ~seen[pool]
            if w.sum() <= 0:  # the pool is exhausted for this user: fall back to the whole catalog
                pool, w = everything, weight * ~seen
            cum = np.cumsum(w)
            item = int(pool[min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(pool) - 1)])
            seen[item] = True
            seq.append(item)
        sequences.append(np.array(seq, dtype=np.int64))
    return sequences


@functools.lru_cache(maxsize=4)
def generate(cfg: SyntheticConfig) -> GeneratedCatalog:
    """Run the generator in memory (no files). Cached per config; treat the result as read-only."""
    rng_items, rng_users = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(2))
    tops, subs, sub_top, _, complements = _tree(cfg)
    attrs, labels, price, popularity, text = _simulate_items(cfg, rng_items, tops, subs, sub_top)
    complement_idx = np.array([subs.index(complements[s]) for s in subs])
    raw_sequences = _simulate_users(cfg, rng_users, attrs, popularity, complement_idx)
    user_of = np.repeat(np.arange(len(raw_sequences)), [len(s) for s in raw_sequences])
    item_of = np.concatenate(raw_sequences)
    kept = kcore_mask(user_of, item_of, cfg.core)  # the loaders' k-core (users and items, interactions counted)
    kept_users = np.unique(user_of[kept])
    keep_item = np.zeros(cfg.num_items, dtype=bool)
    keep_item[item_of[kept]] = True
    kept_items = np.flatnonzero(keep_item)
    row_of = np.full(cfg.num_items, -1, dtype=np.int64)
    row_of[kept_items] = np.arange(len(kept_items))
    sequences = [row_of[raw_sequences[u][keep_item[raw_sequences[u]]]] for u in kept_users]
    counts = {"users_generated": cfg.num_users, "items_generated": cfg.num_items,
              "interactions_generated": int(sum(len(s) for s in raw_sequences)),
              "users": len(sequences), "items": len(kept_items), "interactions": int(sum(len(s) for s in sequences))}
    return GeneratedCatalog(
        raw_ids=[f"I{k + 1:05d}" for k in range(len(kept_items))],
        titles=[text[i][0] for i in kept_items], descriptions=[text[i][1] for i in kept_items],
        prices=price[kept_items].astype(np.float64),
        attributes={a: attrs[a][kept_items].astype(np.int64) for a in GROUND_TRUTH_ATTRIBUTES},
        labels=labels, generator_index=kept_items.astype(np.int64),
        user_ids=[f"U{k + 1:05d}" for k in range(len(sequences))], sequences=sequences,
        complements=complements, counts=counts,
    )


# ---- images -----------------------------------------------------------------------------------
def _regular(n: int, phase: float = -np.pi / 2, radius: float = 1.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def _star(n: int, inner: float) -> np.ndarray:
    pts = _regular(2 * n)
    pts[1::2] *= inner
    return pts


_UNIT_SHAPES: dict[str, np.ndarray] = {  # outlines in [-1, 1]^2, y pointing down
    "circle": _regular(32), "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": _regular(3), "diamond": _regular(4), "pentagon": _regular(5), "hexagon": _regular(6),
    "star5": _star(5, 0.45), "star4": _star(4, 0.4), "sunburst": _star(10, 0.72), "ring": _regular(32),
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "ellipse_wide": _regular(32) * [1.0, 0.55], "ellipse_tall": _regular(32) * [0.55, 1.0],
    "bar_wide": np.array([[-1, -0.4], [1, -0.4], [1, 0.4], [-1, 0.4]]), "bar_tall": np.array([[-0.4, -1], [0.4, -1], [0.4, 1], [-0.4, 1]]),
    "triangle_down": _regular(3, phase=np.pi / 2), "trapezoid": np.array([[-0.5, -0.7], [0.5, -0.7], [1, 0.7], [-1, 0.7]]),
    "parallelogram": np.array([[-0.4, -0.7], [1, -0.7], [0.4, 0.7], [-1, 0.7]]),
    "half_disc": np.concatenate([_regular(32)[8:25], [[0.0, 0.0]]]) * [1, -1] + [0, 0.4],
    "arrow": np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]]),
    "tee": np.array([[-1, -0.9], [1, -0.9], [1, -0.4], [0.3, -0.4], [0.3, 1], [-0.3, 1], [-0.3, -0.4], [-1, -0.4]]),
    "hourglass": np.array([[-0.8, -1], [0.8, -1], [0.15, 0], [0.8, 1], [-0.8, 1], [-0.15, 0]]),
    "chevron": np.array([[-1, -0.7], [-0.4, -0.7], [0.4, 0], [-0.4, 0.7], [-1, 0.7], [-0.2, 0]]) + [0.3, 0],
    "ell": np.array([[-0.8, -1], [-0.2, -1], [-0.2, 0.4], [0.8, 0.4], [0.8, 1], [-0.8, 1]]),
}


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean [size, size] mask of the pattern's accent pixels (random phase so copies differ)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * (64.0 / size)
    if kind == "stripes":
        angle = rng.uniform(0.35, 1.2)
        return ((xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, 8)) % 8.0) < 3.5
    if kind == "dots":
        ox, oy = rng.uniform(0, 10, 2)
        return ((xx + ox) % 10.0 - 5.0) ** 2 + ((yy + oy) % 10.0 - 5.0) ** 2 < 2.6 ** 2
    if kind == "checks":
        ox, oy = rng.uniform(0, 12, 2)
        return ((np.floor((xx + ox) / 6.0) + np.floor((yy + oy) / 6.0)) % 2) == 1
    return np.zeros((size, size), dtype=bool)


def render_item_image(shape: str, rgb: tuple[int, int, int], pattern: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One item picture [size, size, 3] uint8: a patterned, coloured shape on a noisy light background."""
    centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    radius = size * rng.uniform(0.28, 0.38)
    angle = rng.uniform(-0.2, 0.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    draw.polygon([tuple(p) for p in (_UNIT_SHAPES[shape] @ rot.T * radius + centre)], fill=255)
    if shape == "ring":  # punch the hole
        draw.polygon([tuple(p) for p in (_UNIT_SHAPES[shape] * 0.5 @ rot.T * radius + centre)], fill=0)
    mask = np.asarray(mask_img) > 0  # [S, S]
    base = np.clip(np.array(rgb, dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)  # [3]
    accent = base * 0.5 if base.mean() > 90 else base + (255 - base) * 0.5  # darker stripes on light colours
    fill = np.where(_pattern(pattern, size, rng)[..., None], accent, base)  # [S, S, 3]
    background = np.array([238.0, 236.0, 230.0]) + rng.uniform(-6, 6, 3) + rng.normal(0, 5, (size, size, 3))  # [S, S, 3]
    return np.clip(np.where(mask[..., None], fill, background), 0, 255).astype(np.uint8)


# ---- files ------------------------------------------------------------------------------------
def _categories_field(top: str, sub: str) -> str:
    return f"'{top}', '{sub}'"


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def _readme(cfg: SyntheticConfig, cat: GeneratedCatalog) -> str:
    c = cat.counts
    lines = [
        f"# Embedded default dataset (generated by {GENERATOR})", "",
        "A synthetic department-store catalog with text, images and user sequences, deterministic from the seed.",
        f"Regenerate with `qbert4rec_lib.data.synthetic.generate_catalog(SyntheticConfig(**config), folder)` (generator version {GENERATOR_VERSION}).", "",
        "## Counts", "",
        f"- generated: {c['users_generated']} users, {c['items_generated']} items, {c['interactions_generated']} interactions",
        f"- after {cfg.core}-core filtering: **{c['users']} users, {c['items']} items, {c['interactions']} interactions**", "",
        "## Files", "",
        "- `user_sequence.txt`: `USER_ID ITEM_ID ...`, one user a line, chronological",
        "- `catalog.item`: RecBole atomic TSV `item_id:token title:token categories:token_seq price:float brand:token description:token image:token`",
        "- `ground_truth.tsv`: the generator's per-item attributes (" + ", ".join(GROUND_TRUTH_ATTRIBUTES) + ")",
        "- `images/<item_id>.png`: one rendered image per item", "- `config.json`: the generator config, counts, complement map", "",
        "## What the image shows", "",
        "- shape <- subcategory, fill colour <- colour, pattern <- brand family (" + ", ".join(f"{f}: {p}" for f, p in BRAND_FAMILIES.items()) + ")",
        "- jitter: position, size, rotation, colour shade, background noise", "",
        "## Sequential structure", "",
        f"- next item from the previous item's complementary subcategory with probability {cfg.complement_prob}, "
        f"same brand with probability {cfg.same_brand_prob}, else from the user's taste x popularity",
        "- complements: " + "; ".join(f"{a} -> {b}" for a, b in cat.complements.items()), "",
        "## Config", "", "| field | value |", "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in to_dict(cfg).items()]
    return "\n".join(lines) + "\n"


def _write_folder(cfg: SyntheticConfig, cat: GeneratedCatalog, folder: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    subs, shape_of = _tree(cfg).subs, _tree(cfg).shape_of
    (folder / "images").mkdir()
    with open(folder / "user_sequence.txt", "w", encoding="utf-8", newline="\n") as fh:
        for uid, seq in zip(cat.user_ids, cat.sequences):
            fh.write(" ".join([uid] + [cat.raw_ids[r] for r in seq]) + "\n")
    header = "item_id:token\ttitle:token\tcategories:token_seq\tprice:float\tbrand:token\tdescription:token\timage:token"
    gt_lines, item_lines = ["item_id\t" + "\t".join(GROUND_TRUTH_ATTRIBUTES)], [header]
    for k, rid in enumerate(cat.raw_ids):
        top, sub = cat.label("top_category", k), cat.label("subcategory", k)
        item_lines.append("\t".join([rid, _clean(cat.titles[k]), _categories_field(top, sub), f"{cat.prices[k]:.2f}",
                                     cat.label("brand", k), _clean(cat.descriptions[k]), f"images/{rid}.png"]))
        gt_lines.append("\t".join([rid] + [cat.label(a, k) for a in GROUND_TRUTH_ATTRIBUTES]))
    (folder / "catalog.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    (folder / "ground_truth.tsv").write_text("\n".join(gt_lines) + "\n", encoding="utf-8")
    # the code order of each attribute's names (so loaders number labels as the generator does)
    (folder / "ground_truth_labels.json").write_text(
        json.dumps({a: list(cat.labels[a]) for a in GROUND_TRUTH_ATTRIBUTES}, indent=1) + "\n", encoding="utf-8")
    families = list(BRAND_FAMILIES.values())
    for k in tqdm(range(len(cat.raw_ids)), desc="rendering images", disable=not progress):
        rng = np.random.default_rng([cfg.seed, 7, int(cat.generator_index[k])])  # per item: independent of filtering
        shape = SHAPES[shape_of[cat.attributes["subcategory"][k]] % len(SHAPES)]
        rgb = COLOURS[cat.label("colour", k)][0]
        pixels = render_item_image(shape, rgb, families[cat.attributes["brand_family"][k]], cfg.image_size, rng)
        Image.fromarray(pixels, "RGB").save(folder / "images" / f"{cat.raw_ids[k]}.png", format="PNG")
    meta = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "config": to_dict(cfg),
            "counts": cat.counts, "complements": cat.complements, "shapes": {s: SHAPES[shape_of[j] % len(SHAPES)] for j, s in enumerate(subs)},
            "patterns": BRAND_FAMILIES, "colours": {c: list(COLOURS[c][0]) for c in cat.labels["colour"]}}
    (folder / "README.md").write_text(_readme(cfg, cat), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")  # written last


def _is_generated_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError):
        return False


def generate_catalog(cfg: SyntheticConfig, out_dir: str | Path, progress: bool = False, replace: bool = True) -> Path:
    """Write the dataset folder for ``cfg`` at ``out_dir`` atomically (temp folder + rename); returns it.

    An existing ``out_dir`` is replaced only if it is empty or was written by this generator;
    with ``replace=False`` a generated folder that appeared meanwhile (a concurrent writer) is kept.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not _is_generated_folder(out_dir) and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and was not written by {GENERATOR}; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        _write_folder(cfg, generate(cfg), tmp, progress)
        os.chmod(tmp, 0o755)
        if out_dir.exists() and not replace and _is_generated_folder(out_dir):
            shutil.rmtree(tmp)
        elif out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over every file's relative path and bytes: equal for byte-identical folders."""
    folder, h = Path(folder), hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def default_folder(cfg: SyntheticConfig | None = None, root: str | Path | None = None) -> Path:
    """Where :func:`load_default` keeps the generated folder for ``cfg`` in the cache."""
    cfg = cfg or SyntheticConfig()
    key = to_dict(cfg)
    for name in ("id_driven", "id_follow_ups"):  # fields added later: at their defaults the folder keeps its old key
        if key[name] == getattr(SyntheticConfig, name):
            key.pop(name)
    return stage_dir("synthetic", GENERATOR_VERSION, key, root=root).path


# ---- datasets ---------------------------------------------------------------------------------
def build_dataset(cfg: SyntheticConfig | None = None, folder: str | Path | None = None, root: str | Path | None = None) -> Dataset:
    """The Dataset straight from the generator (no file reading), identical to loading the folder.

    Item ids 1..N follow first appearance in ``user_sequence.txt`` order. Image paths point into
    ``folder`` (default: the cache folder of :func:`load_default`); this function writes nothing.
    """
    cfg = cfg or SyntheticConfig()
    cat = generate(cfg)
    folder = Path(folder).absolute() if folder is not None else default_folder(cfg, root)
    order: list[int] = []  # catalog rows in first-appearance order
    seen = np.zeros(len(cat.raw_ids), dtype=bool)
    for seq in cat.sequences:
        for r in seq:
            if not seen[r]:
                seen[r] = True
                order.append(int(r))
    order_arr = np.array(order, dtype=np.int64)
    item_id_of_row = np.empty(len(order), dtype=np.int64)
    item_id_of_row[order_arr] = np.arange(1, len(order) + 1)
    items = ItemTable(
        raw_ids=[cat.raw_ids[r] for r in order], titles=[_clean(cat.titles[r]) for r in order],
        categories=[(cat.label("top_category", r), cat.label("subcategory", r)) for r in order],
        brands=[cat.label("brand", r) for r in order], prices=np.round(cat.prices[order_arr], 2),
        descriptions=[_clean(cat.descriptions[r]) for r in order],
        images=[str(folder / "images" / f"{cat.raw_ids[r]}.png") for r in order],
    )
    report = LoadReport(notes=[_generator_note(cfg, cat.counts)])
    return Dataset(
        name="synthetic", items=items, user_ids=list(cat.user_ids), sequences=[item_id_of_row[s] for s in cat.sequences],
        modalities=Modalities(text=True, image=True, image_source="files"), report=report, source=str(folder),
        ground_truth={a: cat.attributes[a][order_arr].copy() for a in GROUND_TRUTH_ATTRIBUTES},
        ground_truth_labels={a: list(v) for a, v in cat.labels.items()},
    )


def _generator_note(cfg: SyntheticConfig, counts: dict) -> str:
    return (f"generated by {GENERATOR} (seed {cfg.seed}); {cfg.core}-core filtering kept "
            f"{counts['users']}/{counts['users_generated']} users and {counts['items']}/{counts['items_generated']} items")


def load_default(cfg: SyntheticConfig | None = None, root: str | Path | None = None, **overrides) -> Dataset:
    """The embedded default dataset: generated into the cache once, then read like any data folder.

    ``overrides`` change config fields (``load_default(seed=1, num_users=500)``). The folder is
    read through :func:`qbert4rec_lib.data.loaders.load_dataset`, the real-data code path (:func:`build_dataset`
    gives the same Dataset in memory).
    """
    from .loaders import load_dataset

    cfg = override(cfg or SyntheticConfig(), **overrides) if overrides else (cfg or SyntheticConfig())
    folder = default_folder(cfg, root)
    if not _is_generated_folder(folder):
        generate_catalog(cfg, folder, replace=False)
    ds = load_dataset(folder)  # reads ground_truth.tsv with the generator's label order (ground_truth_labels.json)
    ds.name = "synthetic"
    ds.report.notes.append(_generator_note(cfg, json.loads((folder / "config.json").read_text(encoding="utf-8"))["counts"]))
    return ds
