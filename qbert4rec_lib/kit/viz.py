"""Figures: one place that saves every plotly figure as standalone HTML + PNG under ``figures/``.

PNG export goes through kaleido, which needs a Chrome/Chromium binary (Debian's ``chromium``
package; kaleido cannot download one offline). When no browser is found the kit still writes
the HTML and says plainly that the PNG was skipped. Set ``QBERT4REC_PNG=0`` to skip PNGs.

:func:`show` is what notebooks call: it saves the figure and displays a *static* PNG (so the
executed notebook renders anywhere, including on GitHub and in nbval), falling back to the
interactive figure when no PNG could be made.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["figures_dir", "png_available", "save_figure", "show", "show_markdown", "FigurePaths", "agreement_heatmap",
           "label_breakdown_html", "thumbnail_html", "item_card_html", "neighbours_html",
           "neighbours_figure", "scatter_panels", "CATEGORY_COLORS", "dial_figure", "semantic_id_html",
           "items_table_html", "learning_curves", "grouped_bars", "cold_start_bars", "phase_curves",
           "mask_grid_figure", "strategy_curves", "box_figure", "stages_diagram"]

# a qualitative palette with enough distinct colours for top-level categories
CATEGORY_COLORS = [
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
    "#9D755D", "#BAB0AC", "#1B9E77", "#D95F02", "#7570B3", "#E7298A", "#66A61E", "#E6AB02",
]

_PNG_STATE: dict[str, object] = {}


def figures_dir(path: str | Path | None = None) -> Path:
    """``path`` or ``$QBERT4REC_FIGURES`` or ``figures/`` at the repository root."""
    if path is None:
        path = os.environ.get("QBERT4REC_FIGURES") or Path(__file__).resolve().parent.parent / "figures"
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _browser() -> str | None:
    for env in ("BROWSER_PATH",):
        if os.environ.get(env) and Path(os.environ[env]).exists():
            return os.environ[env]
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _start_png_server() -> None:
    """Keep one headless browser alive for all PNG exports (~0.2 s per figure instead of ~2 s)."""
    import atexit
    import warnings

    import kaleido

    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
    try:
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(_stop_png_server)
    except Exception:  # pragma: no cover - fall back to one browser per figure
        pass


def _stop_png_server() -> None:
    try:
        import kaleido

        kaleido.stop_sync_server(silence_warnings=True)
    except Exception:  # pragma: no cover
        pass


def png_available() -> bool:
    """True when PNG export can run (kaleido installed and a Chromium/Chrome binary found)."""
    if os.environ.get("QBERT4REC_PNG", "1") == "0":
        return False
    if "ok" not in _PNG_STATE:
        ok = False
        browser = _browser()
        if browser:
            os.environ.setdefault("BROWSER_PATH", browser)
            try:
                import kaleido  # noqa: F401

                ok = True
            except Exception:
                ok = False
        if ok:
            _start_png_server()
        _PNG_STATE["ok"] = ok
        if not ok and not _PNG_STATE.get("warned"):
            print("note: no Chromium/Chrome found (or kaleido missing): figures are written as HTML only, PNGs skipped."
                  " Install Debian's 'chromium' package to get PNGs.")
            _PNG_STATE["warned"] = True
    return bool(_PNG_STATE["ok"])


def save_figure(fig, name: str, directory: str | Path | None = None, *, width: int = 900, height: int = 520,
                scale: float = 1.5) -> dict[str, Path]:
    """Write ``<name>.html`` (offline: it loads ``plotly.min.js`` from the same folder) and, when possible, ``<name>.png``. Returns the paths."""
    out = figures_dir(directory)
    paths: dict[str, Path] = {}
    html = out / f"{name}.html"
    tmp = html.with_suffix(".html.tmp")
    fig.write_html(str(tmp), include_plotlyjs="directory", full_html=True)  # plotly.min.js written once beside it
    os.replace(tmp, html)
    paths["html"] = html
    if png_available():
        png = out / f"{name}.png"
        tmp_png = out / f".{name}.tmp.png"
        try:
            fig.write_image(str(tmp_png), width=width, height=height, scale=scale)
            os.replace(tmp_png, png)
            paths["png"] = png
        except Exception as exc:  # pragma: no cover - depends on the browser
            print(f"note: PNG export of {name} failed ({type(exc).__name__}: {exc}); HTML written.")
            if tmp_png.exists():
                tmp_png.unlink()
    return paths


class FigurePaths(dict):
    """``{"html": Path, "png": Path}`` as returned by :func:`show`; shows nothing when it ends a notebook cell."""

    def _ipython_display_(self):  # IPython: no Out[] echo of PosixPath dicts
        pass


STATIC_ENV = "QBERT4REC_STATIC_FIGURES"  # "1": notebooks show PNGs (set by `reproduce` for its papermill kernels)


def interactive() -> bool:
    """Whether :func:`show` displays live plotly figures (hover, zoom): yes in a notebook opened in JupyterLab, no in
    batch runs (``reproduce`` / papermill set ``QBERT4REC_STATIC_FIGURES=1``), which show the saved PNG instead, so
    that executed notebooks stay small and readable anywhere."""
    return os.environ.get(STATIC_ENV, "") != "1"


def show(fig, name: str, directory: str | Path | None = None, **kwargs):
    """Save the figure (HTML, and PNG when possible) and display it: live and interactive in a notebook front end,
    the PNG in batch runs (see :func:`interactive`)."""
    paths = save_figure(fig, name, directory, **kwargs)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is not None:
            if interactive():
                fig.show()
            elif "png" in paths:
                display(Image(filename=str(paths["png"])))
            else:
                fig.show()
    except ImportError:  # pragma: no cover
        pass
    return FigurePaths(paths)


def learning_curves(runs: dict, metric: str = "NDCG@10", title: str = "Validation NDCG@10 during training"):
    """Validation ``metric`` of each model against epoch (left) and against wall-clock seconds (right).

    ``runs``: model name -> a :class:`~qbert4rec_lib.experiments.runs.ModelRun` (or anything with ``curves()``: phase ->
    history). Phases (Q-Bert4Rec's pretraining, then fine-tuning) are drawn one after another; seconds count
    training and validation time, so a model that validates often pays for it on the right-hand panel.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("against epoch", "against wall-clock seconds"),
                        horizontal_spacing=0.08)
    for i, (name, run) in enumerate(runs.items()):
        epochs, seconds, values, offset, clock = [], [], [], 0, 0.0
        for hist in run.curves().values():
            for h in hist:
                clock += (h.get("seconds") or 0.0) + (h.get("valid_seconds") or 0.0)
                if h.get("valid") and metric in h["valid"]:
                    epochs.append(h["epoch"] + offset)
                    seconds.append(clock)
                    values.append(h["valid"][metric])
            offset += max((h["epoch"] for h in hist), default=0)
        if not values:
            continue
        color = CATEGORY_COLORS[i % len(CATEGORY_COLORS)]
        fig.add_scatter(x=epochs, y=values, mode="lines", name=name, line_color=color, row=1, col=1)
        fig.add_scatter(x=seconds, y=values, mode="lines", name=name, line_color=color, showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="epoch (Q-Bert4Rec: pretraining, then fine-tuning)", row=1, col=1)
    fig.update_xaxes(title_text="seconds (training + validation)", row=1, col=2)
    fig.update_yaxes(title_text=f"validation {metric}", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return fig


def show_markdown(text: str) -> None:
    """Display Markdown (e.g. a ``| a | b |`` table) rendered in a notebook; print it elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:  # pragma: no cover
        pass
    print(text)


def agreement_heatmap(agreement, names, chance: float, k: int, title: str | None = None):
    """Neighbour agreement between modalities, read against chance.

    ``agreement[i][j]``: the share of an item's ``k`` nearest neighbours that modalities ``i`` and ``j`` have in common;
    ``chance``: the same share for two random neighbour lists (``k / (N - 1)``). The diagonal (always 1) is left blank so
    it does not swamp the colour scale, which runs from 0 to the largest off-diagonal value; each cell shows its value and
    its multiple of chance, and the colour bar marks the chance level.
    """
    import numpy as np
    import plotly.graph_objects as go

    z = np.asarray(agreement, dtype=float)
    n = len(names)
    off = ~np.eye(n, dtype=bool)
    zmax = max(float(np.nanmax(z[off])) if off.any() else 1.0, 2 * chance)
    text = [["" if i == j else f"{z[i, j]:.3f}<br>{z[i, j] / chance:.1f}× chance" for j in range(n)] for i in range(n)]
    fig = go.Figure(go.Heatmap(
        z=np.where(off, z, np.nan), x=list(names), y=list(names), zmin=0, zmax=zmax, colorscale="Blues",
        text=text, texttemplate="%{text}", hoverongaps=False,
        colorbar=dict(title="agreement", tickvals=[0, chance, zmax], ticktext=["0", f"chance {chance:.3f}", f"{zmax:.3f}"])))
    fig.update_layout(title=title or (f"Neighbour agreement between modalities (k = {k})<br><sup>chance = k/(N−1) = {chance:.3f};"
                                        " the diagonal (always 1) is left blank</sup>"),
                      template="plotly_white", yaxis_autorange="reversed")
    return fig


def label_breakdown_html(columns: dict, item_ids, top: int = 3) -> str:
    """A small HTML table: for the items ``item_ids`` (1-based), each attribute's most common values with their shares.

    ``columns``: attribute name -> a value per item (0-based sequence, e.g. ``ds.items.brands``).
    """
    import html
    from collections import Counter

    ids = [int(i) for i in item_ids]
    if not ids:
        return "<p><i>no items</i></p>"
    rows = []
    for name, values in columns.items():
        counts = Counter(str(values[i - 1]) for i in ids)
        shown = ", ".join(f"{html.escape(v)} <b>{c / len(ids):.0%}</b>" for v, c in counts.most_common(top))
        more = f", … ({len(counts) - top} more)" if len(counts) > top else ""
        rows.append(f"<tr><th style='text-align:left'>{html.escape(name)}</th><td style='text-align:left'>{shown}{more}</td></tr>")
    return (f"<table><tr><th colspan='2' style='text-align:left'>{len(ids)} items — most common values</th></tr>"
            + "".join(rows) + "</table>")


def thumbnail_html(path, width: int = 48) -> str:
    """An inline ``<img>`` (base64) of an item's image file, or ``""`` when there is none."""
    import base64

    if path and Path(path).is_file():
        return f'<img src="data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}" width="{width}">'
    return ""


def item_card_html(ds, item: int, score: float | None = None, width: int = 48) -> str:
    """One item as a table cell: thumbnail, id, title, category path and (optionally) a cosine score."""
    import html

    cats = " > ".join(ds.items.categories[item - 1])
    s = "" if score is None else f"<br><small>cos {score:.2f}</small>"
    return (f"<td style='vertical-align:top;text-align:left'>{thumbnail_html(ds.items.images[item - 1], width)}<br><b>{item}</b> "
            f"{html.escape(ds.items.titles[item - 1][:60])}<br><small>{html.escape(cats)}</small>{s}</td>")


def semantic_id_html(tokens, shared=None) -> str:
    """A semantic ID as text, e.g. ``(12 <b>3</b> 40 0)``: the tokens whose ``shared`` flag is true are bold."""
    shared = list(shared) if shared is not None else [False] * len(tokens)
    return "(" + " ".join(f"<b>{int(t)}</b>" if s else str(int(t)) for t, s in zip(tokens, shared + [False] * len(tokens))) + ")"


def items_table_html(ds, item_ids, table=None, limit: int = 12, thumb: int = 40, columns: dict | None = None,
                     shared=None) -> str:
    """Items as an HTML table: thumbnail, id, title, category path and (with ``table``, a
    :class:`~qbert4rec_lib.semantic.quantize.SemanticIDTable` or its ``ids`` array) the semantic ID.

    ``columns``: extra column name -> one value (HTML) per listed item, shown first; ``shared``: item -> per-token
    flags, those tokens in bold. Lists longer than ``limit`` end with "... and n more".
    """
    import html

    ids = [int(i) for i in item_ids]
    shown = ids[:limit]
    array = None if table is None else getattr(table, "ids", table)
    extra = {name: list(values)[:len(shown)] for name, values in (columns or {}).items()}
    head = "".join(f"<th>{html.escape(n)}</th>" for n in extra) + "<th></th><th>item</th><th>title</th><th>category</th>"
    head += "<th>semantic ID</th>" if array is not None else ""
    rows = []
    for r, i in enumerate(shown):
        cells = "".join(f"<td>{extra[n][r]}</td>" for n in extra)
        cells += (f"<td>{thumbnail_html(ds.items.images[i - 1], thumb)}</td><td>{i}</td>"
                  f"<td style='text-align:left'>{html.escape(ds.items.titles[i - 1][:70])}</td>"
                  f"<td style='text-align:left'>{html.escape(' > '.join(ds.items.categories[i - 1]))}</td>")
        if array is not None:
            cells += f"<td>{semantic_id_html(array[i - 1], (shared or {}).get(i))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    more = f"<p><i>... and {len(ids) - limit} more</i></p>" if len(ids) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def neighbours_html(ds, item: int, neighbours: dict) -> str:
    """The query item, then one row per modality with its nearest items (``{modality: [(item, cosine), ...]}``)."""
    rows = [f"<tr><th>query</th>{item_card_html(ds, item)}</tr>"]
    rows += [f"<tr><th>{name}</th>{''.join(item_card_html(ds, i, s) for i, s in near) or '<td><i>item lacks this modality</i></td>'}</tr>"
             for name, near in neighbours.items()]
    return "<table>" + "".join(rows) + "</table>"


def neighbours_figure(ds, item: int, neighbours: dict, k: int = 5):
    """A saved-figure version of :func:`neighbours_html`: one row per modality, the query first (images if the dataset has
    them, else a table of titles)."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not any(ds.items.images):
        fig = go.Figure(go.Table(header=dict(values=["modality"] + [f"#{r + 1}" for r in range(k)]),
                                 cells=dict(values=[list(neighbours)] + [[ds.items.titles[near[r][0] - 1][:40] if len(near) > r else ""
                                                                          for near in neighbours.values()] for r in range(k)])))
        fig.update_layout(title=f"Nearest neighbours of item {item}: {ds.items.titles[item - 1][:60]}")
        return fig
    from PIL import Image

    width, titles = k + 1, []
    for near in neighbours.values():
        ids = [item] + [j for j, _ in near]
        titles += [ds.items.titles[i - 1][:22] for i in ids] + [""] * (width - len(ids))
    fig = make_subplots(rows=len(neighbours), cols=width, horizontal_spacing=0.01, vertical_spacing=0.08, subplot_titles=titles)
    for r, (name, near) in enumerate(neighbours.items(), start=1):
        for c, i in enumerate([item] + [j for j, _ in near], start=1):
            if ds.items.images[i - 1]:
                fig.add_trace(go.Image(z=np.asarray(Image.open(ds.items.images[i - 1]).convert("RGB"))), row=r, col=c)
        fig.update_yaxes(title_text=name, row=r, col=1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_annotations(font_size=9)
    fig.update_layout(title=f"Item {item} (first column) and its nearest neighbours by modality", height=220 * len(neighbours))
    return fig


def scatter_panels(panels: dict, title: str = "", order=None, colors: dict | None = None, size: int = 4):
    """2-D maps side by side, one legend: ``panels`` maps a subplot title to ``(xy [n, 2], labels [n], hover [n])``.

    Points are coloured by label (``colors``: label -> colour, else the kit's palette in ``order``); hovering shows the
    ``hover`` text (e.g. the item title). Axes carry no ticks: UMAP coordinates have no units.
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    order = list(order) if order is not None else sorted({str(v) for _, labels, _ in panels.values() for v in labels})
    colors = colors or {c: CATEGORY_COLORS[i % len(CATEGORY_COLORS)] for i, c in enumerate(order)}
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels))
    shown = set()
    for col, (xy, labels, hover) in enumerate(panels.values(), start=1):
        labels, hover = np.asarray([str(v) for v in labels]), np.asarray(hover, dtype=object)
        for c in order:
            sel = labels == c
            if sel.any():
                fig.add_trace(go.Scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=c, legendgroup=c,
                                         showlegend=c not in shown, marker=dict(size=size, color=colors[c]), text=hover[sel],
                                         hovertemplate="%{text}<extra>" + c + "</extra>"), row=1, col=col)
                shown.add(c)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, template="plotly_white")
    return fig


def dial_figure(points: list[dict], metric: str = "NDCG@10"):
    """Warm-user and cold-user test ``metric`` of each model against the generator's ``id_driven`` dial (the output
    of :func:`qbert4rec_lib.experiments.coldstart.run_dial`): where content-driven models and ID models cross."""
    from plotly.subplots import make_subplots

    xs = [p["id_driven"] for p in points]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("warm users (test item seen in training)",
                                                        "cold users (test item new)"), horizontal_spacing=0.08)
    names = list(points[0]["report"]["mean_std"]) if points else []
    for i, name in enumerate(names):
        color = CATEGORY_COLORS[i % len(CATEGORY_COLORS)]
        for col, group in ((1, "warm"), (2, "cold")):
            stats = [p["report"]["mean_std"][name][group][metric] for p in points]
            several = len(points[0]["report"]["seeds"]) > 1
            fig.add_scatter(x=xs, y=[s["mean"] for s in stats], mode="lines+markers", name=name, line_color=color,
                            showlegend=col == 1, row=1, col=col,
                            error_y=dict(type="data", array=[s["std"] for s in stats]) if several else None)
    for col in (1, 2):
        fig.update_xaxes(title_text="id_driven (0 = content-driven, 1 = ID-driven)", row=1, col=col)
    fig.update_yaxes(title_text=f"test {metric}", row=1, col=1)
    fig.update_layout(title=f"When do semantic IDs help? test {metric} along the content-to-ID dial",
                      template="plotly_white", legend=dict(orientation="h", y=-0.25))
    return fig


def grouped_bars(groups: dict, title: str, yaxis_title: str, errors: dict | None = None, x_wrap: bool = False):
    """Grouped bars: ``groups`` maps a series name to ``{x label: value}`` (one colour per series, in order);
    ``errors``: the same shape with standard deviations (error bars), or ``None``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for j, (series, values) in enumerate(groups.items()):
        err = None if errors is None else dict(type="data", array=list(errors[series].values()))
        xs = [x.replace(" (", "<br>(") if x_wrap else x for x in values]
        fig.add_bar(name=series, x=xs, y=list(values.values()), error_y=err, marker_color=CATEGORY_COLORS[j % len(CATEGORY_COLORS)])
    fig.update_layout(barmode="group", title=title, yaxis_title=yaxis_title, template="plotly_white")
    return fig


def cold_start_bars(report, names, title: str):
    """Cold HR@10, cold HR@50 and warm HR@10 of each row of a cold-start report (means over seeds; error bars = one
    standard deviation when there are several seeds)."""
    import numpy as np

    groups, errors = {}, {}
    for metric, label in (("HR@10", "cold HR@10"), ("HR@50", "cold HR@50"), ("HR@10", "warm HR@10")):
        group = label.split()[0]
        ys = {n: [r[group][metric] for r in report.rows[n]] for n in names}
        groups[label] = {n: float(np.mean(y)) for n, y in ys.items()}
        errors[label] = {n: float(np.std(y, ddof=1)) if len(y) > 1 else 0.0 for n, y in ys.items()}
    return grouped_bars(groups, title, "hit rate", errors if len(report.seeds) > 1 else None, x_wrap=True)


def phase_curves(curves: dict, metric: str = "NDCG@10", title: str = "", continuous: bool = True):
    """Validation ``metric`` per epoch of training phases (``phase -> history``), one line each. ``continuous``: later
    phases continue the epoch axis of earlier ones; otherwise every phase counts its own epochs from 1 in order of
    its entries (``i + 1``)."""
    import plotly.graph_objects as go

    fig, offset = go.Figure(), 0
    for k, (phase, hist) in enumerate(curves.items()):
        if continuous:
            pts = [(h["epoch"] + offset, h["valid"][metric]) for h in hist if h.get("valid")]
            offset += max((h["epoch"] for h in hist), default=0)
        else:
            pts = [(i + 1, h["valid"][metric]) for i, h in enumerate(hist) if h.get("valid")]
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=phase,
                        line_color=CATEGORY_COLORS[k % len(CATEGORY_COLORS)])
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=metric, template="plotly_white")
    return fig


def mask_grid_figure(grid, labels, example, title: str):
    """Rows of masked positions (``grid[r, t]`` 1 = masked) over one sequence whose item ids label the cells."""
    import numpy as np
    import plotly.graph_objects as go

    grid = np.asarray(grid, dtype=float)
    text = [[str(i) for i in example] for _ in labels]
    fig = go.Figure(go.Heatmap(z=grid[::-1], x=list(range(len(example))), y=list(labels)[::-1], text=text, texttemplate="%{text}",
                               colorscale=[[0, "#F2F2F2"], [1, CATEGORY_COLORS[0]]], showscale=False, xgap=2, ygap=2))
    fig.update_layout(title=title, xaxis_title="position in the sequence (0 = oldest)", template="plotly_white", height=560)
    return fig


def strategy_curves(curves: dict, metric: str = "NDCG@10"):
    """Per mask strategy: training loss (solid, left axis) and validation ``metric`` (dotted, right axis) per epoch."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, (strategy, hist) in enumerate(curves.items()):
        color = CATEGORY_COLORS[k % len(CATEGORY_COLORS)]
        fig.add_scatter(x=[h["epoch"] for h in hist], y=[h["train_loss"] for h in hist], name=f"{strategy} (loss)", line_color=color)
        fig.add_scatter(x=[h["epoch"] for h in hist], y=[h["valid"][metric] for h in hist], name=f"{strategy} ({metric})",
                        line=dict(color=color, dash="dot"), yaxis="y2")
    fig.update_layout(title=f"Pretraining per mask strategy: training loss (solid) and validation {metric} (dotted)",
                      xaxis=dict(title="epoch", dtick=1), yaxis_title="training loss", template="plotly_white",
                      yaxis2=dict(title=f"validation {metric}", overlaying="y", side="right"),
                      legend=dict(font=dict(size=10), orientation="h", y=-0.25), margin=dict(r=90))
    return fig


def box_figure(values: dict, title: str, yaxis_title: str):
    """One box per entry of ``values`` (name -> numbers), the mean marked, the kit's palette in order."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, (name, ys) in enumerate(values.items()):
        fig.add_box(y=ys, name=name, marker_color=CATEGORY_COLORS[k % len(CATEGORY_COLORS)], boxmean=True)
    fig.update_layout(title=title, yaxis_title=yaxis_title, template="plotly_white")
    return fig


def stages_diagram():
    """The overview diagram of notebook 00 (and the README): item data -> features -> the three stages."""
    import plotly.graph_objects as go

    boxes = [
        (0.00, "Item data", "text · image · interactions", "#BAB0AC"),
        (0.20, "Features", "MiniLM text · CLIP image ·\nstructural (PPMI-SVD)", "#72B7B2"),
        (0.40, "Stage 1: injection", "ID query ⟶ gated cross-modal\ntransformer · contrastive loss", "#4C78A8"),
        (0.60, "Stage 2: RQ-VAE", "fused vector ⟶ (c1, c2, c3, d)\nsemantic ID", "#F58518"),
        (0.80, "Stage 3: Q-BERT", "multi-mask pretraining ⟶\nfine-tuning ⟶ full ranking", "#54A24B"),
    ]
    fig = go.Figure()
    for x, title, sub, colour in boxes:
        fig.add_shape(type="rect", x0=x, x1=x + 0.17, y0=0.25, y1=0.75, fillcolor=colour, opacity=0.9, line_width=0)
        fig.add_annotation(x=x + 0.085, y=0.62, text=f"<b>{title}</b>", showarrow=False, font=dict(color="white", size=14))
        fig.add_annotation(x=x + 0.085, y=0.42, text=sub.replace("\n", "<br>"), showarrow=False,
                           font=dict(color="white", size=11))
    for x, _, _, _ in boxes[:-1]:
        fig.add_annotation(x=x + 0.20, y=0.5, ax=x + 0.17, ay=0.5, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=2, arrowcolor="#444")
    fig.update_layout(title="Q-Bert4Rec in three stages (what flows between the library modules)",
                      xaxis=dict(visible=False, range=[-0.01, 0.98]), yaxis=dict(visible=False, range=[0.1, 0.9]),
                      template="plotly_white", height=320, width=1100, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def residual_toy_figure(points, code1, book1, code2, book2):
    """Two levels of residual quantization on 2-D toy points: left, the points coloured by their level-1 code with the
    level-1 codewords (crosses); right, what level 1 left over (``points - book1[code1]``) coloured by the level-2 code
    with the level-2 codewords. Notebook 04 builds the inputs by hand before calling the library's RQ-VAE."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    points, book1, book2 = np.asarray(points), np.asarray(book1), np.asarray(book2)
    residual = points - book1[code1]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("level 1: points and codewords e¹",
                                                        "level 2: residuals r₁ = z − e¹ and codewords e²"))
    for col, (xy, codes, book) in enumerate([(points, code1, book1), (residual, code2, book2)], start=1):
        for k in range(len(book)):
            sel = np.asarray(codes) == k
            color = CATEGORY_COLORS[k % len(CATEGORY_COLORS)]
            fig.add_scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", marker=dict(size=5, color=color, opacity=0.6),
                            name=f"code {k}", legendgroup=f"code {k}", showlegend=col == 1, row=1, col=col)
            fig.add_scatter(x=[book[k, 0]], y=[book[k, 1]], mode="markers", showlegend=False, row=1, col=col,
                            marker=dict(size=16, symbol="x", color=color, line=dict(width=2, color="black")))
    fig.update_layout(title="Residual quantization by hand: each level quantizes what the previous one left over",
                      template="plotly_white")
    return fig
