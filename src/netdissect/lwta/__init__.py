"""Stochastic local winner-takes-all (LWTA) networks: DISCOVER (Panousis et al., NeurIPS 2023).

- :mod:`~netdissect.lwta.layer`: the :class:`LWTA` layer, per-image seeded sampling, the winner rule;
- :mod:`~netdissect.lwta.convert`: replace a model's activations by LWTA (and the ``lwta:`` model spec);
- :mod:`~netdissect.lwta.train`: a compact classification trainer on folder data;
- :mod:`~netdissect.lwta.measure`: activation sparsity, accuracy, per-example explanations;
- :mod:`~netdissect.lwta.nets`: a small ResNet for training from scratch.
"""

from .convert import Change, convert, replace_head
from .layer import LWTA, configure, kl_loss, lwta, lwta_layers, needs_ids, sample_ids, winner_rule

__all__ = ["LWTA", "Change", "configure", "convert", "kl_loss", "lwta", "lwta_layers", "needs_ids",
           "replace_head", "sample_ids", "winner_rule"]
