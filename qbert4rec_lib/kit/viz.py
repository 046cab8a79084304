"""Figures: one place that saves every plotly figure as standalone HTML + PNG under ``figures/``.

PNG export goes through kaleido, which needs a Chrome/Chromium binary (Debian's ``chromium``
package; kaleido cannot download one offline). When no browser is found the kit still writes
the HTML and says plainly that the PNG was skipped. Set ``QBERT4REC_PNG=0`` to skip PNGs.

:func:`show` is what notebooks call: it saves the figure and displays a *static* PNG (so the
executed notebook renders anywhere, including on GitHub and in nbval), falling back to the
interactive figure when no PNG could be made. The figures themselves are built in :mod:`~qbert4rec_lib.kit.plots`;
the HTML item cards and tables (thumbnails, semantic-ID tokens) are here.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["figures_dir", "png_available", "save_figure", "show", "show_markdown", "FigurePaths", "CATEGORY_COLORS",
           "label_breakdown_html", "thumbnail_html", "item_card_html", "neighbours_html", "semantic_id_html",
           "items_table_html"]

# a qualitative palette with enough distinct colours for top-level categories
CATEGORY_COLORS = [
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
    "#9D755D", "#BAB0AC", "#1B9E77", "#D95F02", "#7570B3", "#E7298A", "#66A61E", "#E6AB02",
]

_PNG_STATE: dict[str, object] = {}


def figures_dir(path: str | Path | None = None) -> Path:
    """``path`` or ``$QBERT4REC_FIGURES`` or ``figures/`` at the repository root."""
    if path is None:
        from .reproduce import REPO

        path = os.environ.get("QBERT4REC_FIGURES") or REPO / "figures"
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
