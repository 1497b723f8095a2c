"""Labelers: from a layer's statistics to labels per unit: IoU (iou.py), words (similarity.py, words.py)."""

from .base import LABEL_COLUMNS, Labeler, LayerResult
from .iou import CONVENTIONS, IOU_THRESHOLD, IoULabeler, best_per_category, is_detector, tally_table, unique_detectors

__all__ = [
    "CONVENTIONS",
    "IOU_THRESHOLD",
    "IoULabeler",
    "LABEL_COLUMNS",
    "Labeler",
    "LayerResult",
    "best_per_category",
    "is_detector",
    "tally_table",
    "unique_detectors",
]
