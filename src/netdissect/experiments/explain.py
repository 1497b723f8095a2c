"""Explain one prediction by the labelled units behind it (TPAMI 2018; METHODS A2).

For a network whose ``layer`` output goes through a global average pool and
then a linear classifier (ResNet, EfficientNet-Lite's ``bn2``), the class
logit splits exactly into unit contributions::

    logit_c = b_c + sum_k w_ck * F_k,        F_k = mean over positions of unit k

and the class activation map (CAM) is ``sum_k w_ck * A_k(y, x)``.  The head is
detected, not assumed: one forward records the layer's output and every
:class:`torch.nn.Linear`'s input and output; the head is the linear layer
whose output is the model's output and whose input equals the layer's
spatial mean.  For any other head the contributions are gradient x
activation, ``sum_yx dlogit_c / dA_k(y, x) * A_k(y, x)`` (a first-order
estimate, named ``"gradient-x-activation"`` in the result), and the map is
its per-position sum over units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..hooks import Trace, first_tensor, resolve_layers

EXACT = "gap-linear"
GRADIENT = "gradient-x-activation"


@dataclass
class Explanation:
    """One prediction explained by unit contributions.

    Attributes
    ----------
    layer : str
        The layer.
    class_index : int
        The explained class c.
    class_name : str
        Its name.
    logit, bias : float
        The class logit and the head's bias for it (0 for gradient x activation).
    method : str
        ``"gap-linear"`` (exact split) or ``"gradient-x-activation"``.
    contributions : numpy.ndarray
        (U,) each unit's contribution (exact: sums to ``logit - bias``).
    activations : numpy.ndarray
        (U, h, w) the layer's output for the image.
    cam : numpy.ndarray
        (h, w) the class activation map (or the gradient x activation map).
    image : numpy.ndarray
        (H, W, 3) uint8 the image as the model saw it.
    thresholds : numpy.ndarray
        (U,) the activation a unit's region must exceed (from the dissection
        run when given, else half the unit's peak on this image).
    units : pandas.DataFrame
        The top units: rank, unit (1-based, as in the dissection's tables),
        contribution, share (of ``logit - bias``), label, category, iou.
    top_classes : list of (str, float)
        The model's five most probable classes.
    """

    layer: str
    class_index: int
    class_name: str
    logit: float
    bias: float
    method: str
    contributions: np.ndarray
    activations: np.ndarray
    cam: np.ndarray
    image: np.ndarray
    thresholds: np.ndarray
    units: pd.DataFrame
    top_classes: list

    def region(self, unit: int) -> np.ndarray:
        """(H, W) bool: where unit ``unit`` (1-based) exceeds its threshold, upsampled to the image."""
        a = torch.from_numpy(self.activations[unit - 1][None, None]).float()
        up = F.interpolate(a, size=self.image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
        return up > self.thresholds[unit - 1]

    def to_json(self) -> dict:
        """The explanation without its arrays, JSON-ready."""
        return {"layer": self.layer, "class_index": self.class_index, "class_name": self.class_name,
                "logit": self.logit, "bias": self.bias, "method": self.method,
                "sum_of_contributions": float(self.contributions.sum()),
                "top_classes": [[n, float(p)] for n, p in self.top_classes],
                "units": json.loads(self.units.to_json(orient="records"))}

    def save(self, out: str | Path, stem: str = "explanation") -> Path:
        """Write ``stem.png`` (image, CAM, top units' regions), ``stem.json`` and ``stem.html`` into ``out``.

        Returns the HTML page's path.
        """
        from ..report.units import explanation_page, plot_explanation

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        plot_explanation(self, out / f"{stem}.png")
        (out / f"{stem}.json").write_text(json.dumps(self.to_json(), indent=2))
        page = out / f"{stem}.html"
        page.write_text(explanation_page(self, f"{stem}.png"))
        return page


def _find_gap_linear(model: nn.Module, layer: str, x: torch.Tensor):
    """One forward: (layer output, logits, the head Linear or None)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def make(name):
        def hook(module, inputs, output):
            if isinstance(inputs[0], torch.Tensor) and name not in seen:
                seen[name] = (inputs[0].detach(), first_tensor(output).detach())
        return hook

    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    try:
        for name, module in linears.items():
            handles.append(module.register_forward_hook(make(name)))
        with Trace(model, [layer], grid=False) as trace, torch.no_grad():
            logits = trace.forward(x)
            feats = trace.activations[layer]
    finally:
        for h in handles:
            h.remove()
    logits = first_tensor(logits)
    if feats.dim() != 4:
        return feats, logits, None
    pooled = feats.mean((2, 3))
    for name, (inp, out) in seen.items():
        if (inp.shape == pooled.shape and out.shape == logits.shape and torch.equal(out, logits)
                and torch.allclose(inp, pooled, rtol=1e-4, atol=1e-5)):
            return feats, logits, linears[name]
    return feats, logits, None


def explain(model: nn.Module, layer: str, x: torch.Tensor, image: np.ndarray, *, class_index: int | None = None,
            class_names: Sequence[str] | None = None, labels: pd.DataFrame | None = None,
            thresholds: np.ndarray | None = None, top: int = 4, method: str = "auto") -> Explanation:
    """Explain the model's prediction for one image by the units of ``layer``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (eval mode); outputs (1, K) logits.
    layer : str
        A layer with (1, U, h, w) output.
    x : torch.Tensor
        (1, 3, H, W) the preprocessed image.
    image : numpy.ndarray
        (H, W, 3) uint8 the same image before normalisation (for drawing).
    class_index : int, optional
        The class to explain (default: the predicted one).
    class_names : sequence of str, optional
        K class names.
    labels : pandas.DataFrame, optional
        The dissection's labels of this layer (columns unit (1-based),
        label, category, iou), e.g. ``Dissection.labels``.
    thresholds : numpy.ndarray, optional
        (U,) the dissection's per-unit activation thresholds.
    top : int
        How many units to list.
    method : str
        ``"auto"`` (exact when the head is global average pool + linear,
        else gradient x activation), ``"gap-linear"`` (raise if not
        possible) or ``"gradient-x-activation"``.

    Returns
    -------
    Explanation

    Raises
    ------
    ConfigError
        For a batch of more than one image, a class index out of range, an
        unknown method, ``"gap-linear"`` on another head, or thresholds that
        do not fit the layer.
    """
    resolve_layers(model, [layer])
    if x.dim() != 4 or x.shape[0] != 1:
        raise ConfigError(f"explain takes one image, x of shape (1, 3, H, W); got {tuple(x.shape)}")
    if method not in ("auto", EXACT, GRADIENT):
        raise ConfigError(f"method {method!r} is not one of 'auto', {EXACT!r}, {GRADIENT!r}")
    feats, logits, head = _find_gap_linear(model, layer, x)
    if feats.dim() != 4:
        raise ConfigError(f"layer {layer!r} outputs shape {tuple(feats.shape)}; explain needs (1, U, h, w) maps")
    k = logits.shape[-1]
    c = int(logits[0].argmax()) if class_index is None else int(class_index)
    if not 0 <= c < k:
        raise ConfigError(f"class {class_index} is outside 0..{k - 1} (the model has {k} outputs)")
    if method == EXACT and head is None:
        raise ConfigError(f"the output of layer {layer!r} does not go through a global average pool and then a "
                          "linear layer into the output; use method 'gradient-x-activation'")
    use_exact = head is not None and method != GRADIENT
    a = feats[0].double()
    if use_exact:
        w = head.weight[c].detach().double()
        contrib = (w * a.mean((1, 2))).cpu().numpy()
        cam = torch.einsum("k,khw->hw", w, a).cpu().numpy()
        bias = float(head.bias[c].detach()) if head.bias is not None else 0.0
        logit = float(logits[0, c])
        how = EXACT
    else:
        with Trace(model, [layer], grid=False) as trace:
            out = first_tensor(trace.forward(x, grad=True))
            act = trace.activations[layer]
            (g,) = torch.autograd.grad(out[0, c], act)
        ga = (g[0] * act[0]).detach().double()
        contrib = ga.sum((1, 2)).cpu().numpy()
        cam = ga.sum(0).cpu().numpy()
        bias, logit, how = 0.0, float(out[0, c]), GRADIENT
    acts = feats[0].float().cpu().numpy()
    units = acts.shape[0]
    if thresholds is None:
        thresholds = 0.5 * acts.reshape(units, -1).max(1)
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.shape != (units,):
        raise ConfigError(f"thresholds have shape {thresholds.shape}; layer {layer!r} has {units} units")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    order = np.argsort(-contrib, kind="stable")[:top]
    rows = []
    lab = labels.set_index("unit") if labels is not None else None
    for r, u in enumerate(order):
        row = {"rank": r + 1, "unit": int(u) + 1, "contribution": float(contrib[u]),
               "share": float(contrib[u] / (logit - bias)) if logit != bias else float("nan"),
               "label": "", "category": "", "iou": float("nan")}
        if lab is not None and int(u) + 1 in lab.index:
            info = lab.loc[int(u) + 1]
            row.update(label=str(info["label"]), category=str(info["category"]), iou=float(info["iou"]))
        rows.append(row)
    probs = torch.softmax(logits[0].double(), 0)
    best = probs.argsort(descending=True)[:5].tolist()
    return Explanation(layer=layer, class_index=c, class_name=names[c], logit=logit, bias=bias, method=how,
                       contributions=contrib, activations=acts, cam=cam, image=np.asarray(image), thresholds=thresholds,
                       units=pd.DataFrame(rows), top_classes=[(names[i], float(probs[i])) for i in best])


def explain_file(loaded, layer: str, path: str | Path, *, run=None, class_index: int | None = None,
                 class_names: Sequence[str] | None = None, top: int = 4, device: str = "cpu") -> Explanation:
    """Explain a model's prediction for an image file, with the units' labels from a dissection run.

    Parameters
    ----------
    loaded : netdissect.models.LoadedModel
        The model and its preprocessing (classification recipe: shorter
        side to ``resize_size``, centre crop ``crop_size``).
    layer : str
        The layer.
    path : str or Path
        The image file.
    run : netdissect.results.DissectionData, optional
        A dissection of ``layer``: labels, IoU and thresholds.
    class_index, class_names, top
        As :func:`explain`.
    device : str
        Torch device.

    Returns
    -------
    Explanation

    Raises
    ------
    DatasetError
        For an unreadable image.
    ConfigError
        For a layer the run does not have (with close matches).
    """
    from ..data.classes import center_crop
    from ..data.imageio import read_rgb

    pre = loaded.preprocess
    image = center_crop(read_rgb(path), pre.crop_size, pre.resize_size)
    x = pre(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]).to(device)
    labels = thresholds = None
    if run is not None:
        run.layer_dir(layer)
        labels = run.labels[run.labels["layer"] == layer]
        thresholds = run.thresholds(layer)
    model = loaded.module.to(device)
    return explain(model, layer, x, image, class_index=class_index, class_names=class_names, labels=labels,
                   thresholds=thresholds, top=top)

