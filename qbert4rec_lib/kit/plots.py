"""The kit's plotly figures, one builder per kind of plot the notebooks show (learning curves, agreement heatmaps,
embedding scatter panels, grouped bars, the mask grid, the stage diagram, ...). Each returns a figure; saving and
showing it is :mod:`~qbert4rec_lib.kit.viz`'s (``viz.show(fig, name)``).
"""
from __future__ import annotations

from .viz import CATEGORY_COLORS

__all__ = ["learning_curves", "agreement_heatmap", "neighbours_figure", "scatter_panels", "dial_figure", "grouped_bars", "cold_start_bars", "phase_curves", "mask_grid_figure", "strategy_curves", "box_figure", "stages_diagram", "residual_toy_figure"]


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
    names = sorted(points[0]["report"]["mean_std"]) if points else []  # one order (and colour) however the points were saved
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
