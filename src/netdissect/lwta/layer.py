"""The stochastic local winner-takes-all layer (DISCOVER, Panousis et al., NeurIPS 2023, section 3).

The K features of a layer form K/U blocks of U consecutive units: the
channels of a convolutional map at each position, the features of each token
(the last dimension of a (B, T, C) or (B, C) tensor).  In each block one unit
wins and passes its value unchanged (negative values included); the others
output 0.  The winner is drawn from Categorical(softmax(h_block)), the
pre-activations themselves being the logits (no extra parameters):

- training: a hard Gumbel-softmax sample at temperature ``tau`` with the
  straight-through gradient (forward one-hot, backward through
  softmax((h + g) / tau));
- testing: ``mode="sample"`` draws the winner as the paper does
  (``argmax(h + g)``, which ``tau`` does not move), ``mode="argmax"`` takes
  ``argmax(h)``.

Sampling at test time can be made reproducible per image: inside
:func:`sample_ids` the Gumbel noise of image b comes from a generator seeded
by (the layer's ``seed``, the image's id, the layer's name, the call number),
so an image gets the same winners whatever batch it is in.  A dissection uses
this so that its two passes see the same activations (:func:`winner_rule`
says what a model's rule is, and the run records it).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError, LayerError

#: test-time winner rules
MODES = ("sample", "argmax")
#: DISCOVER's temperature (models/ResNet/activations.py)
DEFAULT_TAU = 1.67


def _blocks(x: torch.Tensor, U: int, where: str) -> tuple[torch.Tensor, int]:
    """View ``x`` with its competing dimension split into (K/U, U) (no copy); also the index of the U axis."""
    if x.dim() < 2:
        raise LayerError(f"LWTA{where} needs a (B, C), (B, T, C) or (B, C, H, W) input, got shape {tuple(x.shape)}")
    dim = 1 if x.dim() >= 4 else x.dim() - 1
    k = x.shape[dim]
    if k % U:
        raise LayerError(f"LWTA{where}: {k} features are not divisible into blocks of U={U} "
                         f"(input shape {tuple(x.shape)}); choose a U that divides {k}")
    return x.unflatten(dim, (k // U, U)), dim + 1


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``, u ~ U(0, 1), shaped and placed like ``x`` (float32).

    Parameters
    ----------
    x : torch.Tensor
        Any shape.
    generator : torch.Generator, optional
        On ``x``'s device; the global generator when None.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``, float32.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-7)))


def lwta(x: torch.Tensor, U: int, *, tau: float = DEFAULT_TAU, noise: torch.Tensor | None = None,
         straight_through: bool = False) -> torch.Tensor:
    """Local winner-takes-all on ``x`` (functional form of :class:`LWTA`).

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) (blocks along channels at each position), (B, T, C) or
        (B, C) (blocks along the last dimension).
    U : int
        Units per block; C must be divisible by U.
    tau : float
        Gumbel-softmax temperature (only the backward pass depends on it).
    noise : torch.Tensor, optional
        Gumbel noise shaped like ``x``: the winner of a block is
        ``argmax(h + noise)``.  None: ``argmax(h)`` (deterministic).
    straight_through : bool
        Make the output differentiable through softmax((h + noise) / tau)
        (forward values unchanged: exactly one-hot masks).

    Returns
    -------
    torch.Tensor
        Shaped like ``x``: each block's winner keeps its value, the rest are 0.

    Raises
    ------
    LayerError
        When C is not divisible by U or ``x`` has fewer than 2 dimensions.
    """
    if U == 1:
        return x
    h, axis = _blocks(x, U, "")
    logits = h if noise is None else h + _blocks(noise, U, " noise")[0].to(h.dtype)
    hit = logits == logits.amax(axis, keepdim=True)  # (amax is far faster than argmax along a middle axis)
    if bool((hit.sum(axis) > 1).any()):  # ties (rare): the first of them wins, as argmax
        hit &= hit.cumsum(axis) == 1
    mask = hit.to(h.dtype)
    if straight_through:
        soft = torch.softmax(logits.float() / tau, dim=axis).to(h.dtype)
        mask = soft + (mask - soft).detach()
    return (h * mask).flatten(axis - 1, axis)


def kl_uniform(x: torch.Tensor, U: int) -> torch.Tensor:
    """KL(softmax(h_block) || uniform 1/U), summed over blocks, averaged over the rest (DISCOVER's prior term).

    Parameters
    ----------
    x : torch.Tensor
        A layer input as for :func:`lwta`.
    U : int
        Units per block.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    h, axis = _blocks(x, U, "")
    logq = torch.log_softmax(h.float(), dim=axis)
    kl = (logq.exp() * (logq + torch.log(torch.tensor(float(U), device=h.device)))).sum(axis)
    return kl.sum(axis - 1).mean()


def _seed_of(seed: int, image_id: int, salt: str, call: int) -> int:
    text = f"lwta|{seed}|{image_id}|{salt}|{call}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


class LWTA(nn.Module):
    """Stochastic local winner-takes-all activation (DISCOVER, NeurIPS 2023, section 3.1).

    Parameters
    ----------
    U : int
        Units per competing block (U = 1 passes the input unchanged).
    tau : float
        Gumbel-softmax temperature in training (default 1.67, as DISCOVER).
    mode : str
        Test-time winner: "sample" (Gumbel-sampled, the paper) or "argmax".
    seed : int
        Seeds the per-image noise inside :func:`sample_ids`.
    kl : bool
        Keep the KL term to the uniform prior of the last forward in
        ``self.last_kl`` (see :func:`kl_loss`); DISCOVER codes it but leaves it
        off.

    Raises
    ------
    ConfigError
        For U < 1, tau <= 0 or an unknown mode.

    Notes
    -----
    Input (B, C, H, W): blocks of U consecutive channels compete at each
    (y, x); (B, T, C) or (B, C): blocks of the last dimension.  Output: the
    same shape, exactly one unit per block non-zero (the winner's value).
    """

    def __init__(self, U: int = 2, tau: float = DEFAULT_TAU, mode: str = "sample", seed: int = 0, kl: bool = False):
        super().__init__()
        if not isinstance(U, int) or U < 1:
            raise ConfigError(f"LWTA U must be a positive integer, got {U!r}")
        if not tau > 0:
            raise ConfigError(f"LWTA tau must be positive, got {tau!r}")
        if mode not in MODES:
            raise ConfigError(f"LWTA mode must be one of {MODES}, got {mode!r}")
        self.U, self.tau, self.mode, self.seed, self.kl = U, float(tau), mode, int(seed), bool(kl)
        self.last_kl: torch.Tensor | None = None
        self._ids: list[int] | None = None
        self._salt = ""
        self._calls = 0

    def extra_repr(self) -> str:
        """U, tau, mode and seed."""
        return f"U={self.U}, tau={self.tau:g}, mode={self.mode!r}, seed={self.seed}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the competition to ``x`` ((B, C, H, W), (B, T, C) or (B, C)); same shape out."""
        if self.U == 1:
            return x
        if self.kl and self.training:
            self.last_kl = kl_uniform(x, self.U)
        if self.training:
            return lwta(x, self.U, tau=self.tau, noise=gumbel_like(x), straight_through=True)
        if self.mode == "argmax":
            return lwta(x, self.U, tau=self.tau)
        return lwta(x, self.U, tau=self.tau, noise=self._noise(x))

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self._ids is None:
            return gumbel_like(x)
        if len(self._ids) != x.shape[0]:
            raise LayerError(f"LWTA layer {self._salt!r}: {len(self._ids)} sample ids for a batch of {x.shape[0]}")
        call, self._calls = self._calls, self._calls + 1
        out = torch.empty(x.shape, device=x.device, dtype=torch.float32)
        for b, image_id in enumerate(self._ids):
            gen = torch.Generator(device=x.device).manual_seed(_seed_of(self.seed, image_id, self._salt, call))
            out[b] = gumbel_like(x[b], gen)
        return out


def lwta_layers(model: nn.Module) -> list[tuple[str, LWTA]]:
    """The LWTA modules of ``model`` with their ``named_modules`` names (the model itself as "")."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LWTA)]


def configure(model: nn.Module, *, mode: str | None = None, seed: int | None = None,
              tau: float | None = None) -> int:
    """Set the winner rule of every LWTA layer in ``model``; returns how many there are.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.
    mode : str, optional
        "sample" or "argmax".
    seed : int, optional
        The per-image sampling seed.
    tau : float, optional
        The training temperature.

    Returns
    -------
    int
        The number of LWTA layers.

    Raises
    ------
    ConfigError
        For an unknown mode or a non-positive tau.
    """
    if mode is not None and mode not in MODES:
        raise ConfigError(f"LWTA mode must be one of {MODES}, got {mode!r}")
    if tau is not None and not tau > 0:
        raise ConfigError(f"LWTA tau must be positive, got {tau!r}")
    layers = lwta_layers(model)
    for _, m in layers:
        if mode is not None:
            m.mode = mode
        if seed is not None:
            m.seed = int(seed)
        if tau is not None:
            m.tau = float(tau)
    return len(layers)


def winner_rule(model: nn.Module) -> dict | None:
    """How the LWTA layers of ``model`` pick winners at test time, for a run's record; None without LWTA layers.

    Returns
    -------
    dict or None
        ``{"layers": n, "U": [...], "mode": "argmax" | "sample" | "mixed", "seed": s,
        "noise": "per-image: seed, data set index, layer, call" (sampled layers only)}``.
    """
    layers = [m for _, m in lwta_layers(model) if m.U > 1]
    if not layers:
        return None
    modes = sorted({m.mode for m in layers})
    rule: dict = {"layers": len(layers), "U": sorted({m.U for m in layers}),
                  "mode": modes[0] if len(modes) == 1 else "mixed"}
    if "sample" in modes:
        rule["seed"] = sorted({m.seed for m in layers})[0] if len({m.seed for m in layers}) == 1 else \
            sorted({m.seed for m in layers})
        rule["noise"] = "per-image Gumbel noise seeded by (seed, data set index, layer name, call)"
    return rule


def needs_ids(model: nn.Module) -> bool:
    """Whether ``model`` has LWTA layers that sample at test time (and so need :func:`sample_ids`)."""
    return any(m.U > 1 and m.mode == "sample" for _, m in lwta_layers(model))


@contextmanager
def sample_ids(model: nn.Module, ids: "Sequence[int] | torch.Tensor") -> Iterator[None]:
    """Inside the block, LWTA layers of ``model`` draw image b's noise from a generator seeded by ``ids[b]``.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose LWTA layers sample.
    ids : sequence of int or torch.Tensor
        (B,) stable image ids (data set indices) of the batch about to run.

    Yields
    ------
    None
        While the ids are set (cleared on exit, also on error).
    """
    values = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    layers = lwta_layers(model)
    for name, m in layers:
        m._ids, m._salt, m._calls = values, name, 0
    try:
        yield
    finally:
        for _, m in layers:
            m._ids, m._calls = None, 0


def kl_loss(model: nn.Module) -> torch.Tensor | float:
    """The sum of the KL terms kept by the last training forward of ``model``'s LWTA layers (0.0 when none)."""
    terms = [m.last_kl for _, m in lwta_layers(model) if m.kl and m.last_kl is not None]
    return torch.stack(terms).sum() if terms else 0.0
