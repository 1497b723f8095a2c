"""Results: the run directory (write, read) and the saved dissection; never imports the report."""

from .dissection import DissectionData
from .rundir import RunInfo, layer_dir, write_labels, write_run

__all__ = ["DissectionData", "RunInfo", "layer_dir", "write_labels", "write_run"]
