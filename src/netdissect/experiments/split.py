"""Split a network at a layer: run the part before it once, the part after it many times.

The unit ablation sweep (PNAS 2020, METHODS B2) runs the rest of the network
for many ablated copies of one layer's output.  :func:`split_model` returns a
:class:`ModelSplit` whose ``head`` gives the layer's output and whose
``tail`` runs only what follows it, found in this order:

1. ``"fx"``: :mod:`torch.fx` traces the model with every module that is not
   on the path to the layer kept whole (so shape arithmetic inside a block
   does not stop the trace); the graph after the layer becomes the tail when
   nothing after the layer reads an earlier value (no skip connection around
   it);
2. ``"trace"``: the general fallback, any model: the whole network runs with
   a :class:`~netdissect.hooks.Trace` edit that replaces the layer's output
   by the given features (the input batch repeated along the batch axis), so
   the layers before it run again and are wasted.

``ModelSplit.method`` says which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..hooks import Apply, Trace, resolve_layers


@dataclass
class ModelSplit:
    """A model cut at ``layer``.

    Attributes
    ----------
    model : torch.nn.Module
        The whole network.
    layer : str
        The layer (``named_modules`` name).
    method : str
        ``"fx"`` (the tail runs alone) or ``"trace"`` (the whole network runs
        with the layer's output replaced).
    tail_module : torch.nn.Module or None
        The traced tail for ``"fx"``.
    """

    model: nn.Module
    layer: str
    method: str
    tail_module: nn.Module | None = None

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's raw output for input ``x``: (N, C, ...), without gradients."""
        with Trace(self.model, [self.layer], grid=False) as trace:
            return trace.run(x)[self.layer]

    def tail(self, features: torch.Tensor, x: torch.Tensor | None = None, repeat: int = 1) -> torch.Tensor:
        """The model's output when the layer outputs ``features``.

        Parameters
        ----------
        features : torch.Tensor
            (R * N, C, ...) replacement outputs of the layer.
        x : torch.Tensor, optional
            (N, ...) the input batch; needed by the ``"trace"`` method, which
            runs the whole network on ``x`` repeated ``repeat`` times.
        repeat : int
            R, how many copies of the batch ``features`` holds (block-major:
            rows ``r * N .. r * N + N - 1`` are copy r).

        Returns
        -------
        torch.Tensor
            (R * N, ...) the model's outputs.
        """
        with torch.no_grad():
            if self.tail_module is not None:
                return self.tail_module(features)
            if x is None:
                raise ValueError("ModelSplit.tail needs the input batch x for the 'trace' method")
            xs = x.repeat(repeat, *([1] * (x.dim() - 1)))
            edit = Apply(lambda out: features.to(out.dtype))
            with Trace(self.model, [self.layer], edit={self.layer: edit}, grid=False, clone=False) as trace:
                return trace.forward(xs)


def split_model(model: nn.Module, layer: str, *, method: str = "auto") -> ModelSplit:
    """Cut ``model`` after ``layer`` (see the module docstring for the methods).

    Parameters
    ----------
    model : torch.nn.Module
        The network (eval mode).
    layer : str
        A module name of ``model``.
    method : str
        ``"auto"`` (fx when it works, else trace), ``"fx"`` or ``"trace"``.

    Returns
    -------
    ModelSplit

    Raises
    ------
    LayerError
        For an unknown layer.
    ValueError
        For an unknown method, or ``"fx"`` when the model cannot be split so.
    """
    resolve_layers(model, [layer])
    if method not in ("auto", "fx", "trace"):
        raise ValueError(f"split method {method!r} is not one of 'auto', 'fx', 'trace'")
    if method != "trace":
        tail, why = _fx_tail(model, layer)
        if tail is not None:
            return ModelSplit(model, layer, "fx", tail)
        if method == "fx":
            raise ValueError(f"model {type(model).__name__} cannot be split at {layer!r} with torch.fx: {why}")
    return ModelSplit(model, layer, "trace")


def _fx_tail(model: nn.Module, layer: str) -> tuple[nn.Module | None, str]:
    """The graph after ``layer`` as a module taking the layer's output, or (None, reason)."""
    import torch.fx as fx

    ancestors = {""} | {layer.rsplit(".", i)[0] for i in range(1, layer.count(".") + 1)}

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == layer or qualname not in ancestors

    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # noqa: BLE001 - any trace failure means: use the fallback
        return None, f"tracing failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    graph = gm.graph
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) != 1:
        return None, f"the layer is called {len(nodes)} times in the traced graph"
    node = nodes[0]
    with graph.inserting_before(node):
        feat = graph.placeholder("features")
    node.replace_all_uses_with(feat)
    graph.erase_node(node)
    graph.eliminate_dead_code()
    old_inputs = [n for n in graph.nodes if n.op == "placeholder" and n is not feat]
    if any(n.users for n in old_inputs):
        return None, "a value computed before the layer is used after it (a skip connection around the layer)"
    for n in old_inputs:
        graph.erase_node(n)
    # the new placeholder must come first
    first = next(iter(graph.nodes))
    if first is not feat:
        first.prepend(feat)
    graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, ""


def chunked(fn: Callable[[int, int], None], total: int, size: int) -> None:
    """Call ``fn(start, stop)`` over ``range(total)`` in chunks of ``size``."""
    for start in range(0, total, max(1, size)):
        fn(start, min(total, start + size))
