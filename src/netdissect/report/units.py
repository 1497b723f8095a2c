"""Plots and HTML pages of the unit experiments: ablation, adversarial attacks, explanations.

Figures are made without pyplot (no global state) through
:func:`netdissect.report.plots.new_figure`; pages are self-contained HTML with
every text escaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .plots import new_figure, plain

if TYPE_CHECKING:  # pragma: no cover
    from ..experiments.ablation import Ablation

_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}"
          "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
          "text-align:left}img{max-width:100%}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, r in frame.iterrows():
        cells = "".join(f"<td>{html.escape(floatfmt.format(v) if isinstance(v, float) else str(v))}</td>" for v in r)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, format="png", dpi=120, metadata={"Software": None})
    return path


# -- ablation -------------------------------------------------------------------


def plot_ablation_curves(result: "Ablation", path: str | Path, *, max_classes: int = 12) -> Path:
    """Metric on the test split against n: the top n units ablated (left), all but the top n (right).

    One thin line per class (the first ``max_classes``), the mean over all
    classes thick, chance (0.5 for balanced accuracy) dashed.  Writes a PNG.
    """
    fig, (left, right) = new_figure(10, 4, ncols=2)
    c = result.curves
    for ax, mode, title in ((left, "top", "top n units ablated"), (right, "all-but-top", "all but the top n ablated")):
        d = c[c["mode"] == mode]
        for cls in sorted(d["class"].unique())[:max_classes]:
            e = d[d["class"] == cls].sort_values("n")
            ns = np.r_[0, e["n"].to_numpy()]
            ax.plot(ns, np.r_[e["baseline"].iloc[0], e["value"].to_numpy()], lw=0.8, alpha=0.6,
                    label=str(e["class_name"].iloc[0]))
        mean = d.groupby("n")["value"].mean()
        ax.plot(np.r_[0, mean.index.to_numpy()], np.r_[np.nanmean(result.baseline_test), mean.to_numpy()],
                color="black", lw=2.2, label="mean over classes")
        if result.metric == "balanced_accuracy":
            ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("n (units)")
        ax.set_ylabel(result.metric.replace("_", " ") + " (test)")
        ax.set_title(f"{result.layer}: {title}", fontsize=10)
    left.legend(fontsize=6, frameon=False)
    return _save(fig, path)


def plot_importance_iou(frame: pd.DataFrame, path: str | Path) -> Path:
    """Mean best IoU of units against the number of classes they are important to (PNAS 2020 Fig. 3)."""
    fig, (ax,) = new_figure(5, 3.5)
    x = frame["classes"].to_numpy()
    ax.errorbar(x, frame["mean_iou"], yerr=2.576 * frame["sem"].fillna(0), fmt="o-", capsize=3)
    labels = [f"{k}+" if k == x.max() and k > 0 else str(k) for k in x]
    ax.set_xticks(x, labels)
    for xi, y, n in zip(x, frame["mean_iou"], frame["units"]):
        ax.annotate(f"{n}", (xi, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("classes the unit is important to (top 4)")
    ax.set_ylabel("mean IoU of the unit's label (99% CI)")
    return _save(fig, path)


def ablation_page(result: "Ablation", summary: pd.DataFrame, ranking: pd.DataFrame,
                  by_iou: pd.DataFrame | None, figures: Sequence[str]) -> str:
    """The HTML page of an ablation result (figures are file names beside the page)."""
    body = [f"<p>Layer <b>{html.escape(result.layer)}</b>, metric {html.escape(result.metric)}, "
            f"{result.importance.shape[0]} units, {len(result.classes)} classes; model split: "
            f"{html.escape(result.method)}. Units ranked by single-unit ablation on the ranking split, "
            "tested on the test split (PNAS 2020).</p>"]
    body += [f"<p><img src='{html.escape(f)}'></p>" for f in figures]
    body.append("<h2>Classes</h2>" + _table(summary))
    if by_iou is not None:
        body.append("<h2>Units important to many classes</h2>" + _table(by_iou))
    body.append("<h2>Most important units per class</h2>" + _table(ranking, "{:.4f}"))
    return _page(f"Unit ablation: {result.layer}", "".join(body))


# -- explanations ---------------------------------------------------------------


def _overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image with a (h, w) map upsampled and shown in red, scaled to its positive part."""
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(heat))[None, None].float(), size=image.shape[:2],
                       mode="bilinear", align_corners=False)[0, 0].numpy()
    up = np.clip(up, 0, None)
    up = up / up.max() if up.max() > 0 else up
    out = image.astype(np.float32) * (0.35 + 0.65 * up[..., None])
    out[..., 0] = np.maximum(out[..., 0], 255 * up * 0.8)
    return out.clip(0, 255).astype(np.uint8)


def _mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dim the image outside ``mask``."""
    out = image.astype(np.float32)
    out[~mask] *= 0.25
    return out.astype(np.uint8)


def plot_explanation(expl, path: str | Path) -> Path:
    """The image, the class activation map, and each top unit's region with its label (TPAMI 2018 Fig.)."""
    n = len(expl.units)
    fig, axes = new_figure(2.6 * (n + 2), 3.2, ncols=n + 2)
    axes[0].imshow(expl.image)
    axes[0].set_title(plain(f"{expl.class_name}  (logit {expl.logit:.2f})"), fontsize=8)
    axes[1].imshow(_overlay(expl.image, expl.cam))
    axes[1].set_title("CAM" if expl.method == "gap-linear" else "gradient x activation", fontsize=8)
    for ax, (_, row) in zip(axes[2:], expl.units.iterrows()):
        ax.imshow(_mask_overlay(expl.image, expl.region(int(row["unit"]))))
        label = f"{row['label']} ({row['iou']:.2f})" if row["label"] else "(no label)"
        ax.set_title(plain(f"unit {row['unit']}: {label}\n{row['contribution']:+.2f}"), fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def explanation_page(expl, figure: str) -> str:
    """The HTML page of one explanation (``figure`` is the PNG's file name beside it)."""
    method = ("exact split of the logit: contribution = w<sub>ck</sub> &middot; F<sub>k</sub>, summing to logit "
              "minus bias" if expl.method == "gap-linear" else
              "gradient &times; activation (first-order estimate; the head is not global average pool + linear)")
    total = float(expl.contributions.sum())
    body = [f"<p>Class <b>{html.escape(expl.class_name)}</b> (index {expl.class_index}), logit "
            f"{expl.logit:.4f}, bias {expl.bias:.4f}; layer <b>{html.escape(expl.layer)}</b>; {method}. "
            f"Sum of all {len(expl.contributions)} contributions: {total:.4f}.</p>",
            f"<p><img src='{html.escape(figure)}'></p>",
            "<h2>Top units</h2>" + _table(expl.units),
            "<h2>Top classes</h2>" + _table(pd.DataFrame(expl.top_classes, columns=["class", "probability"]))]
    return _page(f"Explanation: {expl.class_name}", "".join(body))


# -- adversarial attacks --------------------------------------------------------


def plot_attack(result, path: str | Path) -> Path:
    """Mean peak-activation change of target, source and other units, with 99% intervals (PNAS 2020 B4)."""
    fig, (ax,) = new_figure(4.5, 3.2)
    g = result.groups
    x = np.arange(len(g))
    err = np.vstack([g["mean"] - g["ci99_low"], g["ci99_high"] - g["mean"]])
    ax.bar(x, g["mean"], yerr=err, capsize=4, color=["#c0392b", "#2980b9", "#7f8c8d"][:len(g)])
    ax.set_xticks(x, [f"{r} units" for r in g["group"]])
    ax.set_ylabel(f"|change of peak activation|, {result.layer}")
    ax.set_title(f"{result.method.upper()} targeted; success {result.success_rate:.0%}", fontsize=9)
    return _save(fig, path)


def attack_page(result, figure: str) -> str:
    """The HTML page of an attack result."""
    body = [f"<p>Layer <b>{html.escape(result.layer)}</b>, attack {html.escape(result.method)} (targeted), "
            f"{len(result.targets)} images, success rate {result.success_rate:.1%}, mean L2 perturbation "
            f"{float(np.mean(result.perturbation)):.3f}. Per unit: |peak after - peak before|; per group the "
            "mean over images with a 99% interval.</p>",
            f"<p><img src='{html.escape(figure)}'></p>", _table(result.groups, "{:.4f}")]
    return _page(f"Adversarial attack: {result.layer}", "".join(body))
