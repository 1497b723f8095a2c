"""Plots of a dissection, with matplotlib: usable from Python and written into the report.

Every function takes a :class:`netdissect.Dissection` and an optional
matplotlib ``ax``; without one it makes a new figure through pyplot (so it
shows in a notebook) and returns the Axes (``ax.figure`` is the Figure).
The report draws on ``matplotlib.figure.Figure`` objects directly, so writing
a report touches no global pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..labeling.iou import is_detector

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..results import DissectionData as Dissection

#: the two conventions for counting unique detectors, with one sentence each
CONVENTION_TEXT = {
    "per-category": "a unit counts in every category whose best concept in that category has IoU above "
                    "the cut-off (the convention of the CVPR 2017 tables).",
    "top-label": "a unit counts only in the category of its single best label, when that label's IoU is above "
                 "the cut-off (the convention of the original report's bar chart).",
}

#: fixed colours of Broden's categories; others take FALLBACK colours in order
CATEGORY_COLORS = {
    "object": "#4e79a7",
    "part": "#f28e2b",
    "scene": "#59a14f",
    "material": "#b07aa1",
    "texture": "#e15759",
    "color": "#76b7b2",
}
FALLBACK_COLORS = ("#edc948", "#9c755f", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8", "#8cd17d")
INK = "#1f2430"
MUTED = "#6b7280"
ACCENT = "#4f46e5"
GRID = "#e5e7eb"


def category_colors(categories: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A colour per category: Broden's categories keep theirs, others get the fallbacks in order."""
    out, k = {}, 0
    for c in categories:
        if c in CATEGORY_COLORS:
            out[c] = CATEGORY_COLORS[c]
        else:
            out[c] = FALLBACK_COLORS[k % len(FALLBACK_COLORS)]
            k += 1
    return out


def plain(text: Any) -> str:
    """Text from data as matplotlib shows it literally (no mathtext)."""
    return str(text).replace("$", r"\$")


def new_axes(ax, figsize):
    """``ax``, or the axes of a new constrained-layout figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def style_axes(ax) -> None:
    """The report's plot style: no top/right spines, muted ticks, light horizontal grid."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(colors=INK, labelsize=9, length=3, color="#9ca3af")
    ax.yaxis.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    ax.title.set_color(INK)


def check_convention(convention: str, allowed: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``convention`` is one of ``allowed``."""
    if convention not in allowed:
        raise ConfigError(f"convention {convention!r} is not one of {allowed}")


def _check_layer(result: "Dissection", layer: str) -> None:
    result.layer_dir(layer)  # raises a ConfigError listing the layers


def plot_categories(result: "Dissection", layer: str | None = None, *, convention: str | None = None,
                    ax: "Axes | None" = None) -> "Axes":
    """Bar chart of unique detectors per category.

    With ``layer``: one group of bars per category, for both conventions by
    default (``convention="both"``: solid = per-category, light =
    top-label) or the one named.  Without: one bar per layer in each
    category group, for one convention (default ``"per-category"``).

    Parameters
    ----------
    result : Dissection
        The dissection.
    layer : str, optional
        One layer; None: every layer.
    convention : str, optional
        "per-category" or "top-label" (and, with ``layer``, "both").
    ax : matplotlib.axes.Axes, optional
        Where to draw; None: a new pyplot figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ConfigError
        For a layer the run does not have or an unknown convention.
    """
    categories = list(result.concepts.categories)
    colors = category_colors(categories)
    x = np.arange(len(categories))
    if layer is not None:
        _check_layer(result, layer)
        convention = convention or "both"
        check_convention(convention, ("both", "per-category", "top-label"))
        ax = new_axes(ax, (5.2, 3.0))
        counts = result.summary["layers"][layer]["unique_detectors"]
        series = ["per-category", "top-label"] if convention == "both" else [convention]
        width = 0.8 / len(series)
        for s, name in enumerate(series):
            values = [counts[name]["unique"].get(c, 0) for c in categories]
            pos = x - 0.4 + width * (s + 0.5)
            light = s == 1
            bars = ax.bar(pos, values, width * 0.92, color=[colors[c] for c in categories],
                          alpha=0.38 if light else 1.0, edgecolor=[colors[c] for c in categories],
                          linewidth=0.8, label=name)
            ax.bar_label(bars, padding=2, fontsize=8, color=MUTED if light else INK)
        if len(series) == 2:
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(facecolor="#6b7280", label="per-category"),
                               Patch(facecolor="#6b7280", alpha=0.38, edgecolor="#6b7280", label="top-label")],
                      frameon=False, fontsize=8, loc="upper right")
        ax.set_title(f"Unique detectors per category: {plain(layer)}", fontsize=10, loc="left")
    else:
        convention = convention or "per-category"
        check_convention(convention, ("per-category", "top-label"))
        ax = new_axes(ax, (6.4, 3.2))
        layers = result.layers
        width = 0.8 / max(1, len(layers))
        shades = np.linspace(0.35, 1.0, len(layers)) if len(layers) > 1 else [1.0]
        for k, name in enumerate(layers):
            counts = result.summary["layers"][name]["unique_detectors"][convention]["unique"]
            values = [counts.get(c, 0) for c in categories]
            ax.bar(x - 0.4 + width * (k + 0.5), values, width * 0.92, color=[colors[c] for c in categories],
                   alpha=float(shades[k]), label=plain(name))
        ax.legend(title="layer (light to dark)", frameon=False, fontsize=8, title_fontsize=8)
        ax.set_title(f"Unique detectors per category ({convention})", fontsize=10, loc="left")
    ax.set_xticks(x, [plain(c) for c in categories])
    ax.set_ylabel("unique detectors")
    ax.margins(y=0.15)
    ax.yaxis.get_major_locator().set_params(integer=True)
    style_axes(ax)
    return ax


def plot_iou_distribution(result: "Dissection", layer: str | None = None, *, bins: int = 40,
                          ax: "Axes | None" = None) -> "Axes":
    """Histogram of each unit's best IoU, with the detector cut-off marked.

    With ``layer``: a histogram, detectors in colour.  Without: per layer,
    the fraction of units whose best IoU exceeds x (at the cut-off: the
    share of detectors), so layers of different widths compare.

    Parameters
    ----------
    result : Dissection
        The dissection; its ``iou_threshold`` is the cut-off.
    layer : str, optional
        One layer; None: every layer.
    bins : int
        Histogram bins (with ``layer``; the range also sets the x axis).
    ax : matplotlib.axes.Axes, optional
        Where to draw; None: a new pyplot figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ConfigError
        For a layer the run does not have.
    """
    cut = result.iou_threshold
    labels = result.labels
    ax = new_axes(ax, (5.2, 3.0))
    top = float(labels["iou"].max()) if len(labels) else 0.0
    edges = np.linspace(0.0, max(top * 1.05, cut * 2, 1e-6), bins + 1)
    if layer is not None:
        _check_layer(result, layer)
        scores = labels.loc[labels["layer"] == layer, "iou"].to_numpy()
        counts, _ = np.histogram(scores, edges)
        centers = (edges[:-1] + edges[1:]) / 2
        colors = np.where(is_detector(centers, cut), ACCENT, "#c7cad1")
        ax.bar(edges[:-1], counts, np.diff(edges) * 0.94, align="edge", color=colors)
        ax.set_ylabel("units")
        n_det = int(is_detector(scores, cut).sum())
        ax.set_title(f"Best IoU per unit: {plain(layer)} ({n_det} of {len(scores)} above {cut:g})",
                     fontsize=10, loc="left")
    else:
        for name in result.layers:
            scores = np.sort(labels.loc[labels["layer"] == name, "iou"].to_numpy())
            xs = np.concatenate([[0.0], scores, [edges[-1]]])
            above = 1.0 - np.arange(len(scores) + 1) / max(1, len(scores))  # fraction of units with best IoU > x
            ax.step(xs, np.concatenate([above, [0.0]]), where="post", label=plain(name), linewidth=1.6)
        ax.set_ylabel("fraction of units above")
        ax.set_ylim(0, 1.02)
        ax.legend(frameon=False, fontsize=8)
        ax.set_title("Units whose best IoU exceeds x", fontsize=10, loc="left")
    ax.axvline(cut, color=INK, linestyle=(0, (3, 2)), linewidth=1)
    ax.annotate(f"cut-off {cut:g}", (cut, 1), xycoords=("data", "axes fraction"), xytext=(4, -2),
                textcoords="offset points", va="top", fontsize=8, color=INK)
    ax.set_xlabel("best IoU")
    ax.set_xlim(edges[0], edges[-1])
    style_axes(ax)
    return ax


def plot_layers(result: "Dissection", *, convention: str = "per-category", legend: bool = True,
                ax: "Axes | None" = None) -> "Axes":
    """Unique detectors per layer, stacked by category (the layer comparison of Bau et al. 2017).

    Parameters
    ----------
    result : Dissection
        The dissection.
    convention : str
        "per-category" or "top-label".
    legend : bool
        Draw the category legend (right of the axes).
    ax : matplotlib.axes.Axes, optional
        Where to draw; None: a new pyplot figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ConfigError
        For an unknown convention.
    """
    check_convention(convention, ("per-category", "top-label"))
    categories = list(result.concepts.categories)
    colors = category_colors(categories)
    layers = result.layers
    ax = new_axes(ax, (max(3.6, 1.0 + 0.8 * len(layers)), 3.2))
    x = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for c in categories:
        values = np.array([result.summary["layers"][l]["unique_detectors"][convention]["unique"].get(c, 0)
                           for l in layers], dtype=float)
        ax.bar(x, values, 0.62, bottom=bottom, color=colors[c], label=plain(c))
        bottom += values
    for xi, total in zip(x, bottom):
        ax.annotate(f"{int(total)}", (xi, total), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color=INK)
    pad = max(0.0, (4 - len(layers)) * 0.5)  # few layers: keep the bars slim
    ax.set_xlim(-0.5 - pad, len(layers) - 0.5 + pad)
    ax.set_xticks(x, [plain(l) for l in layers], rotation=0 if len(layers) < 7 else 45,
                  ha="center" if len(layers) < 7 else "right")
    ax.set_ylabel("unique detectors")
    ax.set_title(f"Unique detectors per layer ({convention})", fontsize=10, loc="left")
    ax.margins(y=0.12)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if legend:
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], names[::-1], frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    style_axes(ax)
    return ax


def new_figure(width: float, height: float, ncols: int = 1) -> tuple["Figure", list["Axes"]]:
    """A Figure that does not go through pyplot (no global state), with ``ncols`` axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: "Figure", stem: Path) -> tuple[Path, Path]:
    """Write ``stem``.png (150 dpi) and ``stem``.svg (text kept as text), deterministic."""
    import matplotlib

    png, svg = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "netdissect"}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
    return png, svg


__all__ = ["plot_categories", "plot_iou_distribution", "plot_layers", "category_colors", "CATEGORY_COLORS",
           "CONVENTION_TEXT", "save_figure", "new_figure"]
