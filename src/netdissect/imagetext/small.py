"""The project's own small image-text model, trained on its synthetic concept scenes.

Spec ``synthetic_clip``.  A small CNN embeds images and an embedding bag over a
closed word vocabulary embeds text, both into one 128-d space; they were
trained together with a contrastive (CLIP) loss on
:class:`~netdissect.data.synthetic.SyntheticConcepts` scenes and captions made
from their labels, e.g. ``"a street: blue sky; grey striped building; house
with red roof, white facade"`` (``scripts/train_synthetic_clip.py``).  The
weights (fp16 safetensors, under 1 MB) ship inside the package, so describing
units on the synthetic probe needs no download.

Vocabulary: the 52 concept words of the synthetic data (11 colours, 16 objects,
13 parts, 6 textures, 6 scenes, as :data:`CONCEPT_WORDS` lists them; these
are :attr:`SyntheticClipImageText.vocabulary`).  Text is lower-cased and split
into words; each word may carry a Broden category suffix (``red-c``,
``beach-s``: the synthetic data set's own concept names), a plural ``s``, or
an alias (``gray``, ``checkered``...); function words (``a``, ``with``,
``on``...) are ignored.  A phrase of known words is embedded as the mean of
its words (bag of words); any other word raises :class:`ConfigError` naming
it.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import synthetic as syn
from ..errors import ConfigError, ModelError, close_matches
from .transforms import ImageTransform

FORMAT = "netdissect-synthetic-clip-1"
#: The concept words by category, in the order of the synthetic data set.
CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "color": syn.COLORS,
    "object": syn.BACKGROUND_OBJECTS + syn.FOREGROUND_OBJECTS,
    "part": syn.PARTS,
    "texture": syn.TEXTURES,
    "scene": syn.SCENES,
}
#: Words that carry no concept; dropped from any text.
FUNCTION_WORDS = frozenset(
    "a an the with and on in of at by under over near some its it is this that there scene photo picture image "
    "one two three".split()
)
#: Other spellings accepted for vocabulary words.
ALIASES = {
    "gray": "grey", "checkered": "chequered", "checked": "chequered", "chequer": "chequered",
    "stripes": "striped", "stripe": "striped", "stripy": "striped", "dots": "dotted", "dot": "dotted",
    "spotted": "dotted", "zigzag": "zigzagged", "zigzags": "zigzagged", "speckle": "speckled",
    "gridded": "grid", "man": "person", "woman": "person", "people": "person",
}
_SPLIT = re.compile(r"[^a-z]+")
_SUFFIX = re.compile(r"^([a-z]+)-[a-z]$")  # Broden's category suffixes: red-c, beach-s
WEIGHTS_FILE = "synthetic_clip.safetensors"


def vocabulary_words() -> list[str]:
    """The concept words, category by category (the model's ``vocabulary``).

    Returns
    -------
    list of str
        52 words.
    """
    return [w for words in CONCEPT_WORDS.values() for w in words]


class WordTokenizer:
    """Text -> word indices over a closed vocabulary (see the module docstring for the rules).

    Parameters
    ----------
    words : sequence of str
        The vocabulary; index i embeds ``words[i]``.
    """

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ConfigError("word tokenizer: the vocabulary has repeated words")

    def _word(self, token: str) -> str | None:
        if token in self.index:
            return token
        if token in ALIASES:
            return ALIASES[token]
        if token.endswith("s") and token[:-1] in self.index:
            return token[:-1]
        return None

    def __call__(self, text: str) -> list[int]:
        """Word indices of ``text`` (function words dropped).

        Parameters
        ----------
        text : str
            A word, a Broden concept name (``red-c``) or a phrase.

        Returns
        -------
        list of int
            Indices into :attr:`words`, in order (possibly empty).

        Raises
        ------
        ConfigError
            For a word outside the vocabulary.
        """
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string, got {type(text).__name__}")
        out = []
        for part in text.lower().replace("_", " ").split():
            m = _SUFFIX.match(part)
            if m and self._word(m.group(1)) is not None:
                part = m.group(1)
            for token in _SPLIT.split(part):
                if not token or token in FUNCTION_WORDS:
                    continue
                word = self._word(token)
                if word is None:
                    hint = close_matches(token, self.words)
                    raise ConfigError(
                        f"word {token!r} (in {text!r}) is outside the vocabulary of the synthetic_clip "
                        f"image-text model ({len(self.words)} concept words: colours, objects, parts, "
                        "textures, scenes of the synthetic data)" + (f"; {hint}" if hint else "")
                    )
                out.append(self.index[word])
        return out


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    pad = k // 2 if k % 2 else 0
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SyntheticClip(nn.Module):
    """The network: a small CNN for images and a bag of word embeddings for text.

    Image encoder: a stem that reduces the image 4 times (``patch``: one 4x4
    stride-4 convolution; ``conv``: a 3x3 stride-2 then a 2x2 stride-2
    convolution), two stride-2 and one stride-1 3x3 convolutions (each with
    BatchNorm and ReLU), average and max pooling, a linear map to ``dim``.
    Text encoder: the mean of word embeddings, then a two-layer MLP to
    ``dim``.

    Parameters
    ----------
    vocab_size : int
        Number of words.
    dim : int
        Embedding size.
    width : int
        Stem channels (later layers use 2x and 4x).
    text_width : int
        Word embedding size.
    stem : str
        ``patch`` or ``conv`` (see above).
    """

    def __init__(self, vocab_size: int, dim: int = 128, width: int = 32, text_width: int = 128, stem: str = "conv"):
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ConfigError(f"SyntheticClip stem {stem!r} must be 'patch' or 'conv'")
        self.config = {"vocab_size": vocab_size, "dim": dim, "width": width, "text_width": text_width, "stem": stem}
        w = width
        first = _conv(3, w, 4, 4) if stem == "patch" else nn.Sequential(_conv(3, w // 2, 3, 2), _conv(w // 2, w, 2, 2))
        self.features = nn.Sequential(first, _conv(w, 2 * w, 3, 2), _conv(2 * w, 4 * w, 3, 2),
                                      _conv(4 * w, 4 * w, 3, 1))
        self.image_head = nn.Linear(8 * w, dim)
        self.words = nn.EmbeddingBag(vocab_size, text_width, mode="mean")
        self.text_head = nn.Sequential(nn.Linear(text_width, text_width), nn.ReLU(), nn.Linear(text_width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, dim) embeddings (not normalised)."""
        f = self.features(x)
        return self.image_head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))

    def encode_bags(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Word bags (flat ``indices``, ``offsets`` of each bag, as ``EmbeddingBag``) -> (M, dim)."""
        return self.text_head(self.words(indices, offsets))


#: How the model sees images: shorter side to 96 pixels, centre crop, mean = std = 0.5.
TRANSFORM = ImageTransform(resize=96, crop=96, interpolation="bilinear", mode="shortest")


class SyntheticClipImageText:
    """The small image-text model behind the :class:`~netdissect.imagetext.base.ImageTextModel` protocol.

    Parameters
    ----------
    net : SyntheticClip
        The network (put in eval mode).
    words : sequence of str
        Its vocabulary, in embedding order.
    weights : str or pathlib.Path, optional
        The file it was loaded from, when not the shipped one (kept in :meth:`spec`).
    transform : ImageTransform
        Image preprocessing (default :data:`TRANSFORM`).
    """

    def __init__(self, net: SyntheticClip, words: Sequence[str], *, weights=None,
                 transform: ImageTransform = TRANSFORM):
        self.net = net.eval()
        self.tokenizer = WordTokenizer(words)
        self.transform = transform
        self.weights = None if weights is None else str(weights)
        self.vocabulary: list[str] | None = [w for w in vocabulary_words() if w in self.tokenizer.index]
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        """The device of the network."""
        return self.net.logit_scale.device

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> (N, 128) float32 embeddings, on the model's device."""
        x = self.transform(images.to(self.device))
        return self.net.encode_image(x).float()

    @torch.no_grad()
    def encode_text(self, words: Sequence[str]) -> torch.Tensor:
        """M words or phrases -> (M, 128) float32 embeddings, on the model's device.

        Parameters
        ----------
        words : sequence of str
            Texts made of vocabulary words (see the module docstring).

        Returns
        -------
        torch.Tensor
            (M, 128) float32.

        Raises
        ------
        ConfigError
            For a word outside the vocabulary, or a text with no concept word.
        """
        if isinstance(words, str):
            raise ConfigError("encode_text takes a sequence of strings, not one string")
        bags = []
        for text in words:
            bag = self.tokenizer(text)
            if not bag:
                raise ConfigError(f"text {text!r} has no concept word the synthetic_clip model knows")
            bags.append(bag)
        if not bags:
            return torch.zeros(0, self.net.config["dim"], device=self.device)
        indices = torch.tensor([i for b in bags for i in b], dtype=torch.long, device=self.device)
        offsets = torch.tensor(np.cumsum([0] + [len(b) for b in bags[:-1]]), dtype=torch.long, device=self.device)
        return self.net.encode_bags(indices, offsets).float()

    def to(self, device) -> "SyntheticClipImageText":
        """Move to ``device``; returns self."""
        self.net.to(device)
        return self

    def spec(self) -> str:
        """``synthetic_clip`` (``synthetic_clip?weights=FILE`` for other weights)."""
        return "synthetic_clip" if self.weights is None else f"synthetic_clip?weights={self.weights}"

    def fingerprint(self) -> str:
        """sha256 over the weights, the vocabulary and the preprocessing."""
        if self._fingerprint is None:
            from ..models.weights import state_hash

            h = hashlib.sha256(f"{FORMAT}|{self.transform.key()}|".encode())
            h.update(json.dumps(self.tokenizer.words).encode())
            h.update(state_hash(self.net).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"SyntheticClipImageText({self.spec()!r}, {len(self.tokenizer.words)} words)"


def shipped_weights() -> Path:
    """The weights file inside the package.

    Returns
    -------
    pathlib.Path
        ``netdissect/imagetext/weights/synthetic_clip.safetensors``.
    """
    return Path(str(resources.files("netdissect.imagetext").joinpath("weights", WEIGHTS_FILE)))


def save_synthetic_clip(net: SyntheticClip, words: Sequence[str], path, **metadata: str) -> None:
    """Write the network's weights as fp16 safetensors with its vocabulary and config.

    Parameters
    ----------
    net : SyntheticClip
        The trained network.
    words : sequence of str
        Its vocabulary, in embedding order.
    path : str or pathlib.Path
        The file to write.
    **metadata : str
        Extra string metadata (training settings, scores).
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().to(torch.float16) if v.is_floating_point() else v.detach().cpu()
             for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "words": json.dumps(list(words)), "config": json.dumps(net.config), **metadata}
    save_file(state, str(path), metadata=meta)


def load_synthetic_clip(weights=None) -> SyntheticClipImageText:
    """The small image-text model, with the shipped weights or a file written by :func:`save_synthetic_clip`.

    Parameters
    ----------
    weights : str or pathlib.Path, optional
        A safetensors file (default: the one in the package).

    Returns
    -------
    SyntheticClipImageText
        The model, on the CPU in eval mode.

    Raises
    ------
    ModelError
        When the file is missing or not a synthetic_clip weights file.
    """
    from safetensors import safe_open

    path = shipped_weights() if weights is None else Path(weights).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"synthetic_clip weights {str(path)!r} not found"
                         + ("; reinstall netdissect" if weights is None else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"synthetic_clip weights {str(path)!r} cannot be read: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{str(path)!r} is not a synthetic_clip weights file (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    words = json.loads(meta["words"])
    config = json.loads(meta["config"])
    net = SyntheticClip(**config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"synthetic_clip weights {str(path)!r} do not fit the network: {exc}") from None
    return SyntheticClipImageText(net, words, weights=None if weights is None else path)


# -- captions of synthetic scenes (training and evaluation) --------------------

_NAME_OF = {number: name for name, number in syn.NUMBER.items()}


def _plain(number: int) -> str:
    name = _NAME_OF[int(number)]
    m = _SUFFIX.match(name)
    return m.group(1) if m else name


def label_words(numbers) -> list[str]:
    """The vocabulary words of synthetic label numbers (0 = no label is skipped).

    Parameters
    ----------
    numbers : iterable of int
        Label numbers of :class:`~netdissect.data.synthetic.SyntheticConcepts`.

    Returns
    -------
    list of str
        Their words (``red-c`` -> ``red``), in the order given.
    """
    return [_plain(n) for n in numbers if int(n) != 0]


def synthetic_caption(pixel_labels: np.ndarray, image_labels: np.ndarray, min_fraction: float = 0.002):
    """A caption of a synthetic scene, made from its labels, and the concept words in it.

    Every painted region (one colour, object, optional part and texture)
    covering at least ``min_fraction`` of the label pixels gives a phrase:
    ``"red striped roof"`` for a part (grouped under its object: ``"house with
    red roof, white facade"``), ``"blue sky"`` for a background band or an
    object without parts.  The scene comes first: ``"a street: blue sky; ..."``.

    Parameters
    ----------
    pixel_labels : numpy.ndarray
        (4, h, w) label numbers of the synthetic data (colour, object, part,
        texture layers; 0 = none).
    image_labels : numpy.ndarray
        (1,) the scene label number.
    min_fraction : float
        Smallest region kept, as a fraction of the label pixels.

    Returns
    -------
    caption : str
        The caption.
    words : frozenset of str
        The concept words in it (vocabulary words).
    """
    layers = np.asarray(pixel_labels).reshape(4, -1).astype(np.int64)  # (4, pixels)
    # one integer per (colour, object, part, texture) tuple: np.unique on rows is slow
    base = int(layers.max()) + 1
    keys, counts = np.unique(((layers[0] * base + layers[1]) * base + layers[2]) * base + layers[3],
                             return_counts=True)
    tuples = np.stack([keys // base**3, keys // base**2 % base, keys // base % base, keys % base], 1)
    keep = counts >= max(1.0, min_fraction * layers.shape[1])
    scene = _plain(int(np.asarray(image_labels).reshape(-1)[0]))
    words = {scene}
    backgrounds, objects = [], {}
    for (color, obj, part, texture), _ in sorted(zip(tuples[keep].tolist(), counts[keep].tolist()),
                                                  key=lambda t: -t[1]):
        if obj == 0:
            continue
        phrase = [w for w in (_plain(color) if color else None, _plain(texture) if texture else None) if w]
        words.update(phrase)
        oname = _plain(obj)
        words.add(oname)
        if part:
            pname = _plain(part)
            words.add(pname)
            objects.setdefault(oname, []).append(" ".join(phrase + [pname]))
        elif oname in syn.BACKGROUND_OBJECTS:
            backgrounds.append(" ".join(phrase + [oname]))
        else:
            objects.setdefault(oname, []).append(" ".join(phrase + [oname]))
    phrases = list(backgrounds)
    for oname, parts in objects.items():
        whole = [p for p in parts if p.endswith(oname)]
        rest = [p for p in parts if not p.endswith(oname)]
        phrases += whole
        if rest:
            phrases.append(f"{oname} with {', '.join(dict.fromkeys(rest))}")
    return f"a {scene}: " + "; ".join(phrases), frozenset(words)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, match: torch.Tensor, logit_scale: torch.Tensor):
    """Contrastive (CLIP) loss with several positives.

    Parameters
    ----------
    image_emb, text_emb : torch.Tensor
        (B, D) embeddings (normalised here).
    match : torch.Tensor
        (B, B) bool, ``match[i, j]``: text j describes image i (the diagonal
        is True); each row's and column's targets are uniform over its matches.
    logit_scale : torch.Tensor
        Log of the inverse temperature (clamped at log 100).

    Returns
    -------
    torch.Tensor
        The mean of the image-to-text and text-to-image cross entropies.
    """
    logits = logit_scale.clamp(max=float(np.log(100))).exp() * F.normalize(image_emb, dim=1) @ F.normalize(
        text_emb, dim=1).T
    target = match.float()
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(target / target.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2
