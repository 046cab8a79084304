"""The one dataset object the whole pipeline reads, and its leave-one-out split.

Items carry stable integer ids ``1..N`` (``0`` is padding everywhere downstream). Column
``k`` of every per-item array / list is item id ``k + 1``. Sequences are chronological
arrays of item ids, one per user. ``modalities`` records which raw modalities the dataset
*has*: a dataset without images says ``image=False`` and no stage may invent image features.

Loaders for concrete file formats live in :mod:`qbert4rec_lib.data.loaders`; the generated
embedded default in :mod:`qbert4rec_lib.data.synthetic`. Both return a :class:`Dataset`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..keys import digest

__all__ = [
    "DataFormatError",
    "LoadReport",
    "ItemTable",
    "Modalities",
    "Dataset",
    "LeaveOneOutSplit",
    "PAD",
    "kcore_mask",
]

PAD = 0  # item id 0 is padding in every downstream tensor


def kcore_mask(user_idx: np.ndarray, item_idx: np.ndarray, k: int) -> np.ndarray:
    """The k-core of a log of (user, item) interactions: a bool mask keeping, iteratively, the interactions whose
    user AND item both have >= k kept interactions (the loaders and the generator both filter with it)."""
    keep = np.ones(len(user_idx), dtype=bool)
    while True:
        u_counts = np.bincount(user_idx[keep], minlength=user_idx.max() + 1)
        i_counts = np.bincount(item_idx[keep], minlength=item_idx.max() + 1)
        new = keep & (u_counts[user_idx] >= k) & (i_counts[item_idx] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


class DataFormatError(ValueError):
    """Bad input that cannot be repaired. Always names the file, the line and the field."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = (str(path) if path is not None else None), line, field
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


@dataclass
class LoadReport:
    """What a loader repaired or skipped. Nothing is dropped without being counted here."""

    repairs: list[str] = field(default_factory=list)  # human-readable, one per repaired record
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    notes: list[str] = field(default_factory=list)

    def repair(self, msg: str) -> None:
        self.repairs.append(msg)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def as_dict(self) -> dict:
        return {"repairs": list(self.repairs), "skipped": dict(self.skipped), "notes": list(self.notes)}

    def summary(self) -> str:
        parts = [f"{len(self.repairs)} record(s) repaired"]
        parts += [f"{n} skipped ({reason})" for reason, n in sorted(self.skipped.items())]
        return "; ".join(parts)


@dataclass
class ItemTable:
    """Per-item metadata, columnar. Entry ``k`` describes item id ``k + 1``.

    Absent values are ``""`` (strings), ``()`` (category path) or ``nan`` (price).
    ``images`` holds a local file path or a URL (``""`` when the item has no image).
    """

    raw_ids: list[str]
    titles: list[str]
    categories: list[tuple[str, ...]]  # category path, most general first
    brands: list[str]
    prices: np.ndarray  # float64 [N], nan = unknown
    descriptions: list[str]
    images: list[str]

    def __post_init__(self) -> None:
        n = len(self.raw_ids)
        for name in ("titles", "categories", "brands", "descriptions", "images"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ItemTable.{name} has {len(getattr(self, name))} entries, expected {n}")
        self.prices = np.asarray(self.prices, dtype=np.float64)
        if self.prices.shape != (n,):
            raise ValueError(f"ItemTable.prices has shape {self.prices.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.raw_ids)

    def top_categories(self, level: int = 0, missing: str = "(none)") -> list[str]:
        """The category at depth ``level`` of each item's path (skipping a root shared by all items)."""
        offset = 1 if self._shared_root() else 0
        return [c[level + offset] if len(c) > level + offset else missing for c in self.categories]

    def _shared_root(self) -> bool:
        roots = {c[0] for c in self.categories if c}
        return len(roots) == 1 and all(len(c) > 1 for c in self.categories if c)


@dataclass(frozen=True)
class Modalities:
    """Which raw modalities a dataset has. ``image`` is False when no item has an image."""

    text: bool
    image: bool
    image_source: str | None = None  # "files" (local paths) or "urls" (need downloading) or None

    def present(self) -> list[str]:
        return [m for m, ok in (("text", self.text), ("image", self.image)) if ok]

    def as_dict(self) -> dict:
        return {"text": self.text, "image": self.image, "image_source": self.image_source}


@dataclass
class LeaveOneOutSplit:
    """Leave-one-out: last item = test target, second-to-last = validation target, rest = train.

    ``train`` holds each user's sequence without its last two items (what models train on).
    ``valid_history`` equals ``train``; ``test_history`` adds the validation item.
    Histories are truncated to their last ``max_len`` items (0 = no limit).
    """

    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray  # int64 [U]
    test_history: list[np.ndarray]
    test_target: np.ndarray  # int64 [U]
    num_items: int
    max_len: int

    @property
    def num_users(self) -> int:
        return len(self.train)

    def train_item_counts(self) -> np.ndarray:
        """Interaction counts per item id (index 0 = padding, always 0), from the train part only."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for s in self.train:
            np.add.at(counts, s, 1)
        return counts


@dataclass
class Dataset:
    """A sequential-recommendation dataset with item metadata and a modality record."""

    name: str
    items: ItemTable
    user_ids: list[str]
    sequences: list[np.ndarray]  # int64 arrays of item ids in 1..N, chronological
    modalities: Modalities
    report: LoadReport = field(default_factory=LoadReport)
    source: str = ""
    ground_truth: dict[str, np.ndarray] | None = None  # generator's per-item attributes (synthetic only)
    ground_truth_labels: dict[str, list[str]] | None = None  # code -> name for each attribute

    def __post_init__(self) -> None:
        if len(self.user_ids) != len(self.sequences):
            raise ValueError("user_ids and sequences differ in length")
        n = len(self.items)
        for u, s in zip(self.user_ids, self.sequences):
            if len(s) and (s.min() < 1 or s.max() > n):
                raise ValueError(f"user {u!r}: item id out of range 1..{n}")

    # ---- counts -------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def sequence_lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

    def item_counts(self) -> np.ndarray:
        """Interactions per item id (index 0 unused)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for s in self.sequences:
            np.add.at(counts, s, 1)
        return counts

    def stats(self) -> dict:
        lengths = self.sequence_lengths()
        return {
            "name": self.name,
            "source": self.source,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "modalities": self.modalities.as_dict(),
            "modalities_absent": [m for m in ("text", "image") if not getattr(self.modalities, m)],
            "sequence_length": {
                "min": int(lengths.min()) if len(lengths) else 0,
                "max": int(lengths.max()) if len(lengths) else 0,
                "mean": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            },
            "density": round(self.num_interactions / max(1, self.num_users * self.num_items), 6),
            "items_with_title": int(sum(bool(t) for t in self.items.titles)),
            "items_with_image": int(sum(bool(t) for t in self.items.images)),
            "load_report": self.report.as_dict() | {"summary": self.report.summary()},
            "fingerprint": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        """A content hash of ids, sequences and text (keys every downstream cache).

        An image path inside the dataset's folder enters as ``<folder name>/<path in the folder>``, so the hash does
        not depend on where the folder lies (a cache root under another home, a moved copy): result records and
        pinned artifacts of the generated default catalog match on every machine. (The generated catalog's folder
        name is the hash of its generator settings, so it still tells two catalogs apart.)"""
        import os

        root = os.path.abspath(self.source) if self.source else ""
        prefix = root.rstrip(os.sep) + os.sep

        def portable(img: str) -> str:
            if root and img.startswith(prefix):
                return os.path.basename(root.rstrip(os.sep)) + "/" + img[len(prefix):].replace(os.sep, "/")
            return img

        def chunks():
            yield self.name.encode()
            for rid, title, cats, brand, desc, img in zip(
                self.items.raw_ids, self.items.titles, self.items.categories, self.items.brands,
                self.items.descriptions, self.items.images,
            ):
                yield "\x1f".join([rid, title, "|".join(cats), brand, desc, portable(img)]).encode(
                    "utf-8", "surrogatepass")
                yield b"\x1e"
            yield np.nan_to_num(self.items.prices, nan=-1.0).tobytes()
            for s in self.sequences:
                yield np.asarray(s, dtype=np.int64).tobytes()
                yield b"|"

        return digest(chunks())

    # ---- split --------------------------------------------------------------------------
    def split(self, max_len: int = 50) -> LeaveOneOutSplit:
        """Leave-one-out split (deterministic). Users need at least 3 items."""
        short = [u for u, s in zip(self.user_ids, self.sequences) if len(s) < 3]
        if short:
            raise DataFormatError(
                f"{len(short)} user(s) have fewer than 3 interactions (first: {short[0]!r}); "
                "leave-one-out needs train/valid/test items. Apply k-core filtering first.",
                path=self.source or None,
            )

        def cut(a: np.ndarray) -> np.ndarray:
            return a[-max_len:] if max_len and len(a) > max_len else a

        train = [np.asarray(s[:-2], dtype=np.int64) for s in self.sequences]
        return LeaveOneOutSplit(
            train=[cut(s) for s in train],
            valid_history=[cut(s) for s in train],
            valid_target=np.array([s[-2] for s in self.sequences], dtype=np.int64),
            test_history=[cut(np.asarray(s[:-1], dtype=np.int64)) for s in self.sequences],
            test_target=np.array([s[-1] for s in self.sequences], dtype=np.int64),
            num_items=self.num_items,
            max_len=max_len,
        )

