"""The explorers' logic without a browser: the data behind each view and the static fallback."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qbert4rec_lib.kit import explore

# 6 items, 3 code levels + the disambiguation token
IDS = np.array([
    [0, 1, 2, 0],  # item 1
    [0, 1, 2, 1],  # item 2: collides with item 1 on all three codes
    [0, 1, 3, 0],  # item 3: shares the first two tokens with 1 and 2
    [0, 2, 2, 0],  # item 4: shares the first token; level 3 token equal to item 1's
    [1, 1, 2, 0],  # item 5: another level-1 code, same level-2/3 tokens as item 1
    [1, 0, 0, 0],  # item 6
])


def _ds(n=6):
    items = SimpleNamespace(titles=[f"title {i}" for i in range(1, n + 1)],
                            categories=[["Top", f"Sub{i % 2}"] for i in range(1, n + 1)],
                            images=[None] * n, brands=[f"brand{i % 3}" for i in range(1, n + 1)])
    counts = np.array([0, 5, 1, 4, 2, 9, 3][:n + 1])
    return SimpleNamespace(items=items, item_counts=lambda: counts, user_ids=["u0", "u1", "u2"], num_items=n)


class FixedScores(torch.nn.Module):
    """score_all returns fixed scores ``[B, N + 1]`` (item i scores ``scores[i]``) whatever the history."""

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("s", torch.tensor(scores, dtype=torch.float32))

    def score_all(self, histories):
        return self.s.expand(histories.shape[0], -1).clone()


SCORES = [0.0, 0.9, 0.5, 0.7, 0.7, 0.1, 0.3]  # item 1 best, then 3 and 4 tied, 2, 6, 5


def test_prefix_neighbours_excludes_the_item_and_nests():
    near = explore.prefix_neighbours(IDS, 1)
    assert list(near) == [1, 2, 3]
    assert near[1].tolist() == [2, 3, 4]
    assert near[2].tolist() == [2, 3]
    assert near[3].tolist() == [2]
    assert explore.prefix_neighbours(IDS, 6)[1].tolist() == [5]
    assert explore.prefix_neighbours(IDS, 6, lengths=[2])[2].tolist() == []
    with pytest.raises(IndexError):
        explore.prefix_neighbours(IDS, 7)


def test_shared_tokens_count_level_by_level_not_anywhere():
    history = [4, 6]  # tokens: level0 {0, 1}, level1 {2, 0}, level2 {2, 0}
    assert explore.shared_token_flags(IDS, 1, history, columns=3) == [True, False, True]
    assert explore.shared_token_flags(IDS, 5, history, columns=3) == [True, False, True]
    # token 1 appears at level 0 in item 6 but item 3 has it at level 1: not shared
    assert explore.shared_token_flags(IDS, 3, history, columns=3) == [True, False, False]
    assert explore.shared_token_counts(IDS, [1, 3, 5], history, columns=3) == [2, 1, 2]
    assert len(explore.shared_token_flags(IDS, 1, history)) == 4  # every column by default
    assert explore.history_tokens(IDS, [6], columns=2) == {(0, 1), (1, 0)}


def test_history_match_prefix_counts_and_recent_items_first():
    levels = explore.history_match(IDS, 1, [3, 4, 2, 5])
    assert [lv["token"] for lv in levels] == [0, 1, 2, 0]
    assert [lv["same_token"] for lv in levels] == [3, 3, 3, 3]  # level 3: items 2, 4, 5 have token 2
    assert [lv["same_prefix"] for lv in levels] == [3, 2, 1, 0]
    assert levels[0]["prefix_items"] == [2, 4, 3]  # most recent first
    assert levels[2]["prefix_items"] == [2]
    assert explore.history_match(IDS, 1, [])[0]["same_prefix"] == 0


def test_recommend_rank_and_first_token_share():
    model = FixedScores(SCORES)
    top = explore.recommend(model, [[1], [2, 3]], max_len=4, k=3)
    assert top[0].tolist()[0] == 3 or top[0].tolist()[0] == 4  # item 1 excluded (history), 3 and 4 tie
    assert set(top[0].tolist()) == {3, 4, 2}
    assert set(top[1].tolist()) == {1, 4, 6}
    assert explore.recommend(model, [[1]], max_len=4, k=1, exclude_history=False).tolist() == [[1]]
    scores = torch.tensor(SCORES)
    assert explore.item_rank(scores, 1) == 1
    assert explore.item_rank(scores, 3) == 3  # pessimistic: the tie with item 4 counts ahead
    assert explore.item_rank(scores, 3, history=[1]) == 2  # the history's other items are out
    assert explore.item_rank(scores, 1, history=[1]) == 1  # the item itself keeps its score
    share, rand = explore.first_token_share(model, [[6], [2]], IDS, max_len=4, k=2, seed=0, batch_size=1)
    # top-2 (history kept) = items 1, 3 (first token 0): user [6] (token 1) -> 0, user [2] (token 0) -> 1
    assert share == pytest.approx(0.5)
    assert 0.0 <= rand <= 1.0


def test_explorers_render_and_fall_back_to_static_html(monkeypatch):
    ds = _ds()
    attributes = {"brand": ds.items.brands}
    codes = explore.CodeExplorer(ds, IDS, attributes)
    assert codes.defaults == {"level": 1, "code": 0}  # the most used level-1 code
    assert "4 items" in codes.html() and "brand" in codes.html()
    assert [v for _, v in codes.options("code", {"level": 3})] == [2, 0, 3]
    assert codes.selection(level=3)["code"] == 0  # code 0 is still valid at level 3; it is kept
    assert codes.selection(level=2, code=5)["code"] == 1  # an invalid code falls back to the first option
    assert codes.html(level=2, code=0) != codes.html()

    prefix = explore.PrefixExplorer(ds, IDS, 1, attributes, choices=[5, 6])
    assert [v for _, v in prefix.options("item", {})] == [1, 5, 6]
    assert "3 other item(s)" in prefix.html() and "1 other item(s)" in prefix.html()
    assert "0 other item(s)" in prefix.html(item=6)

    model = FixedScores(SCORES)
    rec = explore.RecommendationExplorer(ds, model, [[1, 2], [5], [6]], [3, 6, 4], IDS, max_len=4, k=3, more_items=2)
    assert rec.defaults == {"user": 0, "item": 3}  # the held-out item comes first
    assert rec.top(0) == [3, 4, 6] or rec.top(0) == [4, 3, 6]
    why = rec.why(0, 3)
    assert why["rank"] == 2 and not why["in_history"]
    assert why["levels"][0]["same_prefix"] == 2 and why["levels"][2]["same_prefix"] == 0
    assert rec.why(0, 1)["in_history"]
    page = rec.html()
    assert "Top-3" in page and "✔" in page and "rank 2 of 6" in page
    assert rec.html(user=1) != page
    assert [v for _, v in rec.options("item", {"user": 1})][:3] == rec.top(1)
    assert rec.selection(user=2, item=99)["item"] == 4  # an item outside the options: the user's held-out item
    box = rec.widget()
    user, item = box.children[0].children
    user.value = 2
    assert item.value == 4 and box.children[1].value == rec.html(user=2, item=4)

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    codes.show(live=False)
    assert "Static view" in shown[-1].data and codes.html() in shown[-1].data


def test_widget_changes_update_the_view():
    pytest.importorskip("ipywidgets")
    ds = _ds()
    codes = explore.CodeExplorer(ds, IDS, {"brand": ds.items.brands})
    box = codes.widget()
    level, code = box.children[0].children
    view = box.children[1]
    assert "qbert4rec-explorer-codes" in box._dom_classes
    before = view.value
    level.value = 3  # new code options: the code starts from the most used one
    assert [v for _, v in code.options] == [2, 0, 3] and code.value == 2 and view.value != before
    after_level = view.value
    code.value = 3
    assert view.value != after_level and view.value == codes.html(level=3, code=3)
