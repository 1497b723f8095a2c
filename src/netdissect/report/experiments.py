"""Plots and pages of the experiments: rotation, comparison of runs, checkpoint series.

Each ``plot_*`` function takes the experiment's result and an optional
matplotlib ``ax`` (without one: a new pyplot figure, for notebooks) and
returns the Axes.  Each ``write_*_page`` function draws on plain
``matplotlib.figure.Figure`` objects (no global pyplot state) and writes a
self-contained HTML page beside its PNG and SVG plots.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ConfigError
from ..labeling.iou import CONVENTIONS
from .plots import (
    CONVENTION_TEXT,
    INK,
    MUTED,
    category_colors,
    check_convention,
    new_axes,
    new_figure,
    plain,
    save_figure,
    style_axes,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..experiments.compare import Comparison
    from ..experiments.rotation import Rotation
    from ..experiments.series import CheckpointSeries

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2430;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
p.lead{color:#6b7280;margin:0 0 16px}
img{max-width:100%;height:auto;background:#fff;border:1px solid #e5e7eb;border-radius:6px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0}
th,td{border:1px solid #e5e7eb;padding:3px 8px;text-align:right}th{background:#f3f4f6}
td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
footer{color:#6b7280;font-size:12px;margin-top:32px}
"""


def _legend(ax) -> None:
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# -- rotation ------------------------------------------------------------------------------
def plot_rotation(rotation: "Rotation", layer: str, *, convention: str = "per-category", ax=None):
    """Unique detectors per category (mean over seeds, stacked) against alpha, with the seeds' spread.

    Parameters
    ----------
    rotation : Rotation
        A rotation run.
    layer : str
        One of its layers.
    convention : str
        ``"per-category"`` or ``"top-label"``.
    ax : matplotlib.axes.Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ConfigError
        For an unknown layer or convention.
    """
    check_convention(convention, CONVENTIONS)
    if layer not in rotation.params["layers"]:
        raise ConfigError(f"layer {layer!r} is not in this rotation run ({', '.join(rotation.params['layers'])})")
    s = rotation.summary(convention)
    s = s[s["layer"] == layer].sort_values("alpha")
    categories = [c for c in rotation.table["category"].drop_duplicates()]
    colors = category_colors(categories)
    ax = new_axes(ax, (5.4, 3.2))
    x = np.arange(len(s))
    bottom = np.zeros(len(s))
    for c in categories:
        values = s[c].to_numpy(dtype=float) if c in s else np.zeros(len(s))
        ax.bar(x, values, 0.62, bottom=bottom, color=colors[c], label=plain(c))
        bottom += values
    n_seeds = len(rotation.params["seeds"])
    if n_seeds > 1:
        ax.errorbar(x, s["total_unique"], yerr=s["total_unique_std"], fmt="none", ecolor=INK, capsize=3, lw=1)
    for xi, total in zip(x, s["total_unique"]):
        ax.annotate(f"{total:.3g}", (xi, total), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7, color=INK)
    ax.set_xticks(x, [f"{a:g}" for a in s["alpha"]])
    ax.set_xlabel("alpha (0: the network's basis, 1: a random rotation)", color=MUTED, fontsize=8)
    ax.set_ylabel("unique detectors")
    spread = f", mean \u00b1 sd of {n_seeds} rotations" if n_seeds > 1 else ""
    ax.set_title(f"{plain(layer)}: unique detectors vs rotation ({convention}{spread})", fontsize=9, loc="left")
    ax.margins(y=0.15)
    style_axes(ax)
    _legend(ax)
    return ax


def _page(title: str, lead: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><main><h1>{html.escape(title)}</h1>"
            f"<p class=\"lead\">{lead}</p>\n" + "\n".join(body)
            + f"\n<footer>Made by netdissect {html.escape(__version__)}.</footer></main></body></html>\n")


def _img(stem: str, alt: str) -> str:
    return f"<img src=\"{html.escape(stem)}.png\" alt=\"{html.escape(alt)}\">"


def _table(frame: pd.DataFrame, floats: str = "{:.3g}") -> str:
    return frame.to_html(index=False, escape=True, float_format=floats.format, border=0)


def write_rotation_page(rotation: "Rotation") -> Path:
    """Write ``RUN_DIR/rotation/index.html`` and its plots; returns the page's path."""
    folder = rotation.run_dir / "rotation"
    folder.mkdir(parents=True, exist_ok=True)
    body = []
    for i, layer in enumerate(rotation.params["layers"]):
        fig, axes = new_figure(11.0, 3.4, ncols=2)
        for ax, convention in zip(axes, CONVENTIONS):
            plot_rotation(rotation, layer, convention=convention, ax=ax)
        stem = f"rotation-{i}"
        save_figure(fig, folder / stem)
        body.append(f"<h2>{html.escape(layer)}</h2>{_img(stem, f'unique detectors of {layer} against alpha')}")
        for convention in CONVENTIONS:
            s = rotation.summary(convention)
            body.append(f"<p>{html.escape(convention)}: {html.escape(CONVENTION_TEXT[convention])}</p>")
            body.append(_table(s[s["layer"] == layer].drop(columns="layer")))
    p = rotation.params
    lead = (f"Each pixel's activation vector rotated by R(alpha) = expm(alpha logm Q), Q uniform on SO(n) "
            f"(method {html.escape(p['method'])}, seeds {html.escape(str(p['seeds']))}), before the thresholds "
            "(Bau et al. 2017, section 3.2). If unique detectors fall as alpha grows, the network's own axes are "
            "more interpretable than random directions of the same space.")
    page = folder / "index.html"
    page.write_text(_page("Random rotation of the basis", lead, body))
    return page


# -- comparison ------------------------------------------------------------------------------
def _columns(comparison: "Comparison") -> list[tuple[str, str]]:
    return list(comparison.detectors[["run", "layer"]].itertuples(index=False, name=None))


def plot_compare_unique(comparison: "Comparison", *, convention: str = "per-category", ax=None):
    """Unique detectors per category for each (run, layer), stacked bars; returns the Axes.

    Raises
    ------
    ConfigError
        For an unknown convention.
    """
    check_convention(convention, CONVENTIONS)
    cols = _columns(comparison)
    t = comparison.unique[comparison.unique["convention"] == convention]
    categories = list(t["category"].drop_duplicates())
    colors = category_colors(categories)
    ax = new_axes(ax, (max(4.0, 1.2 + 0.9 * len(cols)), 3.4))
    x = np.arange(len(cols))
    bottom = np.zeros(len(cols))
    table = t.set_index(["run", "layer", "category"])["unique"]
    for c in categories:
        values = np.array([table.get((r, l, c), 0) for r, l in cols], dtype=float)
        ax.bar(x, values, 0.62, bottom=bottom, color=colors[c], label=plain(c))
        bottom += values
    for xi, total in zip(x, bottom):
        ax.annotate(f"{int(total)}", (xi, total), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color=INK)
    ax.set_xticks(x, [f"{plain(r)}\n{plain(l)}" for r, l in cols], rotation=0 if len(cols) < 5 else 30,
                  ha="center" if len(cols) < 5 else "right")
    ax.set_ylabel("unique detectors")
    ax.set_title(f"Unique detectors per category ({convention})", fontsize=10, loc="left")
    ax.margins(y=0.12)
    style_axes(ax)
    _legend(ax)
    return ax


def plot_compare_share(comparison: "Comparison", ax=None):
    """Share of units that are detectors, per (run, layer); returns the Axes."""
    cols = _columns(comparison)
    ax = new_axes(ax, (max(4.0, 1.2 + 0.9 * len(cols)), 3.0))
    share = comparison.detectors["share"].to_numpy(dtype=float)
    x = np.arange(len(cols))
    ax.bar(x, 100 * share, 0.62, color="#4e79a7")
    for xi, (v, row) in enumerate(zip(share, comparison.detectors.itertuples())):
        ax.annotate(f"{100 * v:.0f}% ({row.detectors}/{row.units})", (xi, 100 * v), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, color=INK)
    ax.set_xticks(x, [f"{plain(r)}\n{plain(l)}" for r, l in cols], rotation=0 if len(cols) < 5 else 30,
                  ha="center" if len(cols) < 5 else "right")
    ax.set_ylabel("detectors (% of units)")
    ax.set_title("Detector share", fontsize=10, loc="left")
    ax.margins(y=0.15)
    style_axes(ax)
    return ax


def plot_compare_iou(comparison: "Comparison", *, bins: int = 30, ax=None):
    """Distribution of each unit's best IoU per (run, layer) (share of units), with the cut-off; returns the Axes."""
    ax = new_axes(ax, (5.6, 3.2))
    iou = comparison.best_iou
    top = max(float(iou["iou"].max()) if len(iou) else 0.1, 0.1)
    edges = np.linspace(0, top, bins + 1)
    for r, l in _columns(comparison):
        v = iou[(iou["run"] == r) & (iou["layer"] == l)]["iou"].to_numpy(dtype=float)
        weights = np.full(len(v), 100.0 / max(len(v), 1))
        ax.hist(v, edges, weights=weights, histtype="step", lw=1.4, label=f"{plain(r)} {plain(l)}")
    cut = comparison.runs[0].iou_threshold
    ax.axvline(cut, color=MUTED, ls="--", lw=1)
    ax.set_xlabel("best IoU of a unit")
    ax.set_ylabel("units (%)")
    ax.set_title("Best IoU per unit", fontsize=10, loc="left")
    style_axes(ax)
    ax.legend(frameon=False, fontsize=7)
    return ax


def write_compare_page(comparison: "Comparison", out: Path) -> Path:
    """Write ``out/index.html`` and its plots (``out/plots/``); returns the page's path."""
    folder = Path(out) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    cols = _columns(comparison)
    width = max(5.0, 1.4 + 0.9 * len(cols))
    fig, axes = new_figure(2 * width + 1.5, 3.6, ncols=2)
    for ax, convention in zip(axes, CONVENTIONS):
        plot_compare_unique(comparison, convention=convention, ax=ax)
    save_figure(fig, folder / "unique")
    fig, (a, b) = new_figure(width + 6.0, 3.4, ncols=2)
    plot_compare_share(comparison, ax=a)
    plot_compare_iou(comparison, ax=b)
    save_figure(fig, folder / "share-iou")
    body = ["<h2>Unique detectors per category</h2>", _img("plots/unique", "unique detectors per run and layer")]
    for convention in CONVENTIONS:
        t = comparison.unique[comparison.unique["convention"] == convention]
        wide = t.pivot_table(index=["run", "layer"], columns="category", values="unique", sort=False).reset_index()
        wide.columns.name = None
        wide["total"] = wide.drop(columns=["run", "layer"]).sum(axis=1)
        body.append(f"<p><b>{html.escape(convention)}</b>: {html.escape(CONVENTION_TEXT[convention])}</p>")
        body.append(_table(wide))
    body += ["<h2>Detector share and best IoU</h2>", _img("plots/share-iou", "detector share and IoU"),
             _table(comparison.detectors)]
    body.append("<h2>Concepts gained and lost</h2>")
    ch = comparison.changes
    if ch.empty:
        body.append("<p>No change (or a single run).</p>")
    else:
        grouped = (ch.groupby(["before", "after", "layer", "convention", "change"], sort=False)["concept"]
                   .agg(lambda s: ", ".join(s)).reset_index())
        counts = ch.groupby(["before", "after", "layer", "convention", "change"], sort=False).size()
        grouped.insert(5, "count", counts.to_numpy())
        body.append(_table(grouped))
    lead = ("Runs side by side (Bau et al. 2017, section 4): " + ", ".join(html.escape(n) for n in comparison.names)
            + ". Concepts gained and lost are counted from each run to the next, per shared layer and over all "
              "layers.")
    page = Path(out) / "index.html"
    page.write_text(_page("Comparison of dissections", lead, body))
    return page


# -- checkpoint series ------------------------------------------------------------------------
def plot_series(series: "CheckpointSeries", layer: str, *, convention: str = "per-category", ax=None):
    """Unique detectors per category against the training step (log x-axis); returns the Axes.

    Raises
    ------
    ConfigError
        For an unknown layer or convention.
    """
    check_convention(convention, CONVENTIONS)
    if layer not in series.layers:
        raise ConfigError(f"layer {layer!r} is not in this series ({', '.join(series.layers)})")
    t = series.table[(series.table["layer"] == layer) & (series.table["convention"] == convention)]
    categories = list(t["category"].drop_duplicates())
    colors = category_colors(categories)
    ax = new_axes(ax, (5.6, 3.2))
    for c in categories:
        s = t[t["category"] == c].sort_values("step")
        ax.plot(s["step"], s["unique"], marker="o", ms=3, lw=1.4, color=colors[c], label=plain(c))
    total = t.drop_duplicates(["step"]).sort_values("step")
    ax.plot(total["step"], total["total_unique"], marker="s", ms=3, lw=1.4, color=INK, ls="--", label="total")
    if (t["step"] > 0).all():
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("unique detectors")
    ax.set_title(f"{plain(layer)}: unique detectors during training ({convention})", fontsize=9, loc="left")
    style_axes(ax)
    _legend(ax)
    return ax


def write_series_page(series: "CheckpointSeries") -> Path:
    """Write ``OUT/series/index.html`` and its plots; returns the page's path."""
    folder = series.out / "series"
    folder.mkdir(parents=True, exist_ok=True)
    body: list[str] = []
    for i, layer in enumerate(series.layers):
        fig, axes = new_figure(11.5, 3.4, ncols=2)
        for ax, convention in zip(axes, CONVENTIONS):
            plot_series(series, layer, convention=convention, ax=ax)
        save_figure(fig, folder / f"series-{i}")
        t = series.table[(series.table["layer"] == layer) & (series.table["convention"] == "per-category")]
        wide = t.pivot_table(index=["step", "run"], columns="category", values="unique", sort=True).reset_index()
        wide.columns.name = None
        body += [f"<h2>{html.escape(layer)}</h2>", _img(f"series-{i}", f"unique detectors of {layer}"),
                 "<p>per-category counts:</p>", _table(wide)]
    lead = (f"{len(series.steps)} checkpoints (steps {html.escape(str(series.steps))}), each dissected into its own "
            "sub-run (Bau et al. 2017, section 4.3).")
    page = folder / "index.html"
    page.write_text(_page("Unique detectors during training", lead, body))
    return page


__all__: list[Any] = ["plot_rotation", "write_rotation_page", "plot_compare_unique", "plot_compare_share",
                      "plot_compare_iou", "write_compare_page", "plot_series", "write_series_page"]
