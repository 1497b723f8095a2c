"""PNG figures of the generator experiments: image strips, ablation curves, insertion maps.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state);
strips are plain image grids written with Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def save_strip(images: np.ndarray, path: "str | Path", *, scale: int = 2, gap: int = 2) -> Path:
    """Write a grid of images as one PNG.

    Parameters
    ----------
    images : np.ndarray
        (rows, cols, H, W, 3) uint8.
    path : str or Path
        The PNG to write (folders are made).
    scale : int
        Nearest-neighbour enlargement of each image.
    gap : int
        White pixels between images.

    Returns
    -------
    Path
        ``path``.
    """
    rows, cols, h, w, _ = images.shape
    h2, w2 = h * scale, w * scale
    canvas = np.full((rows * (h2 + gap) - gap, cols * (w2 + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            big = images[r, c].repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[r * (h2 + gap):r * (h2 + gap) + h2, c * (w2 + gap):c * (w2 + gap) + w2] = big
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def save_ablation_curve(table, path: "str | Path", *, title: str = "", ticks: Sequence[int] = (0, 2, 4, 8, 20, 30)
                        ) -> Path:
    """Plot the relative drop of the concept against k, with its 99% band.

    Parameters
    ----------
    table : pandas.DataFrame
        :meth:`AblationResult.table`.
    path : str or Path
        The PNG.
    title : str
        Figure title.
    ticks : sequence of int
        x ticks (those up to the largest k).

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.0), dpi=120)
    ax = fig.add_subplot()
    ax.fill_between(table["k"], table["drop_low99"], table["drop_high99"], alpha=0.3, lw=0)
    ax.plot(table["k"], table["drop"], marker="o", ms=3)
    ax.set_xticks([t for t in ticks if t <= table["k"].max()])
    ax.set_xlabel("units ablated (top k by IoU)")
    ax.set_ylabel("-Δ concept pixels / baseline")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def save_cell_map(values: np.ndarray, path: "str | Path", *, title: str = "") -> Path:
    """Draw an (h, w) map of values per layer cell (e.g. mean concept pixels added) as a PNG.

    Parameters
    ----------
    values : np.ndarray
        (h, w).
    path : str or Path
        The PNG.
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6, 3.2), dpi=120)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


__all__ = ["save_ablation_curve", "save_cell_map", "save_strip"]
