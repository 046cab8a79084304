"""The ceiling of the generated catalog: the generator's own next-item probabilities.

On real data nobody knows how good a recommender *could* be. On the generated catalog we do: the generator drew every
next item from a known mixture (the previous item's complementary subcategory, its brand, or the whole catalog, each
weighted by the user's latent taste x the item's popularity; with ``id_driven`` > 0 also item-specific follow-ups).
Ranking the items by that very probability is the best ranking any model can make for the held-out item -- ranking by
the true probability maximises the expected HR@K for every K at once, and with it the expected NDCG@K -- so its
NDCG@10 is the **ceiling** (the Bayes-optimal score) a trained model can approach but, on average, not pass.

Two references come out of it (:func:`oracle_scores`):

* ``taste=True``: the generator's exact probabilities, the user's latent taste included -- the ceiling;
* ``taste=False``: the same mixture with the taste left out (popularity x the previous item's transitions) -- what
  the catalog's structure alone gives, without inferring anything about the user from their history.

A model between the two has learned something about each user's taste from their history; the distance to the
ceiling is what is left to learn (a few history items cannot reveal a taste exactly, so no model reaches it).

For new (cold-start) items a third reference: ``unknown_popularity`` = the new items' ids. The generator weighs every
item by its own popularity, which nothing about a new item's content reveals; this oracle knows everything else (the
taste, the transitions, the items' attributes) and gives each new item its group's mean popularity -- the best ranking
a model can make that tells new items apart by content alone. Note what "best" means here: ranking by the true
probability maximises each user's expected HR@K, i.e. the mean over *all* users. Users whose target turned out to be
a new item are selected by the outcome, and a ranking that favours new items can beat the oracle on them -- at the
warm users' expense (:mod:`~qbert4rec_lib.experiments.coldstart` shows both groups side by side).

The generator's state is replayed on the unfiltered sequences (k-core filtering removed a few items the generator did
draw): the previous item and the items already drawn are the generator's own. Works for any dataset read from a folder
written by :mod:`~qbert4rec_lib.data.synthetic_folder` (the embedded default and the dial's catalogs); anything else
gets a clear error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import from_dict
from .dataset import DataFormatError, Dataset
from .synthetic import GeneratedCatalog, SyntheticConfig, generate, next_item_probabilities

__all__ = ["generator_of", "oracle_scores", "fitted_structure_scores"]


def generator_of(dataset: Dataset) -> tuple[SyntheticConfig, GeneratedCatalog]:
    """The generator config and in-memory catalog behind a generated ``dataset`` (checked item by item)."""
    from .synthetic_folder import GENERATOR

    config_file = Path(dataset.source or ".") / "config.json"
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"not a generated catalog: no readable generator config ({type(exc).__name__}); the "
                              "oracle needs the kit's generated data", path=str(config_file)) from None
    if meta.get("generator") != GENERATOR:
        raise DataFormatError(f"not a generated catalog (generator {meta.get('generator')!r}); the oracle needs the "
                              "kit's generated data", path=str(config_file))
    cfg = from_dict(SyntheticConfig, meta["config"])
    catalog = generate(cfg)
    if sorted(catalog.raw_ids) != sorted(dataset.items.raw_ids) or sorted(catalog.user_ids) != sorted(dataset.user_ids):
        raise DataFormatError("the generated catalog's items or users differ from the dataset's (was the folder "
                              "edited, or made by another generator version?)", path=str(config_file))
    return cfg, catalog


def oracle_scores(dataset: Dataset, which: str = "test", *, taste: bool = True,
                  unknown_popularity: np.ndarray | None = None) -> np.ndarray:
    """float64 ``[U, N + 1]``: the generator's probability of each item id (column 0 = padding, 0) being the user's
    ``which`` ("valid" or "test") item of the leave-one-out split, given everything before it; users in dataset
    order. ``taste=False`` leaves the user's latent taste out (popularity x transitions only).
    ``unknown_popularity``: item ids (1..N) whose own popularity the oracle does not know; each gets the mean
    popularity of those items (e.g. the new items of a cold-start split: what content alone cannot tell apart)."""
    if which not in ("valid", "test"):
        raise ValueError(f"oracle_scores: which must be 'valid' or 'test', got {which!r}")
    cfg, catalog = generator_of(dataset)
    world = catalog.world
    row_of_raw = {rid: k for k, rid in enumerate(catalog.raw_ids)}
    generator_item = np.array([catalog.generator_index[row_of_raw[rid]] for rid in dataset.items.raw_ids])  # [N]
    if unknown_popularity is not None and len(unknown_popularity):
        unknown = np.asarray(unknown_popularity, dtype=np.int64)
        if unknown.min() < 1 or unknown.max() > dataset.num_items:
            raise ValueError(f"oracle_scores: unknown_popularity holds ids outside 1..{dataset.num_items}")
        popularity = world.popularity.copy()
        popularity[generator_item[unknown - 1]] = world.popularity[generator_item[unknown - 1]].mean()
        world = world._replace(popularity=popularity)
    user_row = {uid: k for k, uid in enumerate(catalog.user_ids)}
    offset = 1 if which == "test" else 2  # the held-out item's place from the end
    scores = np.zeros((dataset.num_users, dataset.num_items + 1))
    for u, (uid, sequence) in enumerate(zip(dataset.user_ids, dataset.sequences)):
        raw_user = int(catalog.generator_user_index[user_row[uid]])
        raw_sequence = world.raw_sequences[raw_user]
        target = generator_item[sequence[-offset] - 1]
        t = int(np.flatnonzero(raw_sequence == target)[0])  # its step in the generator's own sequence
        seen = np.zeros(len(world.popularity), dtype=bool)
        seen[raw_sequence[:t]] = True
        p = next_item_probabilities(world, cfg, world.user_weight(raw_user, taste),
                                    int(raw_sequence[t - 1]) if t > 0 else None, seen)
        scores[u, 1:] = p[generator_item]
    return scores


def fitted_structure_scores(dataset: Dataset, which: str = "test", *, max_len: int = 50) -> tuple[np.ndarray, dict]:
    """The generator's functional form with every parameter estimated from the training sequences alone.

    ``p(i | prev) = a * pop(i | complement subcategory of prev) + b * pop(i | brand of prev) + (1 - a - b) * pop(i)``
    over the items not in the history, each ``pop(. | pool)`` the item's training count (+1) normalised within its
    pool. Estimated: the counts, the complement map (each subcategory's most over-represented next subcategory) and
    ``a``, ``b`` (maximum likelihood on the training transitions, 0.05 grid). Known: the items' subcategory and brand
    (their content, which the generator's text and images show). No taste: what a first-order model that knows the
    catalog's form could learn from these sequences. Returns ``([U, N + 1] scores, the fitted parameters)``."""
    if which not in ("valid", "test"):
        raise ValueError(f"fitted_structure_scores: which must be 'valid' or 'test', got {which!r}")
    if not dataset.ground_truth or not {"subcategory", "brand"} <= set(dataset.ground_truth):
        raise DataFormatError("fitted_structure_scores needs the generator's item attributes (ground_truth.tsv)",
                              path=dataset.source or None)
    split = dataset.split(max_len=max_len)
    sub = np.concatenate([[-1], dataset.ground_truth["subcategory"]])  # [N + 1], index 0 = padding
    brand = np.concatenate([[-1], dataset.ground_truth["brand"]])
    n_sub = int(sub.max()) + 1
    pop = split.train_item_counts().astype(np.float64) + 1.0
    pop[0] = 0.0
    transitions = np.zeros((n_sub, n_sub))
    for s in split.train:
        np.add.at(transitions, (sub[s[:-1]], sub[s[1:]]), 1)
    overall = transitions.sum(axis=0) / max(transitions.sum(), 1.0)
    lift = transitions / np.maximum(transitions.sum(axis=1, keepdims=True), 1.0) / np.maximum(overall, 1e-12)
    np.fill_diagonal(lift, 0.0)
    complement = lift.argmax(axis=1)  # [S]

    def components(history: np.ndarray) -> np.ndarray:  # [3, N + 1]: within-pool popularity after history[-1]
        w = pop.copy()
        w[history] = 0.0
        prev = history[-1]
        out = np.stack([w * (sub == complement[sub[prev]]), w * (brand == brand[prev]), w])
        sums = out.sum(axis=1, keepdims=True)
        return np.where(sums > 0, out / np.where(sums > 0, sums, 1.0), w / w.sum())

    # the training transitions' component probabilities of the item that did come next, then a grid for (a, b)
    seen_next = np.array([components(s[:t])[:, s[t]] for s in split.train for t in range(1, len(s))])  # [M, 3]
    best = (-np.inf, 0.0, 0.0)
    for a in np.arange(0.0, 1.0001, 0.05):
        for b in np.arange(0.0, 1.0001 - a, 0.05):
            ll = np.log(seen_next @ np.array([a, b, 1.0 - a - b]) + 1e-12).sum()
            best = max(best, (ll, round(float(a), 2), round(float(b), 2)))
    _, a, b = best
    histories = split.test_history if which == "test" else split.valid_history
    scores = np.stack([np.array([a, b, 1.0 - a - b]) @ components(h) for h in histories])  # [U, N + 1]
    scores[:, 0] = 0.0
    return scores, {"complement_prob": a, "same_brand_prob": b, "transitions": len(seen_next),
                    "complement_map_size": n_sub}
