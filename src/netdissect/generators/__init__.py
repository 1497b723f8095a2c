"""Interventions on a generator's units (Bau et al. 2020, PNAS, "Dissecting a GAN"; METHODS B3, B5).

Dissection of a generator is :func:`netdissect.dissect` with ``generator=``;
this package tests what the units do:

- :mod:`~netdissect.generators.split`: the generator cut at a layer
  (:class:`LayerSplit`; the front runs once, edits rerun the back);
- :mod:`~netdissect.generators.intervene`: ablation sweeps (top-k units
  zeroed, k = 0..30) and insertion sweeps (units set high in one cell);
- :mod:`~netdissect.generators.ace`: average causal effect and the
  optimisation of a soft unit set;
- :mod:`~netdissect.generators.edit`: invert a photo, switch units off or
  on in a painted region, regenerate;
- :mod:`~netdissect.generators.soft`: differentiable concept scores;
- :mod:`~netdissect.generators.figures`: strips, curves and maps (PNG).
"""

from .ace import ACEOptimization, ACEResult, average_causal_effect, optimize_units
from .edit import Inversion, edit_features, invert, load_mask
from .intervene import AblationResult, InsertionResult, ablation_sweep, insertion_sweep, rank_units, unit_quantiles
from .soft import SoftColorScore, SoftInkScore
from .split import LayerSplit, concept_fraction, concept_number

__all__ = [
    "ACEOptimization",
    "ACEResult",
    "AblationResult",
    "InsertionResult",
    "Inversion",
    "LayerSplit",
    "SoftColorScore",
    "SoftInkScore",
    "ablation_sweep",
    "average_causal_effect",
    "concept_fraction",
    "concept_number",
    "edit_features",
    "insertion_sweep",
    "invert",
    "load_mask",
    "optimize_units",
    "rank_units",
    "unit_quantiles",
]
