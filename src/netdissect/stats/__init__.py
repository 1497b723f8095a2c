"""Streaming, mergeable statistics: exact quantiles, IoU tallies, top images, per-image summaries, groups."""

from .base import Statistic
from .group import IoUStats, StatGroup, ThresholdStats
from .quantile import TopKQuantile, float32_below, quantile_from_top, top_count
from .summary import UnitSummary, summarize
from .tally import DENOMINATORS, IoUTally, LabelCounts, upsample
from .topimages import TopImages, TopMaps

__all__ = [
    "DENOMINATORS",
    "IoUStats",
    "IoUTally",
    "LabelCounts",
    "StatGroup",
    "Statistic",
    "ThresholdStats",
    "TopImages",
    "TopKQuantile",
    "TopMaps",
    "UnitSummary",
    "float32_below",
    "quantile_from_top",
    "summarize",
    "top_count",
    "upsample",
]
