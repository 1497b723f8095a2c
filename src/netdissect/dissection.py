"""The public result type: saved results plus the report and plots.

:class:`Dissection` is :class:`netdissect.results.DissectionData` (everything
read from a run directory) with methods that draw it; the drawing lives in
:mod:`netdissect.report`, which reads only the saved result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import DissectionData


class Dissection(DissectionData):
    """A finished dissection, loaded from its run directory.

    ``labels``: DataFrame with one row per (layer, unit): layer, unit
    (1-based), category, label, iou, detector, method ("iou"); word labels
    added by :func:`netdissect.describe` are ``label_table(method)``.  See
    :class:`~netdissect.results.DissectionData` for the accessors.
    """

    def report(self, out: str | Path | None = None, **options: Any) -> Path:
        """Write the HTML report (default ``RUN_DIR/report``); returns its ``index.html``.

        Options as :func:`netdissect.report.write_report` (``dataset=``,
        ``images=``, ``thumb=``, ``columns=``, ``quality=``, ``progress=``).
        """
        from .report import write_report

        return write_report(self.run_dir, out=out, **options)

    def plot_categories(self, layer: str | None = None, *, convention: str | None = None, ax=None):
        """Bar chart of unique detectors per category; returns the matplotlib Axes.

        With ``layer``: both counting conventions side by side (or the one
        named); without: every layer, one convention (default per-category).
        """
        from .report.plots import plot_categories

        return plot_categories(self, layer, convention=convention, ax=ax)

    def plot_iou_distribution(self, layer: str | None = None, *, bins: int = 40, ax=None):
        """Histogram of each unit's best IoU with the detector cut-off; returns the Axes."""
        from .report.plots import plot_iou_distribution

        return plot_iou_distribution(self, layer, bins=bins, ax=ax)

    def plot_layers(self, *, convention: str = "per-category", ax=None):
        """Unique detectors per layer, stacked by category; returns the Axes."""
        from .report.plots import plot_layers

        return plot_layers(self, convention=convention, ax=ax)

    def compare(self, *others: Any, names: list[str] | None = None, out: str | Path | None = None):
        """Compare this run with ``others`` (runs or run directories); see :func:`netdissect.experiments.compare`.

        Returns
        -------
        netdissect.experiments.compare.Comparison
            Unique detectors per category (both conventions), detector
            share, best IoUs, and concepts gained and lost from run to run.
        """
        from .experiments.compare import compare

        return compare([self, *others], names=names, out=out)

    def _repr_html_(self) -> str:
        from .report.html import summary_html

        return summary_html(self)
