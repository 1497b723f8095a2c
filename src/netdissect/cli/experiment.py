"""`netdissect experiment NAME ...`: the experiments, one sub-command each.

Every module ``cli/experiment_<name>.py`` of this package contributes one
sub-command through its ``add_parser(subparsers)`` (which sets ``func``);
they are found by name, so adding an experiment needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

PREFIX = "experiment_"


def experiment_modules() -> list:
    """The ``cli/experiment_*`` modules, sorted by name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith(PREFIX))
    return [importlib.import_module(f"{__package__}.{name}") for name in names]


def add_parser(sub) -> None:
    """Register ``experiment`` and its sub-commands on the sub-command parser ``sub``."""
    p = sub.add_parser("experiment", help="run an experiment (rotation, ...)",
                       description="Experiments built on dissection: `netdissect experiment NAME --help`.")
    inner = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    inner.required = True
    for module in experiment_modules():
        module.add_parser(inner)
