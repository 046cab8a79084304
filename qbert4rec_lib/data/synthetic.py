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

The generator keeps what drew every sequence (:class:`GeneratorWorld`: the users' tastes, the unfiltered
sequences), so :mod:`~qbert4rec_lib.data.oracle` can replay its next-item probabilities -- the best ranking any model
could make on this catalog. Rendering the item images is :mod:`~qbert4rec_lib.data.synthetic_images`; writing the folder and
:func:`~qbert4rec_lib.data.synthetic_folder.load_default` (the embedded default, cached) are
:mod:`~qbert4rec_lib.data.synthetic_folder`. The output folder (read by
:func:`qbert4rec_lib.data.loaders.load_dataset`, the same code path as real data)::

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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .dataset import kcore_mask

__all__ = [
    "SyntheticConfig", "GeneratedCatalog", "CATEGORY_TREE", "COLOURS", "PRICE_BANDS", "BRAND_FAMILIES",
    "SHAPES", "GROUND_TRUTH_ATTRIBUTES", "generate", "GeneratorWorld", "next_item_probabilities",
]

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
    world: GeneratorWorld | None = None  # what drew every sequence (tastes, raw sequences): the oracle replays it
    generator_user_index: np.ndarray | None = None  # int64 [U]: each kept user's index among the generated users

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


class GeneratorWorld(NamedTuple):
    """What decides every next item (before k-core filtering, raw item indices): enough to replay the generator's
    probabilities (:func:`next_item_probabilities`, the Bayes-optimal ranking of :mod:`~qbert4rec_lib.data.oracle`)."""

    top: np.ndarray  # int64 [num_items] top category of each raw item
    subcategory: np.ndarray  # int64 [num_items]
    brand: np.ndarray  # int64 [num_items]
    colour: np.ndarray  # int64 [num_items]
    price_band: np.ndarray  # int64 [num_items]
    popularity: np.ndarray  # float64 [num_items], Zipf weights
    complement_idx: np.ndarray  # int64 [S]: subcategory -> its complementary subcategory
    follow_ups: np.ndarray | None  # int64 [num_items, id_follow_ups] (only when id_driven > 0)
    top_pref: np.ndarray  # float64 [num_users, T]: each generated user's taste over top categories
    colour_pref: np.ndarray  # float64 [num_users, C]
    band_pref: np.ndarray  # float64 [num_users, B]
    raw_sequences: list[np.ndarray]  # every generated user's sequence of raw item indices (before filtering)

    def user_weight(self, user: int, taste: bool = True) -> np.ndarray:
        """float64 ``[num_items]``: user ``user``'s draw weight of each raw item, popularity x taste (``taste=False``:
        popularity only, i.e. what is known about a user without their latent taste)."""
        if not taste:
            return self.popularity.copy()
        return (self.popularity * (self.top_pref[user][self.top] + 1e-3) * self.colour_pref[user][self.colour]
                * self.band_pref[user][self.price_band])


def _pool(world: GeneratorWorld, cfg: SyntheticConfig, r: float | None, prev: int) -> np.ndarray | None:
    """The attribute-driven draw's pool for the uniform number ``r`` after raw item ``prev`` (None: the whole catalog)."""
    if r is not None and r < cfg.complement_prob:
        return np.flatnonzero(world.subcategory == world.complement_idx[world.subcategory[prev]])
    if r is not None and r < cfg.complement_prob + cfg.same_brand_prob:
        return np.flatnonzero(world.brand == world.brand[prev])
    return None


def _draw_next(world: GeneratorWorld, cfg: SyntheticConfig, rng, rng_id, weight: np.ndarray, seq: list[int],
               seen: np.ndarray) -> int:
    """One generator step (the random draws in the order the generator has always made them)."""
    n_items = len(weight)
    r = rng.random()
    follow_ups = world.follow_ups
    if seq and rng_id is not None and rng_id.random() < cfg.id_driven and (~seen[follow_ups[seq[-1]]]).any():
        pool = follow_ups[seq[-1]]  # an item-specific transition: popularity decides, not taste
        w = world.popularity[pool] * ~seen[pool]
        cum = np.cumsum(w)
        return int(pool[min(np.searchsorted(cum, rng_id.random() * cum[-1], side="right"), len(pool) - 1)])
    pool = _pool(world, cfg, r, seq[-1]) if seq else None
    pool = np.arange(n_items) if pool is None else pool
    w = weight[pool] * ~seen[pool]
    if w.sum() <= 0:  # the pool is exhausted for this user: fall back to the whole catalog
        pool, w = np.arange(n_items), weight * ~seen
    cum = np.cumsum(w)
    return int(pool[min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(pool) - 1)])


def next_item_probabilities(world: GeneratorWorld, cfg: SyntheticConfig, weight: np.ndarray, prev: int | None,
                            seen: np.ndarray) -> np.ndarray:
    """float64 ``[num_items]``: the probability that the generator draws each raw item next, for a user with draw
    weights ``weight`` (:meth:`GeneratorWorld.user_weight`) after raw item ``prev`` (None: the first item), having
    drawn the items in ``seen`` (bool ``[num_items]``). Sums to 1; the mixture :func:`_draw_next` samples from."""
    def within(pool: np.ndarray | None) -> np.ndarray:  # the draw from one pool (falling back as the generator does)
        p = np.zeros(len(weight))
        idx = np.arange(len(weight)) if pool is None else pool
        w = weight[idx] * ~seen[idx]
        if w.sum() <= 0:
            idx, w = np.arange(len(weight)), weight * ~seen
        p[idx] = w / w.sum()
        return p

    if prev is None:
        return within(None)
    a, b = cfg.complement_prob, cfg.same_brand_prob
    attribute = (a * within(_pool(world, cfg, 0.0, prev)) + b * within(_pool(world, cfg, a, prev))
                 + (1.0 - a - b) * within(None))
    if world.follow_ups is None or cfg.id_driven <= 0:
        return attribute
    pool = world.follow_ups[prev]
    if not (~seen[pool]).any():
        return attribute
    p_id = np.zeros(len(weight))
    w = world.popularity[pool] * ~seen[pool]
    np.add.at(p_id, pool, w / w.sum())
    return cfg.id_driven * p_id + (1.0 - cfg.id_driven) * attribute


def _simulate_users(cfg: SyntheticConfig, rng: np.random.Generator, attrs: dict, popularity: np.ndarray,
                    complement_idx: np.ndarray) -> GeneratorWorld:
    n_items = len(popularity)
    rng_id = follow_ups = None
    if cfg.id_driven > 0:  # its own generator: the default world's draws are unchanged
        rng_id = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7919]))
        follow_ups = np.stack([rng_id.choice(n_items, cfg.id_follow_ups, replace=False) for _ in range(n_items)])
    world = GeneratorWorld(*(np.asarray(attrs[k]) for k in ("top_category", "subcategory", "brand", "colour",
                                                             "price_band")),
                           popularity, complement_idx, follow_ups, np.zeros((cfg.num_users, attrs["top_category"].max() + 1)),
                           np.zeros((cfg.num_users, attrs["colour"].max() + 1)),
                           np.zeros((cfg.num_users, len(PRICE_BANDS))), [])
    for u in range(cfg.num_users):
        world.top_pref[u] = rng.dirichlet(np.full(world.top_pref.shape[1], cfg.user_category_concentration))
        world.colour_pref[u] = (0.5 * rng.dirichlet(np.full(world.colour_pref.shape[1], cfg.user_taste_concentration))
                                + 0.5 / world.colour_pref.shape[1])
        world.band_pref[u] = 0.5 * rng.dirichlet(np.full(len(PRICE_BANDS), cfg.user_taste_concentration)) + 0.5 / len(PRICE_BANDS)
        weight = world.user_weight(u)  # [N] this user's taste x popularity
        length = int(min(cfg.max_sequence_length, cfg.min_sequence_length + np.floor(rng.lognormal(np.log(cfg.length_median_extra), cfg.length_sigma))))
        seen = np.zeros(n_items, dtype=bool)
        seq: list[int] = []
        for _step in range(min(length, n_items)):
            item = _draw_next(world, cfg, rng, rng_id, weight, seq, seen)
            seen[item] = True
            seq.append(item)
        world.raw_sequences.append(np.array(seq, dtype=np.int64))
    return world


@functools.lru_cache(maxsize=4)
def generate(cfg: SyntheticConfig) -> GeneratedCatalog:
    """Run the generator in memory (no files). Cached per config; treat the result as read-only."""
    rng_items, rng_users = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(2))
    tops, subs, sub_top, _, complements = _tree(cfg)
    attrs, labels, price, popularity, text = _simulate_items(cfg, rng_items, tops, subs, sub_top)
    complement_idx = np.array([subs.index(complements[s]) for s in subs])
    world = _simulate_users(cfg, rng_users, attrs, popularity, complement_idx)
    raw_sequences = world.raw_sequences
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
        complements=complements, counts=counts, world=world, generator_user_index=kept_users.astype(np.int64),
    )
