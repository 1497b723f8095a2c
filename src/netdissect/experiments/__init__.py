"""Experiments built on dissection (Bau et al. 2017 section 4; TPAMI 2018; PNAS 2020).

Each experiment lives in its own module; the public names below are imported
on first use, so ``import netdissect.experiments`` does not import torch.

- :func:`rotation`: dissect randomly rotated bases of a layer (METHODS A1);
- :func:`compare`: unique detectors, detector share, IoU distributions and
  concepts gained or lost across several runs (METHODS A3, A4);
- :func:`checkpoint_series`: dissect each checkpoint of a training run and
  plot unique detectors against the training step (METHODS A3);
- :func:`explain`: one prediction split into labelled unit contributions (METHODS A2);
- :func:`ablation`: per-class unit importance by ablation, top-n curves (METHODS B2);
- :func:`adversarial`: which units targeted attacks move (METHODS B4).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package) that defines it; add one line per public name
_EXPORTS = {
    "rotation": ".rotation",
    "Rotation": ".rotation",
    "random_rotation": ".rotation",
    "fractional_rotation": ".rotation",
    "compare": ".compare",
    "Comparison": ".compare",
    "checkpoint_series": ".series",
    "CheckpointSeries": ".series",
    "explain": ".explain",
    "Explanation": ".explain",
    "ablation": ".ablation",
    "Ablation": ".ablation",
    "split_model": ".split",
    "adversarial": ".adversarial",
    "AttackResult": ".adversarial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netdissect.experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
