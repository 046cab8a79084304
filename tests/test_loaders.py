"""Loaders: the real Amazon Beauty files, tiny hand-written files in every format, and bad input."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from qbert4rec_lib import open_dataset
from qbert4rec_lib.data.dataset import DataFormatError
from qbert4rec_lib.data.loaders import describe_format, detect_format, load_dataset

ITEM_HEADER = "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def assert_names(err: pytest.ExceptionInfo, path: Path, line: int | None, field: str | None) -> None:
    """The error names the file, the line and the field, in the message and as attributes."""
    msg = str(err.value)
    assert path.name in msg and err.value.path is not None and Path(err.value.path).name == path.name
    if line is not None:
        assert f"line {line}" in msg and err.value.line == line
    if field is not None:
        assert repr(field) in msg and err.value.field == field


# ---- the real Amazon Beauty ---------------------------------------------------------------
@pytest.fixture(scope="module")
def beauty(beauty_path):
    return load_dataset(beauty_path)


def test_beauty_counts(beauty, beauty_path):
    assert describe_format(beauty_path) == "seqfile"
    assert (beauty.num_users, beauty.num_items, beauty.num_interactions) == (22_363, 12_101, 198_502)
    lengths = beauty.sequence_lengths()
    assert (lengths.min(), lengths.max(), round(float(lengths.mean()), 2)) == (5, 204, 8.88)
    assert beauty.name == "amazon-beauty" and not beauty.report.skipped
    assert sum(bool(t) for t in beauty.items.titles) == 12_094
    assert sum(bool(b) for b in beauty.items.brands) == 10_003
    assert int(np.isfinite(beauty.items.prices).sum()) == 11_516
    assert all(beauty.items.categories)


def test_beauty_ids_follow_first_appearance(beauty, beauty_path):
    lines = (beauty_path / "user_sequence.txt").read_text().split("\n")
    first = lines[0].split()
    assert beauty.user_ids[0] == first[0]
    assert beauty.items.raw_ids[0] == first[1]  # item 1 = first item of line 1
    assert beauty.sequences[0].tolist() == list(range(1, len(first)))  # line 1 holds 5 distinct new items
    raw = np.array(beauty.items.raw_ids)
    for u in (1, 2, 1000, 22_362):  # every line round-trips through the ids
        parts = lines[u].split()
        assert beauty.user_ids[u] == parts[0] and raw[beauty.sequences[u] - 1].tolist() == parts[1:]
    seen = np.concatenate(beauty.sequences)
    _, first_pos = np.unique(seen, return_index=True)
    assert np.all(np.diff(first_pos) > 0)  # ids are numbered in order of first appearance


def test_beauty_defects_are_repaired_and_reported(beauty):
    repairs = beauty.report.repairs
    for asin, line, what in (("B0001ZYL3Q", 380, "split by a newline"), ("B000SDI6MI", 2188, "tab inside the title"),
                             ("B008UAIM52", 10174, "tab inside the title")):
        assert any(r.startswith(f"{asin} (line {line})") and what in r for r in repairs), (asin, repairs)
    entity = [r for r in repairs if "HTML entities" in r]
    assert len(entity) == 1 and len(repairs) == 4  # entities counted in aggregate, not per item
    titles = dict(zip(beauty.items.raw_ids, beauty.items.titles))
    assert titles["B0001ZYL3Q"] == "TheraNeem Cream - Original Organix South 2 oz Cream Vanilla"
    assert titles["B000SDI6MI"] == "- DESIGNER SKIN ANGEL KIWI PEAR MOISTURIZING BODY LOTION 20 OZ"
    assert titles["B008UAIM52"].startswith("350BUY 1200pcs Nail Art")
    assert titles["B0001ZZH0M"] == "Naturally Fresh, Deodorant Crystal Spray Mist, 4 Oz"  # &nbsp; gone
    assert not any(e in t for t in beauty.items.titles for e in ("&amp;", "&#39;", "&quot;", "\t", "\n"))
    k = beauty.items.raw_ids.index("B0001ZYL3Q")
    assert beauty.items.brands[k] == "Organix" and beauty.items.prices[k] == pytest.approx(11.28)


def test_beauty_categories_and_absent_image(beauty):
    k = beauty.items.raw_ids.index("9788072216")
    assert beauty.items.categories[k] == ("Beauty", "Fragrance", "Women's", "Eau de Parfum")
    assert beauty.modalities.text and not beauty.modalities.image and beauty.modalities.image_source is None
    assert not any(beauty.items.images) and beauty.ground_truth is None


# ---- seqfile ------------------------------------------------------------------------------
def make_seqfile(folder: Path, seq: str, item_rows: list[str], header: str = ITEM_HEADER) -> Path:
    write(folder / "user_sequence.txt", seq)
    write(folder / "shop.item", "\n".join([header, *item_rows]) + "\n")
    return folder


def test_seqfile_small(tmp_path):
    header = ITEM_HEADER + "\tdescription:token\timage:token"
    write(tmp_path / "img" / "b.png", b"\x89PNG")
    rows = [
        "b\tBee &amp; Co\tX\t1.0\t'Toys', 'Bees'\t2.5\tBuzz\tstriped\timg/b.png",
        "a\t\"Ant \"\"big\"\" \t kit\"\tX\t\t\"'Toys', \"\"Kid's\"\"\"\t\tAntCo\t\t",  # tab inside quoted title
        "c\tCat\tX\t\tToys\t1e1\t\tsoft\t",
        "z\tUnused item\tX\t\t'Toys'\t\t\t\t",
    ]
    make_seqfile(tmp_path, "u1 b a c\nu2 a b\n\nu3 c c a b\n", rows, header)
    write(tmp_path / "ground_truth.tsv", "item_id\tcolour\tsize\na\tred\t10\nb\tblue\t2\nc\tred\t2\nz\tgreen\t1\n")
    ds = load_dataset(tmp_path)
    assert describe_format(tmp_path) == "seqfile" and ds.name == tmp_path.name
    assert ds.user_ids == ["u1", "u3"]  # u2 (2 items) skipped and counted
    assert ds.items.raw_ids == ["b", "a", "c"]
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [3, 3, 2, 1]]  # repeats are kept in a seqfile
    assert ds.report.skipped == {"user with fewer than 3 interactions": 1,
                                 "interactions of users with fewer than 3 interactions": 2,
                                 "blank line": 1, "metadata rows for items not in any sequence": 1}
    assert ds.items.titles == ["Bee & Co", 'Ant "big" kit', "Cat"]
    assert ds.items.categories == [("Toys", "Bees"), ("Toys", "Kid's"), ("Toys",)]
    assert ds.items.descriptions == ["striped", "", "soft"]
    np.testing.assert_allclose(ds.items.prices, [2.5, np.nan, 10.0])
    assert ds.items.images[0] == str((tmp_path / "img" / "b.png").resolve()) and ds.items.images[1:] == ["", ""]
    assert ds.modalities.as_dict() == {"text": True, "image": True, "image_source": "files"}
    assert any(r.startswith("a (line 3): tab inside the title") for r in ds.report.repairs)
    assert any("HTML entities" in r and "1 field(s) of 1 item(s)" in r for r in ds.report.repairs)
    # ground truth: codes index the sorted names, ordered as item ids
    assert ds.ground_truth_labels == {"colour": ["blue", "red"], "size": ["10", "2"]}
    assert ds.ground_truth["colour"].tolist() == [0, 1, 1] and ds.ground_truth["size"].tolist() == [1, 0, 1]
    assert ds.split(max_len=2).test_target.tolist() == [3, 1]
    # ... or the code order a ground_truth_labels.json gives (unused names are kept)
    write(tmp_path / "ground_truth_labels.json", json.dumps({"size": ["1", "2", "10"]}))
    ds = load_dataset(tmp_path)
    assert ds.ground_truth_labels["size"] == ["1", "2", "10"] and ds.ground_truth["size"].tolist() == [1, 2, 1]
    assert ds.ground_truth_labels["colour"] == ["blue", "red"]
    write(tmp_path / "ground_truth_labels.json", json.dumps({"size": ["2"]}))
    with pytest.raises(DataFormatError, match="value '10' is not listed in ground_truth_labels.json") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "ground_truth.tsv", None, "size")


def test_seqfile_record_split_by_newline_and_urls(tmp_path):
    header = "item_id:token\ttitle:token\tcategories:token_seq\timage:token"
    rows = ["a\t\"Long\ntitle\"\t'T'\thttps://x/a.jpg", "b\tBee\t'T'\t", "c\tSee\t\thttp://x/c.jpg"]
    make_seqfile(tmp_path, "u1 a b c\n", rows, header)
    ds = load_dataset(tmp_path, strict=True)
    assert ds.items.titles == ["Long title", "Bee", "See"]
    assert ds.report.repairs == ["a (line 2): record split by a newline; 1 continuation line(s) joined"]
    assert ds.modalities.image_source == "urls" and ds.items.images[2] == "http://x/c.jpg"


def test_seqfile_kcore_and_missing_metadata(tmp_path):
    # by hand, 2-core: d (1 interaction) goes -> u3 = (a, b); stable (a 4, b 4, c 2; users >= 2).
    # Then u3 and u4 have 2 < 3 items -> skipped for leave-one-out. Left: u1, u2 x (a, b, c).
    seq = "u1 a b c\nu2 a b c\nu3 a d b\nu4 a b\n"
    make_seqfile(tmp_path, seq, ["a\tA\tX\t\t'T'\t\t", "b\tB\tX\t\t'T'\t\t", "d\tD\tX\t\t'T'\t\t"])
    assert load_dataset(tmp_path).num_interactions == 9  # seqfile default: no k-core; u4 (2 items) skipped
    ds = load_dataset(tmp_path, kcore=2)
    assert ds.user_ids == ["u1", "u2"] and ds.items.raw_ids == ["a", "b", "c"]
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [1, 2, 3]]
    sk = ds.report.skipped
    assert sk["items removed by 2-core filtering"] == 1 and sk["interactions removed by 2-core filtering"] == 1
    assert sk["user with fewer than 3 interactions"] == 2 and "users removed by 2-core filtering" not in sk
    assert sk["metadata rows for items not in any sequence"] == 1  # d
    # item c has no metadata row: kept with empty metadata and counted (an error when strict)
    assert sk["item without metadata row (kept with empty metadata)"] == 1
    assert ds.items.titles == ["A", "B", ""]
    with pytest.raises(DataFormatError, match="'u3' has 2 item"):
        load_dataset(tmp_path, kcore=2, strict=True)  # strict: the short users are errors too
    write(tmp_path / "user_sequence.txt", "u1 a b a\nu2 b a c\n")
    with pytest.raises(DataFormatError, match="item 'c' has no row in shop.item") as err:
        load_dataset(tmp_path, strict=True)
    assert_names(err, tmp_path / "user_sequence.txt", 2, "item_id")


def test_seqfile_without_item_file(tmp_path):
    write(tmp_path / "user_sequence.txt", "u1 1 2 3\nu2 3 2 1 4\n")
    ds = load_dataset(tmp_path)
    assert ds.num_items == 4 and not ds.modalities.text and not ds.modalities.image
    assert any("no item metadata file" in n for n in ds.report.notes)


# ---- RecBole atomic files -----------------------------------------------------------------
INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
u2\tb\t5\t20
u1\tc\t4\t30
u1\ta\t3\t10
u2\ta\t5\t10
u3\td\t1\t40
u1\tb\t2\t20
u3\ta\t1\t10
u2\tc\t1\t30
u3\tc\t1\t30
u3\tb\t1\t30
u4\ta\t1\t1
u4\td\t1\t2
u4\te\t1\t3
u5\tb\t1\t1
u5\tc\t1\t2
"""


@pytest.fixture()
def recbole_dir(tmp_path):
    write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", "item_id:token\ttitle:token\tgenre:token_seq\n"
          + "".join(f"{i}\tItem {i}\tFun Kids\n" for i in "abcdez"))
    return tmp_path


def test_recbole_kcore_3(recbole_dir):
    # by hand, 3-core: round 1 drops u5 (2 interactions), d (2) and e (1) -> u4 keeps only a;
    # round 2 drops u4 -> a has 3. Left: u2, u1, u3 x {a, b, c} = 9 of 15 interactions.
    ds = load_dataset(recbole_dir, kcore=3)
    assert describe_format(recbole_dir) == "recbole" and ds.name == "toy"
    assert ds.user_ids == ["u2", "u1", "u3"]  # order of first appearance in the .inter file
    assert ds.items.raw_ids == ["a", "b", "c"]
    # chronological; u3's c and b share timestamp 30 -> file order (c on line 10, b on line 11)
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [1, 2, 3], [1, 3, 2]]
    assert ds.report.skipped == {"users removed by 3-core filtering": 2, "items removed by 3-core filtering": 2,
                                 "interactions removed by 3-core filtering": 6,
                                 "metadata rows for items not in any sequence": 3}
    assert ds.items.categories[0] == ("Fun", "Kids")  # RecBole token_seq: space separated


def test_recbole_no_kcore(recbole_dir):
    ds = load_dataset(recbole_dir / "toy.inter", kcore=0)  # a single .inter file works too
    assert ds.user_ids == ["u2", "u1", "u3", "u4"] and ds.items.raw_ids == ["a", "b", "c", "d", "e"]
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [1, 2, 3], [1, 3, 2, 4], [1, 4, 5]]
    assert ds.report.skipped["user with fewer than 3 interactions"] == 1  # u5
    with pytest.raises(DataFormatError, match="'u5' has 2 item") as err:
        load_dataset(recbole_dir, kcore=0, strict=True)
    assert_names(err, recbole_dir / "toy.inter", 15, "items")


def test_recbole_default_kcore_can_empty_a_dataset(recbole_dir):
    with pytest.raises(DataFormatError, match="no user left"):
        load_dataset(recbole_dir)  # default 5-core: nobody has 5 interactions


# ---- Amazon 2014 --------------------------------------------------------------------------
def review(user, asin, t, **extra):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0, **extra})


def test_amazon2014_small(tmp_path):
    reviews = [
        review("U1", "A1", 100), review("U2", "A2", 50), review("U1", "A2", 90), review("U1", "A3", 110),
        review("U2", "A1", 60), review("U1", "A1", 120),  # line 6: repeat of (U1, A1) -> dropped
        json.dumps({"reviewerID": "U3", "unixReviewTime": 5}),  # line 7: no asin -> counted skip
        review("U3", "A4", 1), review("U3", "A1", 2), review("U2", "A3", 70), review("U3", "A2", 3),
    ]
    write_gz(tmp_path / "reviews_Toys_5.json.gz", reviews)
    meta = [
        "{'asin': 'A9', 'title': 'never reviewed'}",
        """{'asin': 'A1', 'title': "Kid's &amp; toy", 'categories': [['Toys & Games', 'Puzzles'], ['Other']],"""
        """ 'price': 12.5, 'imUrl': 'http://img/A1.jpg', 'brand': 'B', 'related': {'also_bought': ['A2']}}""",
        "{'asin': 'A2', 'description': 'wooden', 'categories': [['Toys & Games']], 'salesRank': {'Toys': 5}}",
        "{'asin': 'A4', 'title': 'filtered out by k-core'}",
    ]
    write_gz(tmp_path / "meta_Toys.json.gz", meta)
    assert describe_format(tmp_path) == "amazon2014"
    # by hand, 2-core: A4 (1 review) goes; U3 keeps (A1, A2) = 2 >= 2; stable. Then U3 < 3 items -> skipped.
    # U1 chronological: A2 (90), A1 (100), A3 (110) -> A2 = 1, A1 = 2, A3 = 3
    ds = load_dataset(tmp_path, kcore=2)
    assert ds.name == "amazon2014-Toys" and ds.user_ids == ["U1", "U2"]
    assert ds.items.raw_ids == ["A2", "A1", "A3"] and [s.tolist() for s in ds.sequences] == [[1, 2, 3], [1, 2, 3]]
    sk = ds.report.skipped
    assert sk["repeated user-item interaction (earliest kept)"] == 1 and sk["review without asin"] == 1
    assert sk["items removed by 2-core filtering"] == 1 and sk["interactions removed by 2-core filtering"] == 1
    assert sk["user with fewer than 3 interactions"] == 1
    assert sk["item without metadata row (kept with empty metadata)"] == 1  # A3
    assert sk["metadata rows for items not in any sequence"] == 1  # A9 (A4 was parsed, then filtered)
    assert ds.items.titles == ["", "Kid's & toy", ""] and ds.items.descriptions[0] == "wooden"
    assert ds.items.categories[:2] == [("Toys & Games",), ("Toys & Games", "Puzzles")]
    assert ds.items.brands[1] == "B" and ds.items.prices[1] == 12.5 and math.isnan(ds.items.prices[0])
    assert ds.items.images == ["", "http://img/A1.jpg", ""]
    assert ds.modalities.as_dict() == {"text": True, "image": True, "image_source": "urls"}
    with pytest.raises(DataFormatError, match="review has no value") as err:
        load_dataset(tmp_path / "reviews_Toys_5.json.gz", kcore=2, strict=True)
    assert_names(err, tmp_path / "reviews_Toys_5.json.gz", 7, "asin")


# ---- Amazon 2018 --------------------------------------------------------------------------
def test_amazon2018_default_5core(tmp_path):
    lines = []
    for u in range(1, 7):  # U1..U6 x I1..I5; U1 reviews them in reverse time order
        for i in range(1, 6):
            lines.append(review(f"U{u}", f"I{i}", 1000 - i if u == 1 else 1000 + i))
    lines += [review("U7", f"I{i}", 5 + i) for i in range(1, 5)] + [review("U7", "X", 20)]
    write(tmp_path / "Toys_5.json", "\n".join(lines) + "\n")
    meta = [
        {"asin": "I1", "title": "One", "category": ["Toys", "Cars"], "description": ["fast", "red"],
         "price": "$1,012.99", "imageURL": ["http://s/1.jpg"], "imageURLHighRes": ["http://l/1.jpg"], "brand": "Z"},
        {"asin": "I1", "title": "duplicate row"},
        {"asin": "I2", "title": "Two", "price": "$5.00 - $9.00", "imageURL": ["http://s/2.jpg"]},
        {"asin": "X", "title": "rare"},
    ] + [{"asin": f"I{i}", "title": f"T{i}", "price": ""} for i in (3, 4, 5)]
    write(tmp_path / "meta_Toys.json", "\n".join(json.dumps(m) for m in meta) + "\n")
    assert describe_format(tmp_path) == "amazon2018"
    # by hand, 5-core: X (1 review) goes -> U7 has 4 -> goes. Left: 6 users x 5 items = 30.
    ds = load_dataset(tmp_path)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (6, 5, 30)
    assert ds.items.raw_ids == ["I5", "I4", "I3", "I2", "I1"]  # U1's chronological order
    assert ds.sequences[1].tolist() == [5, 4, 3, 2, 1]
    sk = ds.report.skipped
    assert sk["users removed by 5-core filtering"] == 1 and sk["items removed by 5-core filtering"] == 1
    assert sk["interactions removed by 5-core filtering"] == 5 and sk["duplicate metadata row (first kept)"] == 1
    k1, k2 = ds.items.raw_ids.index("I1"), ds.items.raw_ids.index("I2")
    assert ds.items.titles[k1] == "One" and ds.items.descriptions[k1] == "fast red"
    assert ds.items.categories[k1] == ("Toys", "Cars") and ds.items.prices[k1] == pytest.approx(1012.99)
    assert math.isnan(ds.items.prices[k2])  # a price range is unknown, not a guess
    assert ds.items.images[k1] == "http://l/1.jpg" and ds.items.images[k2] == "http://s/2.jpg"
    assert ds.modalities.image_source == "urls"


# ---- bad input ----------------------------------------------------------------------------
def test_user_line_without_items(tmp_path):
    make_seqfile(tmp_path, "u1 a b c\nu2\n", ["a\tA\tX\t\t'T'\t\t"])
    with pytest.raises(DataFormatError, match="'u2' has no items") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "user_sequence.txt", 2, "items")


def test_duplicate_user_line(tmp_path):
    write(tmp_path / "user_sequence.txt", "u1 a b c\nu1 a b c\n")
    with pytest.raises(DataFormatError, match="already has a line") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "user_sequence.txt", 2, "user_id")


def test_short_record_that_cannot_be_repaired(tmp_path):
    make_seqfile(tmp_path, "u1 a b c\n", ["a\tA\tX\t\t'T'\t1.0", "b\tB\tX\t\t'T'\t\t", "c\tC\tX\t\t'T'\t\t"])
    with pytest.raises(DataFormatError, match="6 of 7 fields") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "shop.item", 2, "brand")


def test_surplus_fields_without_a_title(tmp_path):
    make_seqfile(tmp_path, "u1 a b c\n", ["a\t1.0\textra", "b\t2.0", "c\t3.0"], header="item_id:token\tprice:float")
    with pytest.raises(DataFormatError, match="3 fields, the header has 2") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "shop.item", 2, "price")


def test_unknown_column_type(tmp_path):
    make_seqfile(tmp_path, "u1 a b c\n", ["a\tA"], header="item_id:token\ttitle:text")
    with pytest.raises(DataFormatError, match="unknown type 'text'") as err:
        load_dataset(tmp_path)
    assert_names(err, tmp_path / "shop.item", 1, "title:text")


def test_bad_number_and_bad_categories(tmp_path):
    make_seqfile(tmp_path / "p", "u1 a b c\n", ["a\tA\tX\t\t'T'\tcheap\t"])
    with pytest.raises(DataFormatError, match="not a number: 'cheap'") as err:
        load_dataset(tmp_path / "p")
    assert_names(err, tmp_path / "p" / "shop.item", 2, "price")
    make_seqfile(tmp_path / "c", "u1 a b c\n", ["a\tA\tX\t\t'T', __import__('os')\t\t"])
    with pytest.raises(DataFormatError, match="comma-separated list of quoted names") as err:
        load_dataset(tmp_path / "c")
    assert_names(err, tmp_path / "c" / "shop.item", 2, "categories")


def test_non_utf8_bytes(tmp_path):
    make_seqfile(tmp_path / "i", "u1 a b c\n", [])
    write(tmp_path / "i" / "shop.item", (ITEM_HEADER + "\na\tCaf\xe9\tX\t\t'T'\t\t\n").encode("latin-1"))
    offset = len(ITEM_HEADER) + 1 + len("a\tCaf")  # header line + the bytes before the bad one
    with pytest.raises(DataFormatError, match=rf"not UTF-8 .*byte offset {offset}") as err:
        load_dataset(tmp_path / "i")
    assert_names(err, tmp_path / "i" / "shop.item", 2, "title")
    write(tmp_path / "s" / "user_sequence.txt", b"u1 a b c\nu2 a \xff b\n")
    with pytest.raises(DataFormatError, match="byte offset 14") as err:
        load_dataset(tmp_path / "s")
    assert_names(err, tmp_path / "s" / "user_sequence.txt", 2, "items")


def test_invalid_json_and_literal(tmp_path):
    write(tmp_path / "j" / "Toys_5.json", review("U1", "A1", 1) + "\n{not json\n")
    write(tmp_path / "j" / "meta_Toys.json", "")
    with pytest.raises(DataFormatError, match="invalid JSON") as err:
        load_dataset(tmp_path / "j", kcore=0)
    assert_names(err, tmp_path / "j" / "Toys_5.json", 2, "record")
    write_gz(tmp_path / "l" / "reviews_Toys_5.json.gz", [review("U1", a, t) for t, a in enumerate("ABC")])
    write_gz(tmp_path / "l" / "meta_Toys.json.gz", ["{'asin': 'A', 'title': 'ok'}", "{'asin': 'B', 'title': os.system('x')}"])
    with pytest.raises(DataFormatError, match="neither JSON nor a Python literal") as err:
        load_dataset(tmp_path / "l", kcore=0)
    assert_names(err, tmp_path / "l" / "meta_Toys.json.gz", 2, "record")


def test_detection_errors(tmp_path):
    write(tmp_path / "notes.csv", "x\n")
    with pytest.raises(DataFormatError, match="Looked for seqfile: user_sequence.txt") as err:
        load_dataset(tmp_path)
    assert "amazon2014: reviews_<Cat>_5.json" in str(err.value) and "notes.csv" in str(err.value)
    with pytest.raises(DataFormatError, match="no such file"):
        load_dataset(tmp_path / "missing")
    write_gz(tmp_path / "r" / "reviews_Toys_5.json.gz", [review("U1", "A", 1)])
    with pytest.raises(DataFormatError, match="no meta_Toys.json"):
        describe_format(tmp_path / "r")


def test_open_dataset_and_detect(recbole_dir):
    fmt = detect_format(recbole_dir)
    assert (fmt.kind, fmt.interactions.name, fmt.metadata.name) == ("recbole", "toy.inter", "toy.item")
    ds = open_dataset(str(recbole_dir), kcore=3, name="mine")
    assert ds.name == "mine" and ds.num_interactions == 9


def test_amazon2018_reviews_without_meta_and_single_files(tmp_path):
    write(tmp_path / "Toys_5.json", review("U1", "A", 1) + "\n")
    write(tmp_path / "config.json", "{}\n")  # an unrelated JSON file is not taken for reviews
    with pytest.raises(DataFormatError, match="found Toys_5.json but no meta_Toys.json"):
        describe_format(tmp_path)
    write(tmp_path / "meta_Toys.json", "")
    assert describe_format(tmp_path) == "amazon2018" and describe_format(tmp_path / "Toys_5.json") == "amazon2018"
    write(tmp_path / "user_sequence.txt", "u1 a b c\n")
    assert describe_format(tmp_path) == "seqfile"  # formats are tried in a fixed order


def test_missing_image_file(tmp_path):
    make_seqfile(tmp_path, "u1 a b c\n", ["a\tA\timg/a.png", "b\tB\t", "c\tC\t"], "item_id:token\ttitle:token\timage:token")
    ds = load_dataset(tmp_path)
    assert ds.items.images == ["", "", ""] and not ds.modalities.image
    assert ds.report.skipped["image file missing (image dropped)"] == 1
    with pytest.raises(DataFormatError, match="image file 'img/a.png' of item 'a' not found") as err:
        load_dataset(tmp_path, strict=True)
    assert_names(err, tmp_path / "shop.item", 2, "image")
