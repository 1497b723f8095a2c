"""Generators by spec: the module, its latent shape and its output range.

Specs:

- ``face_dcgan``: the PyTorch DCGAN tutorial architecture for 64x64 RGB
  images (z of 100 as (100, 1, 1); output in [-1, 1]); layers ``main.2``,
  ``main.5``, ``main.8``, ``main.11`` are the ReLU outputs (512x4x4 ...
  64x32x32);
- ``mnist_dcgan``: a DCGAN for 28x28 digits (z of 100; output in [-1, 1]);
  LeakyReLU outputs at ``layer_stack.3``, ``.6``, ``.9``;
- ``scene_gan``: the project's own DCGAN for 32x32 synthetic concept scenes
  (:mod:`netdissect.generators.scene`; z of 64 as (64, 1, 1); output in
  [-1, 1]); ReLU outputs ``main.2``, ``main.5``, ``main.8`` (128x4x4,
  64x8x8, 32x16x16); its trained weights ship with the package and load by
  default (segment its samples with the ``scene_seg`` segmenter);
- ``module:package.module:factory``: ``factory()`` returns a
  :class:`LoadedGenerator`, or an ``nn.Module`` with attributes
  ``latent_shape`` (tuple) and optionally ``output_range`` (default (-1, 1)).

The other built-in architectures start randomly initialised (fixed seed);
pass their trained weights with ``weights=FILE``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelError, close_matches
from .weights import load_weights


@dataclass
class LoadedGenerator:
    """A generator ready for dissection.

    Attributes
    ----------
    module : torch.nn.Module
        Maps a batch of latents (N, *latent_shape) to images (N, C, H, W).
    latent_shape : tuple of int
        Shape of one latent z, drawn from N(0, 1).
    output_range : tuple of float
        (low, high) of the output values ((-1, 1) for a tanh output).
    spec : str
        How it was loaded.
    weights : str or None
        The weights file, if any.
    """

    module: nn.Module
    latent_shape: tuple[int, ...]
    output_range: tuple[float, float] = (-1.0, 1.0)
    spec: str = ""
    weights: str | None = None


class FaceDCGAN(nn.Module):
    """The DCGAN tutorial generator, 64x64 RGB (Radford et al. 2016): z (N, 100, 1, 1) -> (N, 3, 64, 64)."""

    def __init__(self, nz: int = 100, ngf: int = 64, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, nz, 1, 1) latents -> (N, channels, 64, 64) images in [-1, 1]."""
        return self.main(z)


class _Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class MnistDCGAN(nn.Module):
    """A DCGAN for 28x28 digits: z (N, 100) -> (N, 1, 28, 28)."""

    def __init__(self, nz: int = 100):
        super().__init__()
        self.layer_stack = nn.Sequential(
            _Reshape(nz, 1, 1),
            nn.ConvTranspose2d(nz, 128, 4, 1, 0, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(128, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(32, 1, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, nz) latents -> (N, 1, 28, 28) images in [-1, 1]."""
        return self.layer_stack(z)


def _scene_gan() -> LoadedGenerator:
    from ..generators.scene import GAN_FILE, NZ, load_scene_gan, weights_path

    return LoadedGenerator(load_scene_gan(), (NZ, 1, 1), weights=str(weights_path(GAN_FILE)))


_BUILTIN: dict[str, Callable[[], LoadedGenerator]] = {
    "face_dcgan": lambda: LoadedGenerator(FaceDCGAN(), (100, 1, 1)),
    "mnist_dcgan": lambda: LoadedGenerator(MnistDCGAN(), (100,)),
    "scene_gan": _scene_gan,
}


def list_generators() -> list[str]:
    """Names of the built-in generator architectures."""
    return sorted(_BUILTIN)


def _from_module(rest: str) -> LoadedGenerator:
    modname, sep, factory_name = rest.rpartition(":")
    if not sep or not modname or not factory_name:
        raise ModelError(f"generator spec 'module:{rest}' must look like module:package.module:factory")
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ModelError(f"generator spec 'module:{rest}': cannot import {modname!r} ({exc})") from None
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        raise ModelError(f"module {modname!r} has no callable {factory_name!r}")
    made = factory()
    if isinstance(made, LoadedGenerator):
        return made
    if not isinstance(made, nn.Module):
        raise ModelError(f"{modname}:{factory_name}() returned {type(made).__name__}, "
                         "not a torch.nn.Module or a LoadedGenerator")
    shape = getattr(made, "latent_shape", None)
    if shape is None:
        raise ModelError(f"generator {modname}:{factory_name}() has no attribute latent_shape "
                         "(the shape of one latent z, e.g. (512,)); set it or return a LoadedGenerator")
    return LoadedGenerator(made, tuple(int(s) for s in shape), tuple(getattr(made, "output_range", (-1.0, 1.0))))


def load_generator(spec: str, *, weights: str | Path | None = None) -> LoadedGenerator:
    """Load a generator by spec (see the module docstring), in eval mode on the CPU.

    Parameters
    ----------
    spec : str
        A built-in name or ``module:package.module:factory``.
    weights : str or Path, optional
        A state dict or safetensors file to load strictly.

    Raises
    ------
    ModelError
        For an unknown spec, a factory that returns something else, or
        weights that do not fit.
    """
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"generator spec must be a non-empty string, got {spec!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        source, sep, rest = spec.partition(":")
        if spec in _BUILTIN:
            loaded = _BUILTIN[spec]()
        elif sep and source == "module":
            loaded = _from_module(rest)
        else:
            hint = close_matches(spec, _BUILTIN)
            raise ModelError(f"generator {spec!r} is not a built-in generator ({', '.join(list_generators())}) "
                             "or a module:package.module:factory spec" + (f"; {hint}" if hint else ""))
    loaded.spec = spec
    if weights is not None:
        load_weights(loaded.module, weights)
        loaded.weights = str(Path(weights).expanduser().resolve())
    elif spec in _BUILTIN and loaded.weights is None:
        logging.getLogger(__name__).warning(
            "generator %s: no weights given, so it runs with random weights (give --weights FILE, Python: "
            "weights=FILE)", spec)
    loaded.module.eval()
    return loaded
