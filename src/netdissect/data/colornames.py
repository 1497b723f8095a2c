r"""Naming pixel colours with the 11 basic colour terms.

Broden's ``color`` category labels every pixel with one of the eleven basic
colour terms of Berlin and Kay (black, blue, brown, grey, green, orange, pink,
purple, red, white, yellow), written ``black-c`` ... ``yellow-c``.  This module
is a small colour namer of our own, so that every converted data set can get
the same pixel-level colour category.

How it names a colour (all in CIELAB, D65 white, from sRGB):

1. **Lightness L\*, chroma C\* and hue angle h** are computed per pixel.
2. **Achromatic pixels** (C\* below a threshold of about 10, a common
   "just noticeably coloured" level) are named by lightness alone: black
   below L\* 33, white above L\* 77, grey between.  Bluish pixels need less
   chroma to be called blue (threshold 8: pale sky is named blue); dark pixels
   of cool hues need more (16 below L\* 30: dark blues and purples read as
   black), while dark warm pixels do not (a dark, weakly coloured orange is
   brown, not black).
3. **Chromatic pixels** are named by hue family, then lightness and chroma
   split the families the way the basic terms do:

   ===============  ===========================================================
   hue h (degrees)  name
   ===============  ===========================================================
   345 .. 20        red; pink when light (L\* >= 45)
   20 .. 45         red when strongly coloured (C\* >= 35; orange when also
                    light), else brown, or pink when light
   45 .. 75         orange when strongly coloured, else brown (pink when light)
   75 .. 105        yellow when strongly coloured or light, else brown; dark
                    greenish yellows (h >= 90, L\* < 45) are green (olive)
   105 .. 190       green (yellow when light and h < 120)
   190 .. 295 (*)   blue
   295 (*) .. 345   purple; pink when very light (L\* >= 78)
   ===============  ===========================================================

   (*) CIELAB bends the hue of saturated blues toward purple (sRGB's blue
   primary has h = 306), so the blue/purple boundary rises with chroma:
   295 + 0.1 C\*, up to 307.

   Brown is the dark, weakly saturated orange-yellow region and pink the
   light red-purple region, as in the colour-naming literature; both are
   defined here by lightness and chroma within the warm and red hue families.

The thresholds are round numbers in perceptual units, chosen from these
principles and checked (not fitted cell by cell) against the naming of the
van de Weijer et al. (2009) model that Broden's labels were made with: on the
real photos of the project's test assets the two agree on 88% of pixels, and
on 87% of the cells of its 32x32x32 RGB grid
(``benchmarks/colour_agreement.py``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DatasetError

#: the 11 basic colour terms, in the order of van de Weijer et al. and Broden (index = colour code)
COLOR_NAMES = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")
#: Broden's concept names for them
COLOR_CONCEPTS = tuple(n + "-c" for n in COLOR_NAMES)

_I = {n: i for i, n in enumerate(COLOR_NAMES)}

# --- the thresholds (CIELAB units; see the module docstring) ----------------
ACHROMATIC_CHROMA = 10.0  # below: black, grey or white
ACHROMATIC_CHROMA_BLUE = 8.0  # for hues 190..270 (bluish)
ACHROMATIC_CHROMA_DARK = 16.0  # for dark (L < DARK) pixels of cool and red hues
DARK = 30.0
BLACK_BELOW = 33.0  # L*: black below, grey above
WHITE_ABOVE = 77.0  # L*: white above
STRONG_CHROMA = 35.0  # warm hues: orange/yellow/red above, brown below
LIGHT_ORANGE = 60.0  # L*: strong red-orange hues lighter than this are orange
LIGHT_WARM = 70.0  # L*: weakly coloured light warm hues are pink or yellow
LIGHT_YELLOW_CHROMA = 20.0
PINK_ABOVE = 45.0  # L*: reds lighter than this are pink
OLIVE_BELOW = 45.0  # L*: darker greenish yellows are green
LIGHT_YELLOW_GREEN = 72.0  # L*: lighter yellowish greens are yellow
PINK_PURPLE_ABOVE = 78.0  # L*: lighter purples are pink
RED_PURPLE_CHROMA = 16.0  # dark, weak reds of hue 345..20 are purple
BLUE_PURPLE = 295.0  # hue of the blue/purple boundary at zero chroma ...
BLUE_PURPLE_PER_CHROMA = 0.1  # ... rising by this per unit of chroma (to 307 at C* >= 120)

_M = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
# sRGB decoding per 8-bit value
_LINEAR = np.where(
    np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92, ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB (uint8 0..255, or floats in 0..255) -> (..., 3) float64 CIELAB (D65)."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise DatasetError(f"colours must have shape (..., 3), got {rgb.shape}")
    if rgb.dtype == np.uint8:
        lin = _LINEAR[rgb]
    else:
        c = np.clip(rgb.astype(np.float64) / 255.0, 0.0, 1.0)
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (lin @ _M.T) / _WHITE
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.empty(xyz.shape, dtype=np.float64)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB pixels -> (...) uint8 colour codes, indices into :data:`COLOR_NAMES`."""
    lab = srgb_to_lab(rgb)
    L = lab[..., 0]
    C = np.hypot(lab[..., 1], lab[..., 2])
    h = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    out = np.empty(L.shape, dtype=np.uint8)

    # Hue families.
    reds = (h >= 345) | (h < 20)
    warm = (h >= 20) & (h < 105)
    greens = (h >= 105) & (h < 190)
    # CIELAB bends the hue of saturated blues toward purple (sRGB blue sits at
    # h = 306); the blue/purple boundary moves up with chroma to follow it.
    blue_purple = BLUE_PURPLE + BLUE_PURPLE_PER_CHROMA * np.minimum(C, 120.0)
    blues = (h >= 190) & (h < blue_purple)
    purples = (h >= blue_purple) & (h < 345)

    # Red (345..20): red, pink when light, purple when dark and weak.
    out[reds] = np.where(L[reds] >= PINK_ABOVE, _I["pink"], _I["red"])
    out[reds & (L < PINK_ABOVE) & (C < RED_PURPLE_CHROMA)] = _I["purple"]

    # Warm (20..105): strong colours are red / orange / yellow, weak ones brown.
    strong = C >= STRONG_CHROMA
    red_orange = warm & (h < 45)
    orange = warm & (h >= 45) & (h < 75)
    yellow = warm & (h >= 75)
    out[red_orange & strong] = np.where(L[red_orange & strong] >= LIGHT_ORANGE, _I["orange"], _I["red"])
    out[orange & strong] = _I["orange"]
    out[yellow & strong] = _I["yellow"]
    weak = warm & ~strong
    out[weak] = _I["brown"]
    out[weak & (L >= LIGHT_WARM) & (h < 60)] = _I["pink"]
    out[weak & (L >= LIGHT_WARM) & (h >= 75) & (C >= LIGHT_YELLOW_CHROMA)] = _I["yellow"]
    out[red_orange & ~strong & (L >= PINK_ABOVE)] = _I["pink"]
    out[warm & (h >= 90) & (L < OLIVE_BELOW) & (C >= 16)] = _I["green"]

    # Green, blue, purple.
    out[greens] = np.where((h[greens] < 120) & (L[greens] >= LIGHT_YELLOW_GREEN), _I["yellow"], _I["green"])
    out[blues] = _I["blue"]
    out[purples] = np.where(L[purples] >= PINK_PURPLE_ABOVE, _I["pink"], _I["purple"])

    # Achromatic: too little chroma for a hue name.
    threshold = np.where((h >= 190) & (h < 270), ACHROMATIC_CHROMA_BLUE, ACHROMATIC_CHROMA)
    threshold = np.where((L < DARK) & ~warm & ~greens, ACHROMATIC_CHROMA_DARK, threshold)
    achromatic = C < threshold
    by_lightness = np.where(L < BLACK_BELOW, _I["black"], np.where(L > WHITE_ABOVE, _I["white"], _I["grey"]))
    out[achromatic] = by_lightness[achromatic]
    return out


def color_map(image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Colour codes of an image at ``size`` = (H, W) (default: the image's own size).

    image: (H0, W0, 3) uint8 RGB.  The image is first reduced to ``size`` by
    area averaging (Pillow's ``BOX`` filter: each output pixel is the mean of
    the input pixels it covers; for 224 -> 112 the mean of each 2x2 block), so
    that a label pixel is named by the average colour it covers.  Returns
    (H, W) uint8 indices into :data:`COLOR_NAMES`.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DatasetError(f"color_map needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if size is not None and tuple(size) != image.shape[:2]:
        h, w = (int(v) for v in size)
        image = np.asarray(Image.fromarray(image, "RGB").resize((w, h), Image.Resampling.BOX))
    return name_colors(image)


__all__ = ["COLOR_NAMES", "COLOR_CONCEPTS", "color_map", "name_colors", "srgb_to_lab"]
