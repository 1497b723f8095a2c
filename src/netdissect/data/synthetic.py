"""A deterministic procedural concept data set: :class:`SyntheticConcepts`.

Every image is a small painted scene whose labels are known exactly, so it can
stand in for Broden in tests and demos without any download:

- a background that defines the **scene** (an image-level label, e.g.
  ``beach-s`` = sky over sea over sand), its bands labelled as **objects**
  (``sky``, ``sea``, ``sand``, ...);
- 1 to 3 foreground **objects** built from **parts** (a house has a facade,
  a roof, a door and windows; a car a body, windows and wheels, ...), at random
  positions and scales.  Later objects occlude earlier ones and every label
  map follows the occlusion exactly, because all of them are read from one
  painted region map;
- every region is painted with a named **colour** (the 11 basic colour terms,
  ``red-c`` ...), plain or with a two-tone **texture** of that colour
  (``striped``, ``dotted``, ...; a plain region has no texture label), plus a
  gentle shading gradient and mild pixel noise.

Image ``index`` is generated from ``numpy.random.default_rng([seed, index])``
alone, so any image can be made on its own, in any order, in any process, and
is identical across runs and machines.

Label resolution: labels are computed at image resolution and reduced to
``size // 2`` by nearest neighbour, sampling image pixel
``floor((i + 0.5) * size / (size // 2))`` for label pixel ``i`` (the pixel
at or just past the centre of each label cell; for even sizes the
bottom-right pixel of each 2x2 block, i.e. ``[1::2]``).  This is the rule
Pillow's ``NEAREST`` resize uses.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import DatasetError
from . import register_dataset
from .protocol import Concept, ConceptTable, Sample

#: Bump whenever a change to this module changes any generated image or label.
GENERATOR_VERSION = "netdissect-synthetic-1"

CATEGORIES = ("color", "object", "part", "texture", "scene")

COLORS = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")
BACKGROUND_OBJECTS = ("sky", "sea", "sand", "grass", "building", "road", "wall", "floor")
FOREGROUND_OBJECTS = ("house", "tree", "car", "person", "flower", "ball", "sun", "box")
PARTS = ("facade", "roof", "door", "window", "trunk", "crown", "body", "wheel", "head", "torso", "leg", "petal", "stem")
TEXTURES = ("striped", "dotted", "chequered", "zigzagged", "grid", "speckled")
SCENES = ("beach", "meadow", "street", "room", "desert", "night")


def _concept_names() -> list[tuple[str, str]]:
    names = [(c + "-c", "color") for c in COLORS]
    names += [(o, "object") for o in BACKGROUND_OBJECTS + FOREGROUND_OBJECTS]
    names += [(p, "part") for p in PARTS]
    names += [(t, "texture") for t in TEXTURES]
    names += [(s + "-s", "scene") for s in SCENES]
    return names


_NAMES = _concept_names()
#: concept name -> label number (1..K, in category order)
NUMBER = {name: i + 1 for i, (name, _) in enumerate(_NAMES)}
_COLOR_NUM = np.array([NUMBER[c + "-c"] for c in COLORS], dtype=np.int32)
_TEXTURE_NUM = np.array([NUMBER[t] for t in TEXTURES], dtype=np.int32)

# Two tones per variant, for plain regions (first tone) and two-tone textures.
# Every tone, with the shading and noise added below, is named as its colour
# by the van de Weijer et al. colour namer Broden used (checked in the tests).
_PALETTE: dict[str, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = {
    "black": [((22, 22, 26), (58, 58, 62)), ((40, 34, 34), (12, 12, 14))],
    "blue": [((40, 80, 200), (90, 140, 230)), ((30, 60, 150), (70, 120, 210)), ((100, 160, 235), (60, 120, 215))],
    "brown": [((130, 90, 50), (100, 70, 40)), ((150, 105, 65), (115, 80, 45))],
    "grey": [((128, 128, 128), (160, 160, 160)), ((105, 105, 108), (140, 140, 142))],
    "green": [((50, 160, 60), (30, 110, 40)), ((90, 190, 80), (50, 140, 50))],
    "orange": [((235, 120, 25), (205, 95, 10)), ((245, 140, 40), (225, 105, 20))],
    "pink": [((240, 110, 160), (250, 160, 195)), ((225, 90, 140), (245, 130, 175))],
    "purple": [((140, 50, 190), (100, 30, 150)), ((160, 80, 210), (120, 40, 170))],
    "red": [((200, 25, 35), (150, 10, 20)), ((225, 40, 40), (175, 20, 25))],
    "white": [((246, 246, 246), (222, 222, 226)), ((240, 242, 236), (250, 250, 250))],
    "yellow": [((230, 215, 40), (200, 185, 20)), ((240, 225, 90), (215, 200, 40))],
}
_N_VARIANTS = max(len(v) for v in _PALETTE.values())
# (11, V, 2, 3) float32 tones; missing variants repeat the first one.
_TONES = np.array(
    [[v[k % len(v)] for k in range(_N_VARIANTS)] for v in (_PALETTE[c] for c in COLORS)], dtype=np.float32
)
_N_VARIANTS_OF = np.array([len(_PALETTE[c]) for c in COLORS])

SHADING = 0.05  # brightness varies by at most +-5% across the image
SHADE_LEVELS = 11


def _dist(weights: dict[str, float] | None, mix: float = 0.0) -> np.ndarray:
    """Cumulative distribution over COLORS: ``(1 - mix) * weights + mix * uniform``."""
    p = np.zeros(len(COLORS))
    if weights:
        for name, w in weights.items():
            p[COLORS.index(name)] = w
        p /= p.sum()
    else:
        mix = 1.0
    p = (1 - mix) * p + mix / len(COLORS)
    c = np.cumsum(p)
    c[-1] = 1.0
    return c


# Scene backgrounds: bands from top to bottom, each (object, colour weights).
_SKY = _dist({"blue": 0.75, "grey": 0.15, "white": 0.10})
_SCENE_BANDS: dict[str, list[tuple[str, np.ndarray]]] = {
    "beach": [("sky", _SKY), ("sea", _dist({"blue": 0.75, "green": 0.25})),
              ("sand", _dist({"yellow": 0.6, "brown": 0.25, "white": 0.15}))],
    "meadow": [("sky", _SKY), ("grass", _dist({"green": 0.85, "yellow": 0.15}))],
    "street": [("sky", _SKY),
               ("building", _dist({"grey": 0.35, "brown": 0.2, "red": 0.2, "white": 0.15, "yellow": 0.1})),
               ("road", _dist({"grey": 0.7, "black": 0.3}))],
    "room": [("wall", _dist({"white": 0.3, "grey": 0.15, "yellow": 0.15, "pink": 0.1, "blue": 0.1,
                             "green": 0.1, "orange": 0.1})),
             ("floor", _dist({"brown": 0.55, "grey": 0.15, "red": 0.1, "white": 0.1, "black": 0.1}))],
    "desert": [("sky", _dist({"blue": 0.85, "white": 0.15})),
               ("sand", _dist({"yellow": 0.6, "orange": 0.25, "brown": 0.15}))],
    "night": [("sky", _dist({"black": 0.85, "purple": 0.15})), ("grass", _dist({"green": 1.0}))],
}
# Where the boundaries between bands lie, as fractions of the height (ranges).
_SCENE_CUTS: dict[str, list[tuple[float, float]]] = {
    "beach": [(0.25, 0.45), (0.5, 0.75)],
    "meadow": [(0.3, 0.6)],
    "street": [(0.15, 0.45), (0.6, 0.8)],  # first cut: building tops (a skyline)
    "room": [(0.55, 0.8)],
    "desert": [(0.3, 0.6)],
    "night": [(0.35, 0.65)],
}

# Foreground objects: height range (fraction of image), aspect range (w / h),
# where the bottom edge goes (fraction of height), and the parts in painting
# order, each (part name or None, colour distribution, primitives).  Primitives
# use fractions of the object's box: ("rect", x0, y0, x1, y1),
# ("ellipse", cx, cy, rx, ry), ("tri", xa, ya, xb, yb, xc, yc).
_FG_MIX = 0.4  # foreground colours: 40% uniform over all colours
_ANY = _dist(None)
_WINDOW = _dist({"blue": 0.4, "white": 0.3, "black": 0.3}, _FG_MIX)
_OBJECTS: dict[str, dict] = {
    "house": dict(height=(0.3, 0.6), aspect=(0.9, 1.3), bottom=(0.55, 1.05), parts=[
        ("facade", _ANY, [("rect", 0.1, 0.42, 0.9, 1.0)]),
        ("roof", _dist({"red": 0.4, "brown": 0.3, "grey": 0.2, "black": 0.1}, _FG_MIX),
         [("tri", 0.0, 0.45, 0.5, 0.0, 1.0, 0.45)]),
        ("door", _dist({"brown": 0.6, "red": 0.2, "white": 0.2}, _FG_MIX), [("rect", 0.42, 0.68, 0.58, 1.0)]),
        ("window", _WINDOW, [("rect", 0.18, 0.55, 0.34, 0.72), ("rect", 0.66, 0.55, 0.82, 0.72)]),
    ]),
    "tree": dict(height=(0.3, 0.7), aspect=(0.5, 0.8), bottom=(0.55, 1.05), parts=[
        ("trunk", _dist({"brown": 0.8, "grey": 0.1, "black": 0.1}, _FG_MIX), [("rect", 0.4, 0.5, 0.6, 1.0)]),
        ("crown", _dist({"green": 0.8, "orange": 0.1, "yellow": 0.1}, _FG_MIX),
         [("ellipse", 0.5, 0.33, 0.5, 0.33)]),
    ]),
    "car": dict(height=(0.15, 0.35), aspect=(1.8, 2.4), bottom=(0.6, 1.05), parts=[
        ("body", _ANY, [("rect", 0.0, 0.38, 1.0, 0.8), ("rect", 0.2, 0.05, 0.78, 0.42)]),
        ("window", _WINDOW, [("rect", 0.26, 0.12, 0.46, 0.38), ("rect", 0.52, 0.12, 0.72, 0.38)]),
        ("wheel", _dist({"black": 0.9, "grey": 0.1}, _FG_MIX),
         [("ellipse", 0.22, 0.8, 0.1, 0.2), ("ellipse", 0.78, 0.8, 0.1, 0.2)]),
    ]),
    "person": dict(height=(0.25, 0.55), aspect=(0.35, 0.5), bottom=(0.55, 1.05), parts=[
        ("leg", _ANY, [("rect", 0.22, 0.6, 0.46, 1.0), ("rect", 0.54, 0.6, 0.78, 1.0)]),
        ("torso", _ANY, [("rect", 0.12, 0.25, 0.88, 0.64)]),
        ("head", _dist({"pink": 0.4, "brown": 0.3, "orange": 0.3}, _FG_MIX), [("ellipse", 0.5, 0.13, 0.28, 0.12)]),
    ]),
    "flower": dict(height=(0.15, 0.35), aspect=(0.5, 0.7), bottom=(0.6, 1.05), parts=[
        ("stem", _dist({"green": 1.0}, _FG_MIX), [("rect", 0.45, 0.4, 0.55, 1.0)]),
        ("petal", _ANY, [("ellipse", 0.5, 0.12, 0.2, 0.11), ("ellipse", 0.5, 0.42, 0.2, 0.11),
                         ("ellipse", 0.22, 0.27, 0.22, 0.1), ("ellipse", 0.78, 0.27, 0.22, 0.1),
                         ("ellipse", 0.5, 0.27, 0.16, 0.09)]),
    ]),
    "ball": dict(height=(0.1, 0.25), aspect=(1.0, 1.0), bottom=(0.5, 1.05), parts=[
        (None, _ANY, [("ellipse", 0.5, 0.5, 0.5, 0.5)]),
    ]),
    "sun": dict(height=(0.1, 0.25), aspect=(1.0, 1.0), bottom=(0.15, 0.45), parts=[
        (None, _dist({"yellow": 0.6, "orange": 0.3, "white": 0.1}, _FG_MIX), [("ellipse", 0.5, 0.5, 0.5, 0.5)]),
    ]),
    "box": dict(height=(0.15, 0.35), aspect=(0.8, 1.5), bottom=(0.55, 1.05), parts=[
        (None, _ANY, [("rect", 0.0, 0.0, 1.0, 1.0)]),
    ]),
}

#: part name -> the objects it can belong to (for consistency checks).
PART_OF: dict[str, tuple[str, ...]] = {}
for _obj, _spec in _OBJECTS.items():
    for _part, _, _ in _spec["parts"]:
        if _part is not None:
            PART_OF[_part] = PART_OF.get(_part, ()) + (_obj,)

P_TEXTURE_BACKGROUND = 0.25
P_TEXTURE_FOREGROUND = 0.35


def _option(options: dict, key: str, default: int, minimum: int) -> int:
    value = options.pop(key, default)
    try:
        out = int(value)
        if isinstance(value, float) and value != out:
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(f"synthetic data option {key}={value!r} is not an integer") from None
    if out < minimum:
        raise DatasetError(f"synthetic data option {key}={out} is too small; it must be >= {minimum}")
    return out


class _Region:
    """One painted region: a background band or one part of one object."""

    __slots__ = ("obj", "part", "color", "variant", "texture", "tparams", "box")

    def __init__(self, obj, part, color, variant, texture, tparams, box):
        self.obj = obj  # label number
        self.part = part  # label number or 0
        self.color = color  # index into COLORS
        self.variant = variant  # palette variant
        self.texture = texture  # index into TEXTURES or -1
        self.tparams = tparams  # texture parameters (tuple)
        self.box = box  # [y0, y1, x0, x1] bounding box of everything painted


@register_dataset("synthetic")
class SyntheticConcepts:
    """Procedural images with exact colour, object, part, texture and scene labels.

    Options (strings are accepted, as given in a spec like
    ``synthetic:n=500,seed=1``): ``n`` images (default 1000), ``seed``
    (default 0), ``size`` the image side (default 224; labels at
    ``size // 2``).

    Samples: image (size, size, 3) uint8; pixel_labels (4, size//2, size//2)
    int32 with layers color, object, part, texture (0 = none); image_labels
    (1,) int64, the scene.

    Parameters
    ----------
    n : int or str
        Number of images (>= 0).
    seed : int or str
        Seed (>= 0); image i is drawn from (seed, i) alone.
    size : int or str
        Image side (>= 16).
    **unknown
        Any other option raises.

    Raises
    ------
    DatasetError
        For an unknown option, or a value that is not an integer or is too small.
    """

    def __init__(self, n=1000, seed=0, size=224, **unknown):
        if unknown:
            raise DatasetError(
                f"synthetic data: unknown option(s) {', '.join(sorted(unknown))}; allowed: n, seed, size"
            )
        opts = {"n": n, "seed": seed, "size": size}
        self.n = _option(opts, "n", 1000, 0)
        self.seed = _option(opts, "seed", 0, 0)
        self.size = _option(opts, "size", 224, 16)
        self.image_size = (self.size, self.size)
        self.label_size = (self.size // 2, self.size // 2)
        self.concepts = ConceptTable(
            [Concept(NUMBER[name], name, cat) for name, cat in _NAMES], CATEGORIES
        )
        # Label pixel i samples image pixel floor((i + 0.5) * size / label_size).
        self._label_rows = ((np.arange(self.label_size[0]) + 0.5) * self.size / self.label_size[0]).astype(np.intp)

    # -- protocol --------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"SyntheticConcepts(n={self.n}, seed={self.seed}, size={self.size})"

    def __eq__(self, other) -> bool:
        return isinstance(other, SyntheticConcepts) and (self.n, self.seed, self.size) == (
            other.n, other.seed, other.size)

    def __hash__(self) -> int:
        return hash((SyntheticConcepts, self.n, self.seed, self.size))

    def _check_index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"image index {index} out of range for {self.n} images")
        return i

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        rng, scene, regions, rmap = self._layout(i)
        labels = self._labels(regions, rmap)
        image = self._paint(rng, regions, rmap)
        return Sample(image=image, pixel_labels=labels, image_labels=np.array([scene], dtype=np.int64))

    def load_labels(self, index: int) -> Sample:
        """The labels of image ``index`` without painting it (``image`` is None)."""
        i = self._check_index(index)
        _, scene, regions, rmap = self._layout(i)
        return Sample(image=None, pixel_labels=self._labels(regions, rmap),
                      image_labels=np.array([scene], dtype=np.int64))

    def image_id(self, index: int) -> str:
        """The index, zero-padded to six digits."""
        return f"{self._check_index(index):06d}"

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the generator version, n, seed and size."""
        key = f"{GENERATOR_VERSION}|n={self.n}|seed={self.seed}|size={self.size}"
        return hashlib.sha256(key.encode()).hexdigest()

    def spec(self) -> str:
        """``synthetic:n=N,seed=S,size=Z``."""
        return f"synthetic:n={self.n},seed={self.seed},size={self.size}"

    # -- generation ------------------------------------------------------
    def _layout(self, index: int):
        """All random structure of image ``index``: scene, regions, region map.

        Returns (rng, scene label number, regions, rmap (H, W) uint8 region
        index).  Everything the labels depend on is drawn here, before any
        draw that only affects pixel values, so :meth:`load_labels` can stop
        after this step and still agree with :meth:`__getitem__`.
        """
        rng = np.random.default_rng([self.seed, index])
        H = W = self.size
        scene = SCENES[int(rng.integers(len(SCENES)))]
        bands = _SCENE_BANDS[scene]
        cuts = _SCENE_CUTS[scene]
        cols = np.arange(W, dtype=np.float32)
        rows = np.arange(H, dtype=np.int32)[:, None]
        rmap = np.zeros((H, W), dtype=np.uint8)
        regions: list[_Region] = []

        # Background bands: boundary k is a per-column row position.
        bounds = []
        for k, (lo, hi) in enumerate(cuts):
            if scene == "street" and k == 0:
                # A skyline: buildings of random widths and heights.
                edges, tops, x = [], [], 0.0
                while x < W:
                    w = rng.uniform(0.1, 0.3) * W
                    edges.append(w)
                    tops.append(rng.uniform(lo, hi) * H)
                    x += w
                widths = np.diff(np.round(np.concatenate([[0.0], np.cumsum(edges)])).astype(int))
                b = np.repeat(np.array(tops, dtype=np.float32), widths)[:W]
            else:
                amp = rng.uniform(0.0, 0.03) * H
                period = rng.uniform(0.3, 1.5) * W
                phase = rng.uniform(0.0, 1.0)
                b = rng.uniform(lo, hi) * H + amp * _wave(cols / period + phase)
            if bounds:
                b = np.maximum(b, bounds[-1] + 1)
            bounds.append(np.round(b).astype(np.int32))
        for b in bounds:
            rmap += rows >= b[None, :]
        top = 0
        for k, (obj, cdist) in enumerate(bands):
            bottom = H if k == len(bounds) else int(min(H, bounds[k].max()))
            y0 = top if k == 0 else int(max(0, bounds[k - 1].min()))
            regions.append(self._new_region(rng, NUMBER[obj], 0, cdist, P_TEXTURE_BACKGROUND,
                                            [y0, max(bottom, y0), 0, W]))
        # Foreground objects, later ones painted over earlier ones.
        n_objects = int(rng.integers(1, 4))
        kinds = rng.integers(len(FOREGROUND_OBJECTS), size=n_objects)
        for kind in kinds:
            name = FOREGROUND_OBJECTS[int(kind)]
            spec = _OBJECTS[name]
            oh = rng.uniform(*spec["height"]) * H
            ow = min(rng.uniform(*spec["aspect"]) * oh, 0.9 * W)
            ox = rng.uniform(-0.15 * ow, W - 0.85 * ow)
            oy = rng.uniform(*spec["bottom"]) * H - oh
            for part, cdist, prims in spec["parts"]:
                rid = len(regions)
                region = self._new_region(rng, NUMBER[name], NUMBER[part] if part else 0, cdist,
                                          P_TEXTURE_FOREGROUND, None)
                boxes = [_raster(rmap, rid, prim, ox, oy, ow, oh) for prim in prims]
                boxes = [b for b in boxes if b is not None]
                if boxes:
                    region.box = [min(b[0] for b in boxes), max(b[1] for b in boxes),
                                  min(b[2] for b in boxes), max(b[3] for b in boxes)]
                else:
                    region.box = [0, 0, 0, 0]
                regions.append(region)
        scene_number = NUMBER[scene + "-s"]
        return rng, scene_number, regions, rmap

    def _new_region(self, rng, obj, part, cdist, p_texture, box) -> _Region:
        color = int(np.searchsorted(cdist, rng.random(), side="right"))
        color = min(color, len(COLORS) - 1)
        variant = int(rng.integers(_N_VARIANTS_OF[color]))
        texture = -1
        tparams = ()
        if rng.random() < p_texture:
            texture = int(rng.integers(len(TEXTURES)))
            scale = self.size / 224.0
            period = max(4.0, float(rng.integers(6, 15)) * scale)
            direction = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
            tparams = (period, direction, float(rng.uniform(0, period)),
                       float(rng.uniform(0, period)), bool(rng.random() < 0.5))
        return _Region(obj, part, color, variant, texture, tparams, box)

    def _labels(self, regions: list[_Region], rmap: np.ndarray) -> np.ndarray:
        """(4, sh, sw) int32: color, object, part, texture label layers."""
        idx = self._label_rows
        small = rmap[idx[:, None], idx[None, :]]
        table = np.zeros((4, len(regions)), dtype=np.int32)
        for r, reg in enumerate(regions):
            table[0, r] = _COLOR_NUM[reg.color]
            table[1, r] = reg.obj
            table[2, r] = reg.part
            table[3, r] = _TEXTURE_NUM[reg.texture] if reg.texture >= 0 else 0
        return table[:, small]

    def _paint(self, rng, regions: list[_Region], rmap: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8: each region in its colour, two-tone where textured, shaded, noisy.

        Shading is a linear brightness ramp of at most +-SHADING, quantised to
        SHADE_LEVELS steps and baked into the colour table, so painting is one
        table lookup per pixel; the noise is triangular on -7..7 (std 3.2)
        made from random bytes.
        """
        H = W = self.size
        n = len(regions)
        second = np.zeros((H, W), dtype=np.uint8)  # 1 where the second tone is painted
        for r, reg in enumerate(regions):
            if reg.texture < 0:
                continue
            y0, y1, x0, x1 = reg.box
            if y1 <= y0 or x1 <= x0:
                continue
            inside = rmap[y0:y1, x0:x1] == r
            pattern = _texture(rng, reg.texture, reg.tparams, y0, y1, x0, x1)
            second[y0:y1, x0:x1] |= (pattern & inside).view(np.uint8)
        # Shading ramp in a random direction, as a level per pixel.
        ay, ax = rng.uniform(-SHADING, SHADING, size=2)
        gy = (np.arange(H, dtype=np.float32) / (H - 1) - 0.5) * np.float32(ay)
        gx = (np.arange(W, dtype=np.float32) / (W - 1) - 0.5) * np.float32(ax)
        factors = 1.0 + np.linspace(-SHADING, SHADING, SHADE_LEVELS, dtype=np.float32)
        level = np.rint((gy[:, None] + gx[None, :] + SHADING) * ((SHADE_LEVELS - 1) / (2 * SHADING)))
        # Colour table: (tone, region, level) -> packed RGBA bytes.
        tones = np.empty((2, n, 3), dtype=np.float32)
        for r, reg in enumerate(regions):
            tones[:, r] = _TONES[reg.color, reg.variant]
        table = np.zeros((2 * n * SHADE_LEVELS, 4), dtype=np.uint8)
        shaded = tones.reshape(2 * n, 1, 3) * factors[None, :, None]
        table[:, :3] = np.clip(np.rint(shaded), 0, 255).reshape(-1, 3)
        index = rmap.astype(np.uint16)
        index += second.astype(np.uint16) * n
        index *= SHADE_LEVELS
        index += level.astype(np.uint16)
        rgb = table.view(np.uint32)[index.ravel(), 0].view(np.uint8).reshape(H, W, 4)[:, :, :3]
        img = rgb.astype(np.int16)
        noise = np.frombuffer(rng.bytes(H * W * 3), dtype=np.uint8).reshape(H, W, 3)
        img += (noise & 7) + ((noise >> 3) & 7)
        img -= 7
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)


def _raster(rmap, rid, prim, ox, oy, ow, oh):
    """Paint primitive ``prim`` of an object box into ``rmap`` as region ``rid``.

    Returns the clipped pixel box [y0, y1, x0, x1] painted, or None if empty.
    Pixel (y, x) is inside when its centre (y + .5, x + .5) is.
    """
    H, W = rmap.shape
    kind = prim[0]
    if kind == "rect":
        _, fx0, fy0, fx1, fy1 = prim
        x0, x1 = ox + fx0 * ow, ox + fx1 * ow
        y0, y1 = oy + fy0 * oh, oy + fy1 * oh
    elif kind == "ellipse":
        _, fcx, fcy, frx, fry = prim
        cx, cy, rx, ry = ox + fcx * ow, oy + fcy * oh, frx * ow, fry * oh
        x0, x1, y0, y1 = cx - rx, cx + rx, cy - ry, cy + ry
    else:  # triangle
        xs = [ox + f * ow for f in prim[1::2]]
        ys = [oy + f * oh for f in prim[2::2]]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    # Pixels whose centres can lie inside: round(x0) .. round(x1).
    px0, px1 = max(0, int(round(x0))), min(W, int(round(x1)))
    py0, py1 = max(0, int(round(y0))), min(H, int(round(y1)))
    if px1 <= px0 or py1 <= py0:
        return None
    target = rmap[py0:py1, px0:px1]
    if kind == "rect":
        target[...] = rid
        return [py0, py1, px0, px1]
    yy = np.arange(py0, py1, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(px0, px1, dtype=np.float32)[None, :] + 0.5
    if kind == "ellipse":
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    else:
        (ax, bx, cx_), (ay, by, cy_) = xs, ys
        d1 = (xx - bx) * (ay - by) - (ax - bx) * (yy - by)
        d2 = (xx - cx_) * (by - cy_) - (bx - cx_) * (yy - cy_)
        d3 = (xx - ax) * (cy_ - ay) - (cx_ - ax) * (yy - ay)
        neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
        pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
        mask = ~(neg & pos)
    target[mask] = rid
    return [py0, py1, px0, px1]


# Stripe directions as exact constants (no libm calls: images must not depend
# on the platform's sin/cos rounding).
_R = 0.7071067811865476
_DIRECTIONS = ((1.0, 0.0), (0.0, 1.0), (_R, _R), (_R, -_R), (0.8, 0.6), (0.6, 0.8), (0.8, -0.6), (0.6, -0.8))


def _wave(t: np.ndarray) -> np.ndarray:
    """A smooth periodic wave in [-1, 1] with period 1, from + - * only (bit-exact everywhere)."""
    s = t % 1.0
    tri = 4.0 * np.abs(s - 0.5) - 1.0
    return tri * (1.5 - 0.5 * tri * tri)


def _texture(rng, kind, params, y0, y1, x0, x1) -> np.ndarray:
    """(y1 - y0, x1 - x0) bool: where a texture paints its second tone."""
    period, (dx_, dy_), ox, oy, flip = params
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    if flip:
        xx, yy = yy.T, xx.T  # transpose the pattern's orientation
        transpose = True
    else:
        transpose = False
    half = period / 2
    name = TEXTURES[kind]
    if name == "striped":
        u = xx * dx_ + yy * dy_ + ox
        out = np.floor(u / half) % 2 >= 1
    elif name == "dotted":
        dx = (xx + ox) % period - half
        dy = (yy + oy) % period - half
        r = 0.28 * period
        out = dx * dx + dy * dy <= r * r
    elif name == "chequered":
        out = (np.floor((xx + ox) / half) + np.floor((yy + oy) / half)) % 2 >= 1
    elif name == "zigzagged":
        tri = np.abs(((xx + ox) / period) % 1.0 - 0.5) * period
        out = np.floor((yy + oy + tri) / half) % 2 >= 1
    elif name == "grid":
        lw = max(1.0, round(period / 5))
        out = ((xx + ox) % period < lw) | ((yy + oy) % period < lw)
    else:  # speckled
        shape = (x1 - x0, y1 - y0) if transpose else (y1 - y0, x1 - x0)
        out = rng.random(shape, dtype=np.float32) < 0.25
    out = np.broadcast_to(out, (x1 - x0, y1 - y0) if transpose else (y1 - y0, x1 - x0))
    return np.ascontiguousarray(out.T if transpose else out)


__all__ = ["SyntheticConcepts", "GENERATOR_VERSION", "CATEGORIES", "PART_OF", "NUMBER"]
