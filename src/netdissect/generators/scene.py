"""A small scene GAN and a scene segmenter trained on the project's synthetic concept scenes.

Both were trained by ``scripts/train_scene_gan.py`` (fixed seed, CPU) on
32x32 versions of :class:`~netdissect.data.synthetic.SyntheticConcepts`
scenes (painted at 64 pixels, averaged down 2x2), whose object labels are
exact.  Their fp16 weights ship inside the package
(``netdissect/generators/weights/``), so the whole PNAS 2020 GAN protocol
(dissect the generator with a segmenter, ablate an object's units, insert
them in cells) runs offline on a generator whose units can mean objects:

- ``scene_gan`` (generator registry): :class:`SceneGAN`, a DCGAN, z of 64
  drawn from N(0, 1) as (64, 1, 1) -> (3, 32, 32) in [-1, 1]; ReLU outputs
  ``main.2`` (128x4x4), ``main.5`` (64x8x8), ``main.8`` (32x16x16);
- ``scene_seg`` (segmenter registry): :class:`SceneSegNet`, a small
  fully convolutional network that labels every pixel of a 32x32 image with
  one of the 16 synthetic objects (:data:`OBJECTS`: the 8 background bands
  ``sky`` ... ``floor`` and the 8 foreground objects ``house`` ... ``box``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..data.synthetic import BACKGROUND_OBJECTS, FOREGROUND_OBJECTS

#: the segmenter's classes, in logit order (names as in the synthetic data set)
OBJECTS: tuple[str, ...] = BACKGROUND_OBJECTS + FOREGROUND_OBJECTS
#: latent size of :class:`SceneGAN`
NZ = 64
#: image side of both networks
SIZE = 32
GAN_FILE = "scene_gan.safetensors"
SEG_FILE = "scene_seg.safetensors"


class SceneGAN(nn.Module):
    """DCGAN generator for 32x32 synthetic scenes: z (N, 64, 1, 1) -> (N, 3, 32, 32) in [-1, 1].

    Parameters
    ----------
    nz : int
        Latent size.
    widths : tuple of int
        Channels of the 4x4, 8x8 and 16x16 layers.
    """

    def __init__(self, nz: int = NZ, widths: tuple[int, int, int] = (128, 64, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        chans = [nz, *widths]
        for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, nz, 1, 1) latents -> (N, 3, 32, 32) images in [-1, 1]."""
        return self.main(z)


class SceneDiscriminator(nn.Module):
    """The DCGAN discriminator :class:`SceneGAN` was trained against (not shipped): (N, 3, 32, 32) -> (N,) logits.

    Parameters
    ----------
    widths : tuple of int
        Channels of the 16x16, 8x8 and 4x4 layers.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        a, b, c = widths
        self.main = nn.Sequential(
            nn.Conv2d(3, a, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True),
            nn.Conv2d(b, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 1, 4, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) images in [-1, 1] -> (N,) real/fake logits."""
        return self.main(x).flatten()


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(True))


class SceneSegNet(nn.Module):
    """A small encoder-decoder that labels each pixel with one of the 16 synthetic objects.

    (N, 3, H, W) images in [-1, 1] (mean 0.5, std 0.5 on [0, 1] values; H, W
    divisible by 4, trained at 32) -> (N, 16, H, W) logits in
    :data:`OBJECTS` order.

    Parameters
    ----------
    width : int
        Channels of the full-resolution layers (doubled at 1/2, 4x at 1/4).
    """

    concept_names = list(OBJECTS)

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(3, w), _block(w, w))
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, dilation=2),
                                  _block(4 * w, 4 * w, dilation=4))
        self.up3 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = _block(6 * w, 2 * w)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = _block(3 * w, w)
        self.head = nn.Conv2d(w, len(OBJECTS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, 16, H, W) object logits."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up3(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up2(d2), e1], dim=1))
        return self.head(d1)


def weights_path(name: str) -> Path:
    """The shipped weights file ``name`` (:data:`GAN_FILE` or :data:`SEG_FILE`) inside the package.

    Parameters
    ----------
    name : str
        The file name.

    Returns
    -------
    Path
    """
    return Path(str(resources.files("netdissect.generators").joinpath("weights", name)))


def save_fp16(module: nn.Module, path: "str | Path") -> None:
    """Write a module's state dict as fp16 safetensors (integer buffers kept as they are).

    Parameters
    ----------
    module : nn.Module
        The trained network.
    path : str or Path
        The output file.
    """
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def _load(module: nn.Module, path: "str | Path | None", default: str) -> nn.Module:
    from ..models.weights import read_state_dict

    state = read_state_dict(weights_path(default) if path is None else path)
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return module.eval()


def load_scene_gan(path: "str | Path | None" = None) -> SceneGAN:
    """The trained :class:`SceneGAN` (float32, eval mode, on the CPU).

    Parameters
    ----------
    path : str or Path, optional
        A weights file; default the one shipped in the package.

    Returns
    -------
    SceneGAN
    """
    return _load(SceneGAN(), path, GAN_FILE)


def load_scene_segnet(path: "str | Path | None" = None) -> SceneSegNet:
    """The trained :class:`SceneSegNet` (float32, eval mode, on the CPU).

    Parameters
    ----------
    path : str or Path, optional
        A weights file; default the one shipped in the package.

    Returns
    -------
    SceneSegNet
    """
    return _load(SceneSegNet(), path, SEG_FILE)


__all__ = ["GAN_FILE", "NZ", "OBJECTS", "SEG_FILE", "SIZE", "SceneDiscriminator", "SceneGAN", "SceneSegNet",
           "load_scene_gan", "load_scene_segnet", "save_fp16", "weights_path"]
