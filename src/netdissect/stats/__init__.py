"""Streaming, mergeable statistics: exact quantiles, IoU tallies, top images."""

from .base import Statistic
from .quantile import TopKQuantile, float32_below, quantile_from_top, top_count
from .tally import DENOMINATORS, IoUTally, LabelCounts, upsample
from .topimages import TopImages, TopMaps

__all__ = [
    "DENOMINATORS",
    "IoUTally",
    "LabelCounts",
    "Statistic",
    "TopImages",
    "TopKQuantile",
    "TopMaps",
    "float32_below",
    "quantile_from_top",
    "top_count",
    "upsample",
]
