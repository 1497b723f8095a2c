"""Statistics bundled in groups that follow the same contract as their parts.

A :class:`StatGroup` merges, saves and restores member by member, so the
engine checkpoints, merges across processes and resumes one object per pass.
The two groups of a dissection (Bau et al. 2017, section 3):

- :class:`ThresholdStats` (first pass): a layer's exact per-unit top quantile
  and its top-activating images;
- :class:`IoUStats` (second pass): with thresholds fixed, the layer's IoU
  tally and the activation maps of its top images.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .base import Statistic
from .quantile import TopKQuantile, float32_below
from .tally import IoUTally, upsample
from .topimages import TopImages, TopMaps


class StatGroup(Statistic):
    """Named statistics merged, saved and restored together.

    Parameters
    ----------
    members : mapping of str to Statistic
        The parts (groups may nest).  ``group[name]`` returns one.
    """

    def __init__(self, members: Mapping[str, Statistic]):
        self.members: dict[str, Statistic] = dict(members)

    def __getitem__(self, name: str) -> Statistic:
        return self.members[name]

    def __iter__(self):
        return iter(self.members)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """A plain group has no single input; update its members, or use a subclass."""
        raise TypeError(f"{type(self).__name__} has no update(); update its members")

    def merge(self, other: "StatGroup") -> None:
        """Merge ``other`` member by member.

        Raises
        ------
        ValueError
            When the groups hold different members.
        """
        if type(other) is not type(self) or list(other.members) != list(self.members):
            raise ValueError(f"cannot merge {type(other).__name__}({list(other.members)}) into "
                             f"{type(self).__name__}({list(self.members)})")
        for name, member in self.members.items():
            member.merge(other.members[name])

    def state_dict(self) -> dict[str, Any]:
        """Each member's ``state_dict``, keyed by member name."""
        return {name: member.state_dict() for name, member in self.members.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every member.

        Raises
        ------
        ValueError
            When ``state`` does not name exactly this group's members.
        """
        if set(state) != set(self.members):
            raise ValueError(f"saved group holds {sorted(state)}, this one {sorted(self.members)}")
        for name, member in self.members.items():
            member.load_state_dict(state[name])

    def to(self, device: torch.device | str) -> "StatGroup":
        """Move every member to ``device``; returns this group."""
        for member in self.members.values():
            member.to(device)
        return self


class ThresholdStats(StatGroup):
    """First-pass statistics of one layer: exact thresholds and top images.

    Parameters
    ----------
    units : int
        Channels of the layer.
    q : float
        Top fraction of activations forming a unit's mask (0.005 in Bau et
        al. 2017; 0.01 in the PNAS 2020 protocol).
    total : int
        Values per unit over the whole data set (images x positions).
    quantile_size : tuple of int, optional
        (H, W) to upsample maps to before taking quantiles (PNAS 2020); None:
        raw activations (CVPR 2017).
    top_images : int
        Top-activating images kept per unit (ranked by maximum activation).
    max_values, seed, device
        As :class:`~netdissect.stats.TopKQuantile`.
    """

    def __init__(self, units: int, q: float, total: int, *, quantile_size: tuple[int, int] | None = None,
                 top_images: int = 10, max_values: int | None = None, seed: int = 0,
                 device: torch.device | str = "cpu"):
        super().__init__({
            "quantile": TopKQuantile(units, q, total, max_values=max_values, seed=seed, device=device),
            "top": TopImages(units, top_images, device=device),
        })
        self.units = int(units)
        self.quantile_size = tuple(quantile_size) if quantile_size is not None else None

    @property
    def quantile(self) -> TopKQuantile:
        """The layer's :class:`TopKQuantile` member."""
        return self.members["quantile"]

    @property
    def top(self) -> TopImages:
        """The layer's :class:`TopImages` member (ranked by each unit's maximum activation)."""
        return self.members["top"]

    def update(self, acts: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold in a batch.

        Parameters
        ----------
        acts : torch.Tensor
            (B, U, h, w) float32 activations.
        indices : torch.Tensor
            (B,) int64 data set indices of the images.
        """
        if self.quantile_size is None:
            self.quantile.update(acts.transpose(0, 1).reshape(self.units, -1), indices)
        else:
            chunk = max(1, 4096 // self.units)
            for part, ids in zip(acts.split(chunk, dim=0), indices.split(chunk, dim=0)):
                up = upsample(part, self.quantile_size)
                self.quantile.update(up.transpose(0, 1).reshape(self.units, -1), ids)
        self.top.update(acts.amax(dim=(2, 3)), indices)

    def thresholds(self) -> np.ndarray:
        """(U,) float64 exact per-unit thresholds (see :meth:`TopKQuantile.quantiles`)."""
        return self.quantile.quantiles()


class IoUStats(StatGroup):
    """Second-pass statistics of one layer: the IoU tally and the top images' maps.

    Parameters
    ----------
    thresholds : numpy.ndarray
        (U,) float64 per-unit thresholds from :class:`ThresholdStats`.
    category_of : torch.Tensor
        (num_labels,) int64 primary category index per label number (-1: none).
    num_categories : int
        Number of categories.
    label_size : tuple of int
        (sh, sw) of the label maps.
    top_indices : torch.Tensor
        (U, n) image indices of each unit's top images (-1: empty).
    grid : tuple of int
        (h, w) of the layer's maps.
    denominator : str
        IoU mask-term rule, see :class:`~netdissect.stats.IoUTally`.
    device : torch.device or str
        Where the thresholds and top-image indices (and so the tally and maps) live.
    """

    def __init__(self, thresholds: np.ndarray, category_of: torch.Tensor, num_categories: int,
                 label_size: tuple[int, int], top_indices: torch.Tensor, grid: tuple[int, int], *,
                 denominator: str = "touch", device: torch.device | str = "cpu"):
        t32 = torch.from_numpy(float32_below(thresholds)).to(device)
        super().__init__({
            "tally": IoUTally(t32, category_of, num_categories, label_size, denominator=denominator),
            "maps": TopMaps(top_indices.to(device), grid),
        })

    @property
    def tally(self) -> IoUTally:
        """The layer's :class:`IoUTally` member."""
        return self.members["tally"]

    @property
    def maps(self) -> TopMaps:
        """The layer's :class:`TopMaps` member (activation maps of the top images)."""
        return self.members["maps"]

    def update(self, acts: torch.Tensor, pixel_labels: torch.Tensor, image_labels: torch.Tensor,
               indices: torch.Tensor) -> None:
        """Fold in a batch.

        Parameters
        ----------
        acts : torch.Tensor
            (B, U, h, w) float32 activations.
        pixel_labels : torch.Tensor
            (B, L, sh, sw) int64 label numbers per pixel (0: none).
        image_labels : torch.Tensor
            (B, M) int64 image-level label numbers (0 pads).
        indices : torch.Tensor
            (B,) int64 data set indices of the images.
        """
        self.tally.update(acts, pixel_labels, image_labels)
        self.maps.update(acts, indices)
