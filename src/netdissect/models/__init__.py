"""Models by spec, their preprocessing, and layer discovery."""

from .preprocess import Preprocess
from .sources import BUILTIN_MODELS, MODEL_SOURCES, LoadedModel, load_model, register_builtin, register_source
from .weights import load_weights, read_state_dict, state_hash

__all__ = [
    "BUILTIN_MODELS",
    "MODEL_SOURCES",
    "LoadedModel",
    "Preprocess",
    "load_model",
    "load_weights",
    "read_state_dict",
    "register_builtin",
    "register_source",
    "state_hash",
]
