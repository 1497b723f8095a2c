"""netdissect: what do the units of a vision network detect?

    import netdissect
    result = netdissect.dissect("efficientnet_lite0", "synthetic", layers=["blocks.5"], out="runs/demo")
    result.labels            # pandas DataFrame: layer, unit, category, label, iou, detector
"""

__version__ = "0.1.0"

from .capture import Capture  # noqa: E402
from .config import PROTOCOLS, DissectConfig  # noqa: E402
from .data import ConceptDataset, ConceptTable, open_dataset  # noqa: E402
from .dissect import dissect  # noqa: E402
from .errors import NetDissectError  # noqa: E402
from .models import LoadedModel, Preprocess, load_model  # noqa: E402
from .result import Dissection  # noqa: E402

__all__ = [
    "Capture",
    "ConceptDataset",
    "ConceptTable",
    "DissectConfig",
    "Dissection",
    "LoadedModel",
    "NetDissectError",
    "PROTOCOLS",
    "Preprocess",
    "dissect",
    "load_model",
    "open_dataset",
]
