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

__all__ = ["figures_dir", "png_available", "save_figure", "show", "CATEGORY_COLORS", "dial_figure"]

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


def show(fig, name: str, directory: str | Path | None = None, **kwargs):
    """Save the figure and display it statically in a notebook (PNG if made, else the live figure)."""
    paths = save_figure(fig, name, directory, **kwargs)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is not None:
            if "png" in paths:
                display(Image(filename=str(paths["png"])))
            else:
                fig.show()
    except ImportError:  # pragma: no cover
        pass
    return paths


def learning_curves(runs: dict, metric: str = "NDCG@10", title: str = "Validation NDCG@10 during training"):
    """Validation ``metric`` of each model against epoch (left) and against wall-clock seconds (right).

    ``runs``: model name -> a :class:`~qbert4rec_lib.pipeline.ModelRun` (or anything with ``curves()``: phase ->
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


def dial_figure(points: list[dict], metric: str = "NDCG@10"):
    """Warm-user and cold-user test ``metric`` of each model against the generator's ``id_driven`` dial (the output
    of :func:`qbert4rec_lib.coldstart.run_dial`): where content-driven models and ID models cross."""
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
