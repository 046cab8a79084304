"""Interactive explorers for the notebooks, each with a static fallback.

An explorer is a handful of dropdowns and one HTML view. Its logic is plain Python, testable without a browser:

- the data behind each view, in :mod:`qbert4rec_lib.kit.explore_data` (its names are importable from here too):
  :func:`prefix_neighbours` (items sharing an item's first 1, 2, ... tokens), :func:`shared_token_flags` /
  :func:`history_match` (which tokens a recommended item shares with a user's history, level by level),
  :func:`recommend` / :func:`item_rank` (a user's top-k and one item's rank, the evaluator's protocol: history
  excluded, pessimistic ties) and :func:`first_token_share`;
- :meth:`Explorer.html` renders the view for a selection as HTML;
- :meth:`Explorer.widget` builds the ipywidgets version (one ``Dropdown`` per control, an ``HTML`` view);
- displaying an explorer (``display(explorer)`` or ending a cell with it) shows the live widget when a front end
  drives the kernel (:func:`qbert4rec_lib.kit.notebook.interactive`), and otherwise (papermill, nbclient, a static copy)
  the view of the **default selection** as static HTML, so an executed notebook stays readable.

The explorers: :class:`NeighbourExplorer` (notebook 02: nearest items by each modality), :class:`CodeExplorer` and
:class:`PrefixExplorer` (notebook 04: the items of one code with their label breakdown; the items sharing an item's
prefix) and :class:`RecommendationExplorer` (notebook 07: a user's history, top-10 and the reasons behind any item's
rank). Every widget carries the CSS classes ``qbert4rec-explorer`` and ``qbert4rec-explorer-<kind>``, its view
``qbert4rec-explorer-view`` (the browser test finds them by these).
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from . import viz
from .explore_data import (_ids, _scores, first_token_share, history_match, history_tokens, item_rank,  # noqa: F401
                           popular_items, prefix_neighbours, recommend, shared_token_counts, shared_token_flags)

__all__ = ["Explorer", "NeighbourExplorer", "CodeExplorer", "PrefixExplorer", "RecommendationExplorer",
           "prefix_neighbours", "history_tokens", "shared_token_flags", "shared_token_counts", "history_match",
           "recommend", "item_rank", "first_token_share", "popular_items"]


# ---- explorers ------------------------------------------------------------------------------------------------


class Explorer:
    """Dropdown controls over one HTML view. Subclasses set ``kind`` and ``controls`` (names, in order), and define
    :meth:`options` (``[(label, value), ...]`` for a control, given the selection of the controls before it) and
    :meth:`render` (the view's HTML for a full selection). ``defaults`` holds the default selection."""

    kind = "explorer"
    controls: tuple[str, ...] = ()

    def __init__(self, defaults: dict):
        self.defaults = dict(defaults)
        self._widget = None

    # subclass API
    def options(self, name: str, selection: dict) -> list[tuple[str, object]]:
        raise NotImplementedError

    def render(self, **selection) -> str:
        raise NotImplementedError

    def fallback(self, name: str, selection: dict, options: list):
        """The value a control takes when an earlier control's change leaves its value outside its options."""
        return options[0][1]

    # common behaviour
    def selection(self, **changes) -> dict:
        """The default selection with ``changes``; a later control whose value is no longer among its options falls
        back to :meth:`fallback` (by default its first option; e.g. a code when the level changes)."""
        sel = {**self.defaults, **changes}
        for name in self.controls:
            opts = self.options(name, sel)
            if opts and sel.get(name) not in [v for _, v in opts]:
                sel[name] = self.fallback(name, sel, opts)
        return sel

    def html(self, **changes) -> str:
        """The view for the default selection with ``changes``."""
        return self.render(**self.selection(**changes))

    def static_html(self) -> str:
        note = ("<p><i>Static view of the default selection; run the notebook in JupyterLab to change it with the "
                "explorer's dropdowns.</i></p>")
        return f"<div class='qbert4rec-explorer-static'>{note}{self.html()}</div>"

    def widget(self):
        """The ipywidgets version: one ``Dropdown`` per control above an ``HTML`` view (built once)."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as widgets

        sel = self.selection()
        boxes = {name: widgets.Dropdown(options=self.options(name, sel), value=sel[name], description=name,
                                        layout=widgets.Layout(width="auto", min_width="220px", max_width="520px"))
                 for name in self.controls}
        view = widgets.HTML(value=self.render(**sel))
        view.add_class("qbert4rec-explorer-view")
        busy = {"now": False}

        def on_change(change):
            if busy["now"]:
                return
            busy["now"] = True
            try:
                names = list(self.controls)
                current = {n: boxes[n].value for n in names}
                after = names[names.index(change["owner"].description) + 1:]
                for n in after:  # later controls may depend on this one
                    opts = self.options(n, current)
                    if opts != list(boxes[n].options):
                        value = self.fallback(n, current, opts)  # new options: start from the control's default
                        boxes[n].options = opts
                        boxes[n].value = value
                        current[n] = value
                view.value = self.render(**current)
            finally:
                busy["now"] = False

        for box in boxes.values():
            box.observe(on_change, names="value")
        box = widgets.VBox([widgets.HBox(list(boxes.values())), view])
        box.add_class("qbert4rec-explorer")
        box.add_class(f"qbert4rec-explorer-{self.kind}")
        self._widget = box
        return box

    def show(self, live: bool | None = None) -> None:
        """Display the widget (``live``; default: a front end drives the kernel) or the static view."""
        from IPython.display import HTML, display

        from .notebook import interactive

        if interactive() if live is None else live:
            display(self.widget())
        else:
            display(HTML(self.static_html()))

    def _ipython_display_(self):
        self.show()


def _item_label(ds, item: int, width: int = 50) -> str:
    return f"{item}: {ds.items.titles[item - 1][:width]}"


class NeighbourExplorer(Explorer):
    """Notebook 02: pick an item, see its ``k`` nearest items by each modality side by side (thumbnails, cosine)."""

    kind = "neighbours"
    controls = ("item",)

    def __init__(self, ds, features, item: int, choices: Sequence[int] | None = None, k: int = 5):
        from ..semantic import similarity

        self.ds, self.features, self.k, self._nearest = ds, features, k, similarity.nearest_items
        self.choices = list(dict.fromkeys([int(item)] + [int(i) for i in (choices or popular_items(ds))]))
        super().__init__({"item": int(item)})

    def neighbours(self, item: int) -> dict[str, list[tuple[int, float]]]:
        """Modality -> ``[(item, cosine), ...]`` (empty when the item lacks that modality)."""
        return {name: self._nearest(m, item, k=self.k) for name, m in self.features.modalities.items()}

    def options(self, name, selection):
        return [(_item_label(self.ds, i), i) for i in self.choices]

    def render(self, item):
        return viz.neighbours_html(self.ds, item, self.neighbours(item))


class CodeExplorer(Explorer):
    """Notebook 04: pick a level and one of its codes, see the most common labels among the items holding that code
    (:func:`viz.label_breakdown_html`) and the items themselves."""

    kind = "codes"
    controls = ("level", "code")

    def __init__(self, ds, table, attributes: dict, level: int = 1, code: int = -1, limit: int = 12):
        self.ds, self.table, self.attributes, self.limit = ds, table, attributes, limit
        self.ids = _ids(table)
        self.levels = self.ids.shape[1] - 1  # the disambiguation column is no code level
        if code < 0:
            code = int(np.argmax(self.counts(level)))
        super().__init__({"level": int(level), "code": int(code)})

    def counts(self, level: int) -> np.ndarray:
        return np.bincount(self.ids[:, level - 1])

    def items(self, level: int, code: int) -> np.ndarray:
        return np.flatnonzero(self.ids[:, level - 1] == code) + 1

    def options(self, name, selection):
        if name == "level":
            return [(f"level {lvl}", lvl) for lvl in range(1, self.levels + 1)]
        c = self.counts(selection["level"])
        return [(f"code {k} ({c[k]} items)", int(k)) for k in np.argsort(-c, kind="stable") if c[k] > 0]

    def render(self, level, code):
        found = self.items(level, code)
        return (f"<h4>level {level}, code {code}: {len(found)} items</h4>"
                + viz.label_breakdown_html(self.attributes, found)
                + viz.items_table_html(self.ds, found, self.ids, limit=self.limit))


class PrefixExplorer(Explorer):
    """Notebook 04: pick an item, see the items sharing its first 1, 2, 3 tokens (label breakdown + a few items)."""

    kind = "prefix"
    controls = ("item",)

    def __init__(self, ds, table, item: int, attributes: dict, choices: Sequence[int] | None = None, limit: int = 6):
        self.ds, self.table, self.attributes, self.limit = ds, table, attributes, limit
        self.ids = _ids(table)
        self.choices = list(dict.fromkeys([int(item)] + [int(i) for i in (choices or popular_items(ds))]))
        super().__init__({"item": int(item)})

    def options(self, name, selection):
        return [(_item_label(self.ds, i), i) for i in self.choices]

    def render(self, item):
        parts = [f"<h4>item {item}, semantic ID {viz.semantic_id_html(self.ids[item - 1])}</h4>",
                 viz.items_table_html(self.ds, [item], self.ids)]
        for length, others in prefix_neighbours(self.ids, item).items():
            prefix = tuple(int(t) for t in self.ids[item - 1][:length])
            parts.append(f"<h4>sharing the first {length} token(s) {prefix}: {len(others)} other item(s)</h4>")
            if len(others):
                parts.append(viz.label_breakdown_html(self.attributes, others)
                             + viz.items_table_html(self.ds, others, self.ids, limit=self.limit))
        return "".join(parts)


class RecommendationExplorer(Explorer):
    """Notebook 07: pick a user, see the history and the top-``k`` with the tokens each recommendation shares with
    the history (bold); pick an item (the top-``k``, the held-out item, or any popular item) and see its rank and why:
    its semantic ID level by level against the history. The item shown first is the user's held-out test item."""

    kind = "recommendations"
    controls = ("user", "item")

    def __init__(self, ds, model, histories: Sequence[Sequence[int]], targets: Sequence[int], table, max_len: int,
                 user: int = 0, users: Sequence[int] | None = None, k: int = 10, history_shown: int = 10,
                 more_items: int = 200):
        self.ds, self.model, self.histories, self.targets = ds, model, histories, np.asarray(targets)
        self.ids, self.max_len, self.k, self.history_shown = _ids(table), max_len, k, history_shown
        self.columns = self.ids.shape[1] - 1  # code levels; the disambiguation token is never shared on purpose
        users = list(range(min(50, len(histories)))) if users is None else [int(u) for u in users]
        self.users = list(dict.fromkeys([int(user)] + users))
        self._cache: dict[int, tuple] = {}
        self.popular = popular_items(ds, more_items)
        self._batch_top([int(user)])  # alone first: its top-k is exactly :func:`recommend` for that one history
        self._batch_top(self.users[1:])
        self._user_labels = {u: f"user {ds.user_ids[u]} ({len(histories[u])} items"
                                f"{', held-out item in the top-' + str(k) if int(self.targets[u]) in self.top(u) else ''})"
                             for u in self.users}
        super().__init__({"user": int(user), "item": int(self.targets[user])})

    def _batch_top(self, users) -> None:
        users = [u for u in users if u not in self._cache]
        if not users:
            return
        scores = _scores(self.model, [self.histories[u] for u in users], self.max_len)
        tops = recommend(None, [self.histories[u] for u in users], self.max_len, self.k, scores=scores)
        for u, s, t in zip(users, scores, tops):
            self._cache[u] = (s, t)

    def scores(self, user: int):
        if user not in self._cache:
            self._batch_top([user])
        return self._cache[user][0]

    def top(self, user: int) -> list[int]:
        self.scores(user)
        return [int(i) for i in self._cache[user][1]]

    def options(self, name, selection):
        if name == "user":
            return [(self._user_labels.get(u, f"user {self.ds.user_ids[u]}"), u) for u in self.users]
        user = selection["user"]
        target = int(self.targets[user])
        top = self.top(user)
        opts = [(f"#{r + 1}{' (held-out)' if i == target else ''} {_item_label(self.ds, i, 40)}", i)
                for r, i in enumerate(top)]
        if target not in top:
            opts.append((f"held-out {_item_label(self.ds, target, 40)}", target))
        return opts + [(_item_label(self.ds, i, 40), i) for i in self.popular if i not in top and i != target]

    def fallback(self, name, selection, options):
        return int(self.targets[selection["user"]]) if name == "item" else options[0][1]

    def why(self, user: int, item: int) -> dict:
        """The item's rank and score for the user, and :func:`history_match` of its semantic ID."""
        history = self.histories[user]
        scores = self.scores(user)
        return {"rank": item_rank(scores, item, history), "score": float(scores[item]),
                "in_history": int(item) in set(int(i) for i in history),
                "levels": history_match(self.ids, item, history)}

    def render(self, user, item):
        ds, history, target = self.ds, [int(i) for i in self.histories[user]], int(self.targets[user])
        top = self.top(user)
        flags = {i: shared_token_flags(self.ids, i, history, self.columns) for i in top + [item]}
        last = history[-self.history_shown:]
        left = (f"<h4>User {html.escape(str(ds.user_ids[user]))}: the last {len(last)} of {len(history)} history items"
                f" (most recent last)</h4>" + viz.items_table_html(ds, last, self.ids, limit=len(last), thumb=28))
        why = self.why(user, item)
        state = " (in the history: excluded from recommendations)" if why["in_history"] else ""
        rows = []
        for lv in why["levels"][:self.columns]:
            near = ", ".join(_item_label(ds, i, 30) for i in lv["prefix_items"][:3]) or "—"
            rows.append(f"<tr><td>{lv['level']}</td><td>{lv['token']}</td><td>{lv['same_token']}</td>"
                        f"<td>{lv['same_prefix']}</td><td style='text-align:left'>{html.escape(near)}</td></tr>")
        right = (f"<h4>Item {item}: rank {why['rank']:,} of {self.ids.shape[0]:,}{state}; score {why['score']:.3f}"
                 f"{' — the held-out test item' if item == target else ''}</h4>"
                 + viz.items_table_html(ds, [item], self.ids, shared={item: flags[item]}, thumb=28)
                 + "<table><tr><th>level</th><th>token</th><th>history items with<br>this token at this level</th>"
                 "<th>... sharing the whole<br>prefix up to here</th><th>most recent of those</th></tr>"
                 + "".join(rows) + "</table>")
        bottom = (f"<h4>Top-{self.k} recommendations</h4><p>✔ = the held-out test item; bold = a token some history item"
                  " has at the same level</p>"
                  + viz.items_table_html(ds, top, self.ids, limit=self.k, shared=flags, thumb=28, columns={
                      "rank": [f"{r + 1}{' ✔' if i == target else ''}" for r, i in enumerate(top)],
                      "shared tokens": [str(sum(flags[i])) for i in top]}))
        return (f"<div style='display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start'><div>{left}</div>"
                f"<div>{right}</div></div>{bottom}")
