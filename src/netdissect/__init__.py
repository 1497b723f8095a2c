"""Network Dissection for PyTorch: find out what the units of a vision network detect.

    import netdissect
    result = netdissect.dissect("efficientnet_lite0", "synthetic", layers=["blocks.5"], out="runs/demo")
    result.labels            # pandas DataFrame: layer, unit, category, label, iou, detector, method
    words = netdissect.describe("efficientnet_lite0", "synthetic", layers=["blocks.5"], out="runs/demo",
                                image_text="synthetic_clip")   # CLIP-Dissect's words beside the IoU labels

The names below are imported on first use, so ``import netdissect`` (and the
command line's start) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "ConceptDataset": ".data",
    "ConceptTable": ".data",
    "open_dataset": ".data",
    "DissectConfig": ".config",
    "PROTOCOLS": ".config",
    "dissect": ".pipeline",
    "Dissection": ".dissection",
    "describe": ".describing",
    "Description": ".results.description",
    "NetDissectError": ".errors",
    "Trace": ".hooks",
    "LayerInfo": ".hooks",
    "layer_info": ".hooks",
    "LoadedModel": ".models",
    "LoadedGenerator": ".models",
    "Preprocess": ".models",
    "load_model": ".models",
    "load_generator": ".models",
    "load_segmenter": ".segment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netdissect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
