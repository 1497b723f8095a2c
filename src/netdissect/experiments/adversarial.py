"""Which units an adversarial attack moves (Bau et al. 2020, PNAS; METHODS B4).

Targeted attacks (PGD from :mod:`torchattacks`; Carlini-Wagner L2, :func:`cw_l2`) turn each
image's prediction into a chosen target class.  Per unit of a layer the
measure is the change of its peak activation, ``|max_yx a_adv - max_yx
a_orig|``; it is averaged over the units important to the target class, to
the source class (the original prediction), and all other units, each with
a 99% interval (mean +- 2.576 standard errors over images).  "Important"
units are a class's top units by ablation (:mod:`.ablation`), four by
default as in the paper.

torchattacks is an optional dependency, needed for PGD (``pip install netdissect[experiments]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ..hooks import Trace

ATTACKS = ("pgd", "cw")
Z99 = 2.5758293035489004


class Normalized(nn.Module):
    """``model(normalise(x))`` for images ``x`` in [0, 1], as attacks expect.

    Parameters
    ----------
    model : torch.nn.Module
        Takes normalised input.
    mean, std : sequence of float
        Per channel (RGB) normalisation.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> the model's output."""
        return self.model((x - self.mean) / self.std)


def cw_l2(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, c: float = 1.0, steps: int = 10,
          lr: float = 0.01, kappa: float = 0.0) -> torch.Tensor:
    """Targeted Carlini-Wagner L2 with a fixed constant (torchattacks' ``CW`` without its early stop).

    Minimises ``||x' - x||^2 + c * max(max_{j != t} z_j - z_t, -kappa)`` over
    ``x' = (tanh(w) + 1) / 2`` with Adam, and keeps per image the closest
    ``x'`` classified as the target (the image itself when none was).
    torchattacks' ``CW`` also returns as soon as the summed cost of the batch
    rises at a check every steps/10 steps, which with a batch of images and a
    short budget stops most attacks after a few steps.

    Parameters
    ----------
    model : torch.nn.Module
        Takes images in [0, 1] (e.g. :class:`Normalized`).
    images : torch.Tensor
        (N, 3, H, W) in [0, 1].
    targets : torch.Tensor
        (N,) target classes.
    c, steps, lr, kappa : float, int
        The constant, Adam steps and rate, and the confidence margin.

    Returns
    -------
    torch.Tensor
        (N, 3, H, W) adversarial images in [0, 1].
    """
    x = images.detach()
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
    opt = torch.optim.Adam([w], lr=lr)
    onehot = None  # (N, K) True at the target, once K is known
    for _ in range(steps):
        adv = (torch.tanh(w) + 1) / 2
        l2 = (adv - x).flatten(1).pow(2).sum(1)
        z = model(adv)
        if onehot is None:
            onehot = torch.zeros_like(z, dtype=torch.bool).scatter_(1, targets.view(-1, 1), True)
        other = z.masked_fill(onehot, float("-inf")).amax(1)
        f = torch.clamp(other - z[onehot], min=-kappa)
        opt.zero_grad()
        (l2.sum() + c * f.sum()).backward()
        opt.step()
        with torch.no_grad():
            better = (z.argmax(1) == targets) & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = adv[better]
    with torch.no_grad():  # the last step's update
        adv = (torch.tanh(w) + 1) / 2
        l2 = (adv - x).flatten(1).pow(2).sum(1)
        better = (model(adv).argmax(1) == targets) & (l2 < best_l2)
        best[better] = adv[better]
    return best.detach()


def attack(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, method: str = "pgd",
           mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0), eps: float = 8 / 255,
           steps: int = 10, c: float = 1.0, lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Targeted adversarial images (PGD with torchattacks, CW-L2 with :func:`cw_l2`).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier on normalised input (eval mode).
    images : torch.Tensor
        (N, 3, H, W) float in [0, 1].
    targets : torch.Tensor
        (N,) int64 target classes.
    method : str
        ``"pgd"`` (L-inf, radius ``eps``, step eps/4, random start) or
        ``"cw"`` (Carlini-Wagner L2, constant ``c``, Adam ``lr``; :func:`cw_l2`).
    mean, std : sequence of float
        The model's input normalisation.
    eps, steps, c, lr : float, int
        Attack parameters.
    seed : int
        Seed of PGD's random start (the global generator is left unchanged).

    Returns
    -------
    torch.Tensor
        (N, 3, H, W) adversarial images in [0, 1].

    Raises
    ------
    ConfigError
        For an unknown method, images outside [0, 1], ``steps`` < 1, or
        ``eps``, ``c`` or ``lr`` not positive.
    ImportError
        For PGD when torchattacks is not installed (``pip install netdissect[experiments]``).
    """
    if method not in ATTACKS:
        raise ConfigError(f"attack method {method!r} is not one of {ATTACKS}")
    if steps < 1:
        raise ConfigError(f"attack steps {steps}: must be at least 1")
    for name, value in (("eps", eps), ("c", c), ("lr", lr)):
        if not value > 0:
            raise ConfigError(f"attack {name} {value}: must be positive")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise ConfigError(f"attack images must lie in [0, 1]; got values in [{float(images.min()):.3f}, "
                          f"{float(images.max()):.3f}]")
    wrapped = Normalized(model, mean, std).to(images.device).eval()
    if method == "cw":
        return cw_l2(wrapped, images, targets, c=c, steps=steps, lr=lr)
    try:
        import torchattacks
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("PGD attacks need torchattacks: pip install 'netdissect[experiments]'") from exc
    atk = torchattacks.PGD(wrapped, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    atk.set_mode_targeted_by_label(quiet=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return atk(images, targets).detach()


def peak_activations(model: nn.Module, layer: str, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(N, U) each unit's largest activation over positions, for normalised inputs ``x`` (N, ...)."""
    out = []
    with Trace(model, [layer]) as trace:
        for i in range(0, len(x), batch_size):
            a = trace.run(x[i:i + batch_size])[layer]
            out.append(a.flatten(2).amax(2).cpu())
    return torch.cat(out)


def group_changes(changes: np.ndarray, targets: Sequence[int], sources: Sequence[int], ranked: np.ndarray,
                  top: int = 4) -> pd.DataFrame:
    """Mean peak change of the target's, the source's and the other units, with 99% intervals.

    Parameters
    ----------
    changes : numpy.ndarray
        (N, U) per image and unit, ``|peak_adv - peak_orig|``.
    targets, sources : sequence of int
        (N,) each image's target class and source (originally predicted) class.
    ranked : numpy.ndarray
        (K, U) per class its units, most important first (0-based).
    top : int
        A class's important units are its first ``top``.

    Returns
    -------
    pandas.DataFrame
        Rows "target", "source", "other": units per image, mean, ci99_low,
        ci99_high, images.  Per image, the group's mean change; then the mean
        over images +- 2.576 standard errors.  A unit important to both
        classes counts in both; "other" are units important to neither.

    Raises
    ------
    ConfigError
        When the shapes disagree.
    """
    changes = np.asarray(changes, np.float64)
    n, u = changes.shape
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[1] < top or len(targets) != n or len(sources) != n:
        raise ConfigError(f"changes {changes.shape}, targets {len(targets)}, sources {len(sources)} and ranked "
                          f"{ranked.shape} do not fit (need N images, ranked (K, >= {top}))")
    per = {"target": [], "source": [], "other": []}
    for i in range(n):
        t, s = ranked[int(targets[i]), :top], ranked[int(sources[i]), :top]
        other = np.ones(u, bool)
        other[t] = other[s] = False
        per["target"].append(changes[i, t].mean())
        per["source"].append(changes[i, s].mean())
        per["other"].append(changes[i, other].mean())
    rows = []
    for group, values in per.items():
        v = np.asarray(values)
        mean = float(v.mean())
        half = Z99 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        rows.append({"group": group, "units": top if group != "other" else None, "mean": mean,
                     "ci99_low": mean - half, "ci99_high": mean + half, "images": len(v)})
    return pd.DataFrame(rows)


@dataclass
class AttackResult:
    """What :func:`adversarial` measured.

    Attributes
    ----------
    layer, method : str
        The layer and the attack.
    targets, sources, adv_predictions : numpy.ndarray
        (N,) target class, original prediction, prediction after the attack.
    changes : numpy.ndarray
        (N, U) ``|peak_adv - peak_orig|`` per image and unit.
    groups : pandas.DataFrame
        :func:`group_changes`.
    perturbation : numpy.ndarray
        (N,) L2 norm of each image's perturbation (in [0, 1] pixel units).
    """

    layer: str
    method: str
    targets: np.ndarray
    sources: np.ndarray
    adv_predictions: np.ndarray
    changes: np.ndarray
    groups: pd.DataFrame
    perturbation: np.ndarray

    @property
    def success_rate(self) -> float:
        """Share of images now predicted as their target."""
        return float((self.adv_predictions == self.targets).mean())

    def save(self, out: str | Path, class_names: Sequence[str] | None = None) -> Path:
        """Write the result into folder ``out``; returns its ``index.html``.

        Files: ``groups.csv``, ``images.csv``, ``changes.npy``, ``summary.json``, ``changes.png``.
        """
        from ..report.units import attack_page, plot_attack

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.groups.to_csv(out / "groups.csv", index=False)
        name = (lambda i: class_names[i]) if class_names is not None else str
        pd.DataFrame({"target": [name(int(i)) for i in self.targets],
                      "source": [name(int(i)) for i in self.sources],
                      "adversarial": [name(int(i)) for i in self.adv_predictions],
                      "l2": self.perturbation}).to_csv(out / "images.csv", index=False)
        np.save(out / "changes.npy", self.changes)
        (out / "summary.json").write_text(json.dumps({"layer": self.layer, "method": self.method,
                                                      "success_rate": self.success_rate,
                                                      "groups": json.loads(self.groups.to_json(orient="records"))},
                                                     indent=2))
        plot_attack(self, out / "changes.png")
        page = out / "index.html"
        page.write_text(attack_page(self, "changes.png"))
        return page


def adversarial(model: nn.Module, layer: str, images: torch.Tensor, targets: Sequence[int], ranked: np.ndarray, *,
                mean: Sequence[float], std: Sequence[float], method: str = "pgd", top: int = 4,
                batch_size: int = 16, **attack_options) -> AttackResult:
    """Attack each image towards its target class and measure which units' peaks moved.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier on normalised input (eval mode, on the images' device).
    layer : str
        The layer whose units are measured.
    images : torch.Tensor
        (N, 3, H, W) float in [0, 1].
    targets : sequence of int
        (N,) target classes.
    ranked : numpy.ndarray
        (K, U) per class its units, most important first (e.g.
        ``Ablation.units_ranked``).
    mean, std : sequence of float
        The model's normalisation.
    method : str
        ``"pgd"`` or ``"cw"`` (:func:`attack`).
    top : int
        Important units per class.
    batch_size : int
        Images per attack call.
    **attack_options
        eps, steps, c, lr, seed for :func:`attack`.

    Returns
    -------
    AttackResult

    Raises
    ------
    ConfigError
        For no images, a target per image missing, a target outside the
        K classes of ``ranked``, or a model whose output is not K wide (and
        as :func:`attack`).
    """
    targets = [int(t) for t in targets]
    if len(images) == 0:
        raise ConfigError("no images to attack")
    if len(targets) != len(images):
        raise ConfigError(f"{len(targets)} targets for {len(images)} images: give one target per image")
    k = int(ranked.shape[0])
    bad = sorted({t for t in targets if not 0 <= t < k})
    if bad:
        raise ConfigError(f"targets {' '.join(map(str, bad))}: class indices run from 0 to {k - 1}")
    targets_t = torch.as_tensor(targets, dtype=torch.long, device=images.device)
    wrapped = Normalized(model, mean, std).to(images.device).eval()
    with torch.no_grad():
        outputs = wrapped(images[:1]).shape[-1]
    if outputs != k:
        raise ConfigError(f"the model outputs {outputs} values per image but the unit ranking has {k} classes")
    advs = []
    for i in range(0, len(images), batch_size):
        advs.append(attack(model, images[i:i + batch_size], targets_t[i:i + batch_size], method=method, mean=mean,
                           std=std, **attack_options))
    adv = torch.cat(advs)
    with torch.no_grad():
        sources = torch.cat([wrapped(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
        after = torch.cat([wrapped(adv[i:i + batch_size]).argmax(1) for i in range(0, len(adv), batch_size)])
    norm = wrapped.mean, wrapped.std
    before_peaks = peak_activations(model, layer, (images - norm[0]) / norm[1], batch_size)
    after_peaks = peak_activations(model, layer, (adv - norm[0]) / norm[1], batch_size)
    changes = (after_peaks - before_peaks).abs().double().numpy()
    src, tgt = sources.cpu().numpy(), targets_t.cpu().numpy()
    return AttackResult(layer=layer, method=method, targets=tgt, sources=src, adv_predictions=after.cpu().numpy(),
                        changes=changes, groups=group_changes(changes, tgt, src, ranked, top),
                        perturbation=(adv - images).flatten(1).norm(dim=1).cpu().numpy())
