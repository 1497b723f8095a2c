"""Measures of LWTA networks: activation sparsity, accuracy, per-example explanations.

- :func:`sparsity`: per activation layer, the share of non-zero outputs
  (1/U for an LWTA layer; DISCOVER, Panousis et al. 2023, section 3);
- :func:`explain`: for one image, the winning units of a layer sorted by
  value, with their IoU labels (a dissection run) and words (a describe run),
  as DISCOVER's per-example descriptions (``per_example_descriptions.py``);
  :func:`explanation_html` renders it as a card.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError, LayerError
from ..hooks import Trace, resolve_layers
from ..models import Preprocess
from .convert import ACTIVATION_NAMES, BatchNormLWTA
from .layer import LWTA, lwta_layers, sample_ids


def image_batches(data, preprocess: Preprocess, *, batch_size: int = 32, limit: int | None = None,
                  size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (ids (B,) int64, normalised images (B, 3, H, W)) from a data spec, image folder or data set.

    Parameters
    ----------
    data : str, Path or data set
        Anything :func:`netdissect.engine.sources.open_images` opens
        (``synthetic:n=100``, a Broden folder, a folder of photos).
    preprocess : Preprocess
        The model's input preprocessing.
    batch_size : int
        Images per batch.
    limit : int, optional
        Use only the first ``limit`` images.
    size : int, optional
        Side for a folder of photos (default 224).

    Yields
    ------
    tuple of torch.Tensor
        Data set indices and model inputs.
    """
    from ..engine.sources import open_images

    ds = open_images(data, size=size)
    n = len(ds) if limit is None else min(limit, len(ds))
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        images = np.stack([ds[i].image for i in idx])
        yield torch.tensor(idx), preprocess(torch.from_numpy(images).permute(0, 3, 1, 2))


def _activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """LWTA layers when the model has any, else its activation modules (and fused BatchNorm + ReLU6)."""
    found = [(n, m) for n, m in lwta_layers(model) if m.U > 1]
    if found:
        return found
    from ..models.efficientnet_lite import BatchNormAct

    return [(n, m) for n, m in model.named_modules()
            if (type(m).__name__ in ACTIVATION_NAMES and not list(m.children()))
            or (type(m) is BatchNormAct and m.act)]


def sparsity(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             device=None) -> pd.DataFrame:
    """Per activation layer, the share of non-zero outputs over ``batches``.

    Parameters
    ----------
    model : torch.nn.Module
        Measured in eval mode; sampling LWTA layers get per-image noise
        seeded by the batch ids.
    batches : iterable of (ids, inputs)
        As :func:`image_batches` yields.
    device : str or torch.device, optional
        Where to run (default: the model's device).

    Returns
    -------
    pandas.DataFrame
        layer, kind, U (0 for non-LWTA layers), calls, values, active (share
        non-zero), expected (1/U for LWTA layers, else NaN).  The last row,
        layer "(all)", pools every layer.

    Raises
    ------
    LayerError
        When the model has no activation module to measure.
    """
    layers = _activation_modules(model)
    if not layers:
        raise LayerError(f"{type(model).__name__} has no activation module to measure")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    counts = {name: [0, 0, 0] for name, _ in layers}  # calls, values, non-zero

    def hook_for(name):
        def hook(module, inputs, output):
            c = counts[name]
            c[0] += 1
            c[1] += output.numel()
            c[2] += int(torch.count_nonzero(output))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in layers]
    model.eval()
    try:
        with torch.no_grad():
            for ids, x in batches:
                with sample_ids(model, ids):
                    model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, m in layers:
        calls, values, active = counts[name]
        U = m.U if isinstance(m, LWTA) else 0
        rows.append({"layer": name, "kind": type(m).__name__, "U": U, "calls": calls, "values": values,
                     "active": active / values if values else float("nan"),
                     "expected": 1.0 / U if U else float("nan")})
    total_v = sum(r["values"] for r in rows)
    rows.append({"layer": "(all)", "kind": "", "U": 0, "calls": sum(r["calls"] for r in rows), "values": total_v,
                 "active": sum(counts[n][2] for n, _ in layers) / total_v if total_v else float("nan"),
                 "expected": float("nan")})
    return pd.DataFrame(rows)


def layer_U(model: nn.Module, layer: str) -> int:
    """The block size U of the LWTA that makes ``layer``'s output: the layer itself or its last LWTA descendant.

    Raises
    ------
    LayerError
        For an unknown layer or one with no LWTA inside.
    """
    module = resolve_layers(model, [layer])[layer]
    if isinstance(module, LWTA):
        return module.U
    if isinstance(module, BatchNormLWTA):
        return module.lwta.U
    inner = [m for _, m in lwta_layers(module)]
    if not inner:
        raise LayerError(f"layer {layer!r} ({type(module).__name__}) has no LWTA layer inside; give U")
    return inner[-1].U


def _pooled(acts: torch.Tensor, pool: str, tokens: str) -> torch.Tensor:
    """One value per unit from one image's layer output: (C, H, W) pooled, (T, C) a token, (C,) as is."""
    if acts.dim() == 3:
        return acts.flatten(1).amax(1) if pool == "max" else acts.flatten(1).mean(1)
    if acts.dim() == 2:
        return acts[0] if tokens == "cls" else acts.mean(0)
    if acts.dim() == 1:
        return acts
    raise LayerError(f"cannot explain a layer output of shape {tuple(acts.shape)} per image")


def explain(model: nn.Module, image: "torch.Tensor | np.ndarray | str | Path", layer: str, *,
            preprocess: Preprocess | None = None, run_dir: "str | Path | None" = None, method: str | None = None,
            U: int | None = None, pool: str = "mean", tokens: str = "cls", image_id: int = 0,
            device=None) -> pd.DataFrame:
    """The winning units of ``layer`` for one image, with their labels, sorted by value (DISCOVER, section 5).

    The layer's output is reduced to one value per unit (spatial mean or
    max of a map, the class or mean token of a transformer), and in each
    block of U units the largest is the block's winner: K/U winners.

    Parameters
    ----------
    model : torch.nn.Module
        An LWTA model (any model with ``U`` given).
    image : torch.Tensor, numpy.ndarray, str or Path
        (H, W, 3) uint8 RGB, or an image file.
    layer : str
        The layer (``named_modules`` name).
    preprocess : Preprocess, optional
        The model's input preprocessing (default ImageNet).
    run_dir : str or Path, optional
        A run directory: IoU labels from its dissection, words from its
        ``describe`` table (``method``, or the only one) when present.
    method : str, optional
        Which word table of ``run_dir``.
    U : int, optional
        Block size (default: from the layer's LWTA).
    pool, tokens : str
        "mean"/"max" for maps; "cls"/"mean" for tokens.
    image_id : int
        Seeds the LWTA noise of a sampling model (as a data set index does).
    device : str or torch.device, optional
        Default: the model's device.

    Returns
    -------
    pandas.DataFrame
        rank, unit (1-based), value, then when known: iou_label, category,
        iou (from the dissection), words, word_score (from the description).

    Raises
    ------
    ConfigError
        For a bad ``pool``/``tokens`` or a U that does not divide the units.
    LayerError
        For an unknown layer, or no LWTA in it and no ``U``.
    """
    if pool not in ("mean", "max") or tokens not in ("cls", "mean"):
        raise ConfigError(f"pool must be mean or max and tokens cls or mean, got {pool!r}, {tokens!r}")
    from ..data.imageio import read_rgb

    if isinstance(image, (str, Path)):
        image = read_rgb(image)
    arr = torch.as_tensor(np.array(image))
    if arr.dim() != 3 or arr.shape[-1] != 3:
        raise ConfigError(f"image must be (H, W, 3) uint8 RGB, got shape {tuple(arr.shape)}")
    preprocess = preprocess or Preprocess()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = preprocess(arr.permute(2, 0, 1)[None]).to(device)
    U = U or layer_U(model, layer)
    model.eval()
    with torch.no_grad(), sample_ids(model, [image_id]), Trace(model, [layer], grid=False) as trace:
        acts = trace.run(x)[layer][0].float().cpu()
    values = _pooled(acts, pool, tokens)
    k = values.shape[0]
    if k % U:
        raise ConfigError(f"U={U} does not divide the {k} units of layer {layer!r}")
    blocks = values.view(k // U, U)
    win = blocks.argmax(1)
    units = torch.arange(k // U) * U + win
    table = pd.DataFrame({"unit": (units + 1).numpy(), "value": blocks.gather(1, win[:, None])[:, 0].numpy()})
    table = table.sort_values("value", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    if run_dir is not None:
        table = _with_labels(table, Path(run_dir), layer, method)
    return table


def _with_labels(table: pd.DataFrame, run_dir: Path, layer: str, method: str | None) -> pd.DataFrame:
    from ..results.description import Description, word_methods
    from ..results.rundir import SUMMARY

    found = False
    if (run_dir / SUMMARY).is_file():
        from ..results.dissection import DissectionData

        labels = DissectionData(run_dir).labels
        rows = labels[labels["layer"] == layer][["unit", "label", "category", "iou"]]
        table = table.merge(rows.rename(columns={"label": "iou_label"}), on="unit", how="left")
        found = True
    if word_methods(run_dir):
        words = Description.load(run_dir, method).labels
        rows = words[words["layer"] == layer][["unit", "label", "score"]]
        table = table.merge(rows.rename(columns={"label": "words", "score": "word_score"}), on="unit", how="left")
        found = True
    if not found:
        raise ConfigError(f"run directory {str(run_dir)!r} holds neither a dissection (summary.json) nor word "
                          "labels (labels/<method>.csv)")
    return table


def explanation_html(table: pd.DataFrame, image: "np.ndarray | str | Path", *, layer: str, title: str = "",
                     top: int = 20) -> str:
    """An HTML card: the image and its top ``top`` winning units with their labels.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`explain`.
    image : numpy.ndarray, str or Path
        (H, W, 3) uint8 RGB or an image file.
    layer : str
        Shown in the heading.
    title : str
        Shown above (e.g. the model spec and the prediction).
    top : int
        Rows shown.

    Returns
    -------
    str
        A standalone HTML document.
    """
    from PIL import Image

    from ..data.imageio import read_rgb

    arr = read_rgb(image) if isinstance(image, (str, Path)) else np.asarray(image)
    buf = io.BytesIO()
    pil = Image.fromarray(arr.astype(np.uint8))
    if max(pil.size) < 160:
        pil = pil.resize((pil.size[0] * 160 // max(pil.size), pil.size[1] * 160 // max(pil.size)), Image.NEAREST)
    pil.save(buf, format="PNG")
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    cols = [c for c in ("rank", "unit", "value", "iou_label", "category", "iou", "words", "word_score")
            if c in table.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)

    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in cols) + "</tr>"
                   for _, row in table.head(top).iterrows())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>LWTA explanation</title><style>"
            "body{font-family:sans-serif;margin:1.5em}.card{display:flex;gap:1.5em;align-items:flex-start}"
            "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
            "img{image-rendering:pixelated;width:224px}</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>Winning units of <code>{html.escape(layer)}</code> "
            f"({len(table)} blocks), by value</p><div class='card'><img src='{src}' alt='image'>"
            f"<table><tr>{head}</tr>{body}</table></div></body></html>\n")
