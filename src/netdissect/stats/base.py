"""The one contract every streaming statistic follows.

``update`` folds in a batch; ``merge`` folds in another instance built over
other data (another shard, another process); ``state_dict`` /
``load_state_dict`` save and restore it exactly.  Together they give
resumable runs, caches and multi-process reduction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Statistic(ABC):
    """A streaming statistic that can be updated, merged, saved and restored.

    Subclasses implement :meth:`update`, :meth:`merge`, :meth:`state_dict`
    and :meth:`load_state_dict`; :meth:`to` moves every tensor attribute.
    """

    @abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Fold in one batch."""

    @abstractmethod
    def merge(self, other: "Statistic") -> None:
        """Fold in another statistic of the same kind and shape."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this statistic (tensors on the CPU)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""

    def to(self, device: torch.device | str) -> "Statistic":
        """Move tensor state to ``device``."""
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, key, value.to(device))
        return self

    def _check_same(self, other: "Statistic", *fields: str) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for f in fields:
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                raise ValueError(f"cannot merge {type(self).__name__}: {f} differs ({a} vs {b})")
