"""Models and generators by spec, their preprocessing, and checkpoint loading."""

from .generators import LoadedGenerator, list_generators, load_generator
from .preprocess import Preprocess
from .sources import LoadedModel, list_models, list_sources, load_model, register_builtin, register_source
from .weights import load_weights, read_state_dict, state_hash

__all__ = [
    "LoadedGenerator",
    "LoadedModel",
    "Preprocess",
    "list_generators",
    "list_models",
    "list_sources",
    "load_generator",
    "load_model",
    "load_weights",
    "read_state_dict",
    "register_builtin",
    "register_source",
    "state_hash",
]
