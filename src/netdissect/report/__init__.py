"""The dissection report and plots.

:func:`write_report` turns a finished run directory into a self-contained
HTML report (``RUN_DIR/report/index.html``); the plot functions draw on
matplotlib Axes and are also :class:`netdissect.Dissection` methods.
"""

from .html import REPORT_DIR, json_for_script, summary_html, write_report
from .images import StripSpec, region_masks
from .plots import CONVENTION_TEXT, category_colors, plot_categories, plot_iou_distribution, plot_layers

__all__ = [
    "REPORT_DIR",
    "CONVENTION_TEXT",
    "StripSpec",
    "category_colors",
    "json_for_script",
    "plot_categories",
    "plot_iou_distribution",
    "plot_layers",
    "region_masks",
    "summary_html",
    "write_report",
]
