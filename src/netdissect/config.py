"""Dissection options: one frozen dataclass and the named protocols."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ConfigError, close_matches

#: Named protocols: the published settings each option defaults to.
PROTOCOLS: dict[str, dict[str, Any]] = {
    # Bau et al. CVPR 2017 / TPAMI 2018, NetDissect-Lite: top 0.5% of raw
    # activations, IoU denominator conditioned on the label's category.
    "netdissect": {"quantile": 0.005, "quantile_on": "raw", "denominator": "touch"},
    # Bau et al. PNAS 2020: top 1% of activations upsampled to 56x56, IoU over
    # all pixels.
    "pnas2020": {"quantile": 0.01, "quantile_on": "upsampled", "quantile_size": (56, 56), "denominator": "all"},
}
ACTIVATION_CACHE = ("auto", "disk", "recompute")
#: IoU mask-term rules (see :class:`netdissect.stats.IoUTally`): the reference
#: implementation's ("touch"), the CVPR paper text's ("image"), PNAS 2020's ("all")
DENOMINATORS = ("touch", "image", "all")
QUANTILE_ON = ("raw", "upsampled")


@dataclass(frozen=True)
class DissectConfig:
    """Every option of a dissection.  ``None`` means "the protocol's value".

    Parameters
    ----------
    protocol : str
        A name in :data:`PROTOCOLS` ("netdissect": Bau et al. 2017 CVPR
        "Network Dissection"; "pnas2020": Bau et al. 2020 PNAS
        "Understanding the role of individual units").
    quantile : float, optional
        The top fraction q of activations that forms a unit's mask, in (0, 1).
    quantile_on : str, optional
        "raw" (before upsampling) or "upsampled" (to ``quantile_size``).
    quantile_size : tuple of int, optional
        (H, W) to upsample maps to before taking quantiles; "upsampled" with
        no size uses (56, 56).
    denominator : str, optional
        Which images count in the IoU's mask term ("touch", "image", "all").
    iou_threshold : float
        A unit is a detector when its best IoU exceeds this; in [0, 1].
    batch_size : int
        Images per batch.
    num_workers : int, optional
        Data loader workers; None: half the CPUs, between 1 and 8.
    device : str, optional
        Torch device; None: "cuda" when available, else "cpu".
    top_images : int
        How many top-activating images to keep per unit.
    activation_cache : str
        "disk" keeps float32 activations on disk for the second pass,
        "recompute" runs the model again, "auto" uses the disk cache when it
        fits under ``cache_limit_gb``.
    cache_limit_gb : float
        Size limit (GB) of the "auto" activation cache.
    max_quantile_values : int
        Above this many stored values (units x top-k) per layer, thresholds
        come from a random subsample (recorded in the result).
    checkpoint_seconds : float
        How often to save resumable state.
    seed : int
        Seed of the sampled thresholds and of a generator's latents.

    Raises
    ------
    ConfigError
        For a value out of range or not among the allowed names.
    """

    protocol: str = "netdissect"
    quantile: float | None = None
    quantile_on: str | None = None
    quantile_size: tuple[int, int] | None = None
    denominator: str | None = None
    iou_threshold: float = 0.04
    batch_size: int = 32
    num_workers: int | None = None
    device: str | None = None
    top_images: int = 10
    activation_cache: str = "auto"
    cache_limit_gb: float = 8.0
    max_quantile_values: int = 1 << 28
    checkpoint_seconds: float = 60.0
    seed: int = 0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            hint = close_matches(self.protocol, PROTOCOLS)
            raise ConfigError(
                f"protocol {self.protocol!r} is not one of {sorted(PROTOCOLS)}" + (f"; {hint}" if hint else "")
            )
        if self.quantile is not None and not (0.0 < float(self.quantile) < 1.0):
            raise ConfigError(f"quantile must be in the open interval (0, 1), got {self.quantile}")
        if self.quantile_on is not None and self.quantile_on not in QUANTILE_ON:
            raise ConfigError(f"quantile_on {self.quantile_on!r} is not one of {QUANTILE_ON}")
        if self.denominator is not None and self.denominator not in DENOMINATORS:
            raise ConfigError(f"denominator {self.denominator!r} is not one of {DENOMINATORS}")
        if self.quantile_size is not None:
            qs = tuple(self.quantile_size)
            if len(qs) != 2 or min(qs) < 1:
                raise ConfigError(f"quantile_size must be two positive integers (H, W), got {self.quantile_size}")
            object.__setattr__(self, "quantile_size", (int(qs[0]), int(qs[1])))
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        for name in ("batch_size", "top_images", "max_quantile_values"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.activation_cache not in ACTIVATION_CACHE:
            raise ConfigError(f"activation_cache {self.activation_cache!r} is not one of {ACTIVATION_CACHE}")

    def resolved(self) -> "DissectConfig":
        """A copy with every ``None`` filled from the protocol and the machine."""
        preset = PROTOCOLS[self.protocol]
        values = {}
        for f in fields(self):
            if getattr(self, f.name) is None and f.name in preset:
                values[f.name] = preset[f.name]
        if self.num_workers is None:
            values["num_workers"] = min(8, max(1, (os.cpu_count() or 2) // 2))
        if self.device is None:
            import torch

            values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        out = replace(self, **values)
        if out.quantile_on == "upsampled" and out.quantile_size is None:
            out = replace(out, quantile_size=(56, 56))
        return out

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (``quantile_size`` as a list)."""
        d = asdict(self)
        if d["quantile_size"] is not None:
            d["quantile_size"] = list(d["quantile_size"])
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "DissectConfig":
        """The config :meth:`to_json` wrote; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "quantile_size" and v else v) for k, v in obj.items() if k in known})

    def result_key(self) -> dict[str, Any]:
        """The resolved options that change the statistics (and therefore the cache key).

        Run-only options (workers, checkpointing, cache mode and limit, IoU
        threshold) are dropped and the device is reduced to its type.
        """
        d = self.resolved().to_json()
        for k in ("num_workers", "checkpoint_seconds", "activation_cache", "cache_limit_gb", "iou_threshold"):
            d.pop(k)
        d["device"] = str(d["device"]).split(":")[0]
        return d
