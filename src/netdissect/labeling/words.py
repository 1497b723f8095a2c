"""Describing units in words: vocabularies, the concept-activation matrix, label tables, evaluation.

The method is CLIP-Dissect (Oikarinen & Weng, ICLR 2023), as DISCOVER
(Panousis et al., NeurIPS 2023) uses it: with an image-text model, P = the
normalised image embeddings of N probe images @ the normalised text
embeddings of M words (the bare word is the prompt); a unit's description is
the word whose column of P best matches the unit's summary activations under
a similarity function (:mod:`netdissect.labeling.similarity`).
:func:`netdissect.describe` composes it with the engine; this module holds
the parts that need no model:

- vocabularies (:func:`load_vocabulary`): the concept names of a
  Broden-format data set, class names, the most common English words
  (``wordfreq``), a user's file, or the image-text model's own closed
  vocabulary;
- :func:`concept_activations` (P), :func:`word_table` (the label table of a
  layer), :func:`evaluate` (top-1/top-5 and cosine against known names, as
  CLIP-Dissect evaluates final-layer units) and :func:`agreement` (where
  words and IoU labels agree).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError

#: common English words of little visual content, dropped from the ``wordfreq`` vocabulary
STOP_WORDS = frozenset("""
a about above after again against ago all almost along already also although always am among an and another any
anybody anyone anything anyway anywhere are around as at away back be because been before being below between both
but by can cannot could did do does doing done down during each either else enough etc even ever every everybody
everyone everything everywhere few for from further get gets getting got gotten had has have having he her here hers
herself him himself his how however i if in indeed into is it its itself just least less let like may maybe me might
mine more most much must my myself near neither never no nobody none nor not nothing now of off often on once one
only onto or other others otherwise our ours ourselves out over own per perhaps please quite rather really same
say says said see seem seems shall she should since so some somebody someone something sometimes somewhat
somewhere still such than that the their theirs them themselves then there therefore these they thing things this
those though through thus till to too toward towards under unless until up upon us very via was we well were what
whatever when whenever where whether which while who whoever whole whom whose why will with within without would
yes yet you your yours yourself yourselves also been isn aren wasn weren hasn haven hadn doesn don didn won wouldn
shan shouldn couldn mustn ain ll ve re th nd rd st
""".split())

#: vocabulary of ``wordfreq`` by default: CLIP-Dissect's ``20k`` concept set size
ENGLISH_WORDS = 20000
_SUFFIX = re.compile(r"-[a-z]$")  # Broden's category suffixes: red-c, beach-s


def strip_suffix(name: str) -> str:
    """A Broden concept name without its category suffix: ``red-c`` -> ``red``, ``beach-s`` -> ``beach``.

    Parameters
    ----------
    name : str
        A concept name.

    Returns
    -------
    str
        The name without a trailing ``-x`` (one letter).
    """
    return _SUFFIX.sub("", str(name))


def normal(text: str) -> str:
    """Text compared across methods: lower case, Broden suffix dropped, ``_`` and ``-`` as spaces.

    Parameters
    ----------
    text : str
        A word, a class or concept name.

    Returns
    -------
    str
        The normal form.
    """
    return " ".join(strip_suffix(str(text).strip().lower()).replace("_", " ").replace("-", " ").split())


@dataclass
class Vocabulary:
    """The words units are described with.

    Attributes
    ----------
    spec : str
        What it was made from (``wordfreq:20000``, ``synthetic``, a path...).
    words : list of str
        The M distinct words (or phrases), in order: the columns of P.
    concepts : list of str
        For each word, the name(s) it stands for in its source (a Broden
        concept ``red-c`` for the word ``red``; several joined by ``;``);
        the word itself otherwise.
    """

    spec: str
    words: list[str]
    concepts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.concepts:
            self.concepts = list(self.words)
        if len(self.concepts) != len(self.words):
            raise ConfigError(f"vocabulary {self.spec!r}: {len(self.words)} words but {len(self.concepts)} concepts")
        if not self.words:
            raise ConfigError(f"vocabulary {self.spec!r} holds no word")

    def __len__(self) -> int:
        return len(self.words)

    def fingerprint(self) -> str:
        """sha256 (hex) of the words and their concepts, in order."""
        h = hashlib.sha256(b"vocabulary-1|")
        for w, c in zip(self.words, self.concepts):
            h.update(f"{w}\t{c}\n".encode())
        return h.hexdigest()

    @classmethod
    def from_names(cls, spec: str, names: Sequence[str], *, strip: bool = False) -> "Vocabulary":
        """Distinct words from names, in first-seen order (a word of several names keeps them all).

        Parameters
        ----------
        spec : str
            Recorded as :attr:`spec`.
        names : sequence of str
            Concept or class names; blanks are skipped.
        strip : bool
            Drop Broden's category suffixes (:func:`strip_suffix`).

        Returns
        -------
        Vocabulary
            The words and the names behind each.
        """
        by_word: dict[str, list[str]] = {}
        for name in names:
            name = str(name).strip()
            if not name:
                continue
            word = strip_suffix(name) if strip else name
            by_word.setdefault(word, [])
            if name not in by_word[word]:
                by_word[word].append(name)
        return cls(spec, list(by_word), [";".join(v) for v in by_word.values()])


def english_words(n: int = ENGLISH_WORDS) -> list[str]:
    """The ``n`` most common English words of ``wordfreq``, filtered for describing images.

    The rule (CLIP-Dissect's concept sets are lower-case single words): take
    ``wordfreq.top_n_list("en", ...)`` in frequency order and keep a word
    when it is lower-case ASCII letters only (no digits, apostrophes,
    hyphens or capitals), at least 3 letters long, and not one of
    :data:`STOP_WORDS` (articles, pronouns, prepositions, conjunctions,
    auxiliaries and contraction fragments); stop at ``n`` words.

    Parameters
    ----------
    n : int
        Words wanted.

    Returns
    -------
    list of str
        ``n`` words, most frequent first.

    Raises
    ------
    ConfigError
        When ``wordfreq`` is not installed (``pip install 'netdissect[text]'``) or
        ``n`` < 1.
    """
    if int(n) < 1:
        raise ConfigError(f"the English vocabulary needs n >= 1 words, got {n}")
    try:
        import wordfreq
    except ImportError:
        raise ConfigError("the English word vocabulary needs the wordfreq package: "
                          "pip install 'netdissect[text]' (or pip install wordfreq)") from None
    ok = re.compile(r"[a-z]{3,}")
    out: list[str] = []
    pool = 2 * int(n)
    while True:
        candidates = wordfreq.top_n_list("en", pool)
        out = [w for w in candidates if ok.fullmatch(w) and w not in STOP_WORDS][: int(n)]
        if len(out) >= int(n) or len(candidates) < pool:
            return out
        pool *= 2


def read_word_file(path: str | Path, *, classes: bool = False) -> list[str]:
    """Words from a text file, one per line (blank lines and ``#`` comments skipped).

    Parameters
    ----------
    path : str or Path
        The file (UTF-8).
    classes : bool
        Read class names the way class lists are written: a trailing integer
        column is dropped, and so is a leading ``/x/`` folder (Places365's
        ``/a/airfield 0`` reads as ``airfield``); ``_`` becomes a space.

    Returns
    -------
    list of str
        The lines' words, in file order.

    Raises
    ------
    ConfigError
        When the file cannot be read.
    """
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"word list {str(p)!r} cannot be read: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if classes:
            head, _, last = line.rpartition(" ")
            if head and last.isdigit():
                line = head.strip()
            line = re.sub(r"^/[a-z]/", "", line).replace("_", " ")
        out.append(line)
    return out


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (torchvision's list).

    Returns
    -------
    list of str
        ``['tench', 'goldfish', ...]``.
    """
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


#: vocabulary spec kinds, for messages
VOCABULARY_SPECS = ("wordfreq[:N] (alias 20k)", "imagenet", "classes:FILE", "words:FILE", "broden:DIR",
                    "a data set spec (synthetic, a Broden folder)", "a word file", "model (the image-text "
                    "model's own closed vocabulary)")


def load_vocabulary(spec: "str | Path | Sequence[str] | Vocabulary | None", image_text: Any = None) -> Vocabulary:
    """The words to describe units with.

    Parameters
    ----------
    spec : str, Path, sequence of str, Vocabulary or None
        - ``wordfreq`` or ``wordfreq:N`` (alias ``20k``): the N (20,000) most
          common English words (:func:`english_words`);
        - ``imagenet``: the 1000 ImageNet class names;
        - ``classes:FILE``: class names, one per line (:func:`read_word_file`
          with ``classes=True``);
        - ``words:FILE`` or a path to a file: a user's words, one per line;
        - ``broden:DIR``, a Broden folder, or any data set spec
          (``synthetic``): the data set's concept names without Broden's
          ``-s``/``-c`` suffixes (each word remembers its concepts);
        - ``model`` (or None with a closed-vocabulary model): the image-text
          model's own vocabulary; None with an open one: ``wordfreq``;
        - a list of words.
    image_text : ImageTextModel, optional
        The model (for ``model`` and None).

    Returns
    -------
    Vocabulary
        The words.

    Raises
    ------
    ConfigError
        For a spec that names nothing readable, or ``model`` with an
        open-vocabulary model.
    """
    if isinstance(spec, Vocabulary):
        return spec
    if spec is None or spec == "model":
        vocab = getattr(image_text, "vocabulary", None)
        if vocab:
            return Vocabulary.from_names("model", list(vocab))
        if spec == "model":
            raise ConfigError("concepts='model' needs a closed-vocabulary image-text model (one with a vocabulary), "
                              f"got {image_text!r}")
        spec = "wordfreq"
    if not isinstance(spec, (str, Path)):
        words = [str(w) for w in spec]
        return Vocabulary.from_names(f"list:{len(words)}", words)
    text = str(spec)
    kind, colon, rest = text.partition(":")
    if text == "20k" or kind == "wordfreq":
        try:
            n = int(rest) if rest else ENGLISH_WORDS
        except ValueError:
            raise ConfigError(f"vocabulary {text!r}: wordfreq:N needs an integer N") from None
        return Vocabulary.from_names(f"wordfreq:{n}", english_words(n))
    if text == "imagenet":
        return Vocabulary.from_names("imagenet", imagenet_class_names())
    if colon and kind == "classes":
        return Vocabulary.from_names(text, read_word_file(rest, classes=True))
    if colon and kind == "words":
        return Vocabulary.from_names(text, read_word_file(rest))
    if colon and kind == "broden":
        return _data_concepts(rest, text)
    path = Path(text).expanduser()
    if path.is_file():
        return Vocabulary.from_names(text, read_word_file(path))
    try:
        return _data_concepts(text, text)
    except DatasetError as exc:  # reported with the vocabulary kinds
        raise ConfigError(f"concepts {text!r} is not a vocabulary ({exc}); give one of: "
                          + "; ".join(VOCABULARY_SPECS)) from None


def _data_concepts(data: str, spec: str) -> Vocabulary:
    from ..data import open_dataset

    dataset = open_dataset(data)
    names = [c.name for c in dataset.concepts]
    if not names:
        raise ConfigError(f"data set {data!r} has no concepts to use as words")
    return Vocabulary.from_names(spec, names, strip=True)


def concept_activations(image_embeddings, text_embeddings):
    """CLIP-Dissect's concept-activation matrix P.

    Parameters
    ----------
    image_embeddings : torch.Tensor
        (N, D) image embeddings.
    text_embeddings : torch.Tensor
        (M, D) text embeddings.

    Returns
    -------
    torch.Tensor
        (N, M) float32 cosines: L2-normalised images @ L2-normalised words.T.
    """
    import torch.nn.functional as F

    e = F.normalize(image_embeddings.float(), dim=1)
    t = F.normalize(text_embeddings.float().to(e.device), dim=1)
    return e @ t.t()


def word_table(layer: str, scores: np.ndarray, indices: np.ndarray, vocabulary: Vocabulary) -> pd.DataFrame:
    """A layer's label table from each unit's best words.

    Parameters
    ----------
    layer : str
        The layer.
    scores : numpy.ndarray
        (U, k) similarity scores, best first.
    indices : numpy.ndarray
        (U, k) word indices into ``vocabulary``.
    vocabulary : Vocabulary
        The words.

    Returns
    -------
    pandas.DataFrame
        One row per unit: ``layer``, ``unit`` (1-based), ``label`` (the best
        word), ``score``, ``concept`` (the name(s) the word stands for), then
        ``label_2``, ``score_2`` ... ``label_k``, ``score_k``.
    """
    scores, indices = np.asarray(scores, dtype=np.float64), np.asarray(indices)
    units, k = indices.shape
    words = np.asarray(vocabulary.words, dtype=object)
    concepts = np.asarray(vocabulary.concepts, dtype=object)
    table: dict[str, Any] = {"layer": [layer] * units, "unit": np.arange(1, units + 1), "label": words[indices[:, 0]],
                             "score": scores[:, 0], "concept": concepts[indices[:, 0]]}
    for r in range(1, k):
        table[f"label_{r + 1}"] = words[indices[:, r]]
        table[f"score_{r + 1}"] = scores[:, r]
    return pd.DataFrame(table)


def ranked_labels(table: pd.DataFrame) -> list[list[str]]:
    """Each row's words, best first (``label``, ``label_2``, ...).

    Parameters
    ----------
    table : pandas.DataFrame
        A label table of :func:`word_table`.

    Returns
    -------
    list of list of str
        One list per row.
    """
    cols = ["label"] + sorted((c for c in table.columns if re.fullmatch(r"label_\d+", c)),
                              key=lambda c: int(c.split("_")[1]))
    return [[str(v) for v in row] for row in table[cols].itertuples(index=False)]


def evaluate(table: pd.DataFrame, truth: Sequence[str], *, text_model: Any = None,
             layer: str | None = None) -> dict[str, Any]:
    """How well a layer's descriptions name known classes (CLIP-Dissect's final-layer evaluation).

    Unit u's true name is ``truth[u - 1]`` (for a classifier's output layer,
    the class names in output order).  Names are compared in
    :func:`normal` form.

    Parameters
    ----------
    table : pandas.DataFrame
        A label table (one layer, or give ``layer``).
    truth : sequence of str
        The U true names.
    text_model : ImageTextModel, optional
        Embeds descriptions and true names for the mean cosine (the
        image-text model's text encoder, as CLIP-Dissect uses CLIP's); the
        cosine is left out without it.
    layer : str, optional
        Keep only this layer's rows.

    Returns
    -------
    dict
        ``units``, ``top1`` and ``top5`` (fractions of units whose true name
        is the first, or among the first five, descriptions; ``top5`` counts
        the words the table holds), and ``mean_cos`` (mean cosine of
        description and true name in the text model's space) when a
        ``text_model`` is given.

    Raises
    ------
    ConfigError
        When ``truth`` and the table differ in units.
    """
    if layer is not None:
        table = table[table["layer"] == layer]
    table = table.sort_values("unit")
    if len(table) != len(truth):
        raise ConfigError(f"{len(truth)} true names for {len(table)} units")
    ranked = ranked_labels(table)
    names = [normal(t) for t in truth]
    top1 = np.mean([normal(r[0]) == n for r, n in zip(ranked, names)])
    top5 = np.mean([n in {normal(w) for w in r[:5]} for r, n in zip(ranked, names)])
    out: dict[str, Any] = {"units": len(names), "top1": float(top1), "top5": float(top5)}
    if text_model is not None:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            a = F.normalize(text_model.encode_text([r[0] for r in ranked]).float(), dim=1)
            b = F.normalize(text_model.encode_text(list(truth)).float(), dim=1)
        out["mean_cos"] = float((a * b.to(a.device)).sum(1).mean())
    return out


def _words_of(text: str) -> list[str]:
    return normal(text).split()


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """Whether ``needle``'s words occur in a row in ``haystack`` (a plural -s/-es of the last word allowed)."""
    n = len(needle)
    if not n:
        return False
    for i in range(len(haystack) - n + 1):
        window = haystack[i:i + n]
        if window[:-1] == needle[:-1] and window[-1] in (needle[-1], needle[-1] + "s", needle[-1] + "es"):
            return True
    return False


def matches(word: str, concept: str) -> tuple[bool, bool]:
    """Whether a description agrees with an IoU concept name.

    Parameters
    ----------
    word : str
        The description (or the concept it stands for).
    concept : str
        The IoU label (a Broden concept name).

    Returns
    -------
    equal : bool
        The two are equal in :func:`normal` form.
    contains : bool
        Equal, or the description contains the concept's name as whole
        words (``red car`` contains ``car``; ``buildings`` contains
        ``building``).
    """
    a, b = _words_of(word), _words_of(concept)
    equal = a == b and bool(a)
    return equal, equal or _contains(a, b)


def agreement(iou_labels: pd.DataFrame, words: pd.DataFrame) -> pd.DataFrame:
    """Per layer, where a unit's best word and its IoU label agree, for detectors and for the rest.

    A unit agrees when its best word (or any Broden concept that word
    stands for) equals or contains its IoU label's name (:func:`matches`).

    Parameters
    ----------
    iou_labels : pandas.DataFrame
        ``Dissection.labels``: layer, unit, label, detector.
    words : pandas.DataFrame
        A word label table: layer, unit, label (and ``concept``).

    Returns
    -------
    pandas.DataFrame
        One row per layer both tables have: ``layer``, ``units``,
        ``detectors``, ``detectors_equal``, ``detectors_contains``,
        ``others``, ``others_equal``, ``others_contains`` (shares of the
        detectors and of the other units; NaN for an empty group).
    """
    cols = ["layer", "unit", "label"] + (["concept"] if "concept" in words.columns else [])
    both = iou_labels[["layer", "unit", "label", "detector"]].merge(
        words[cols].rename(columns={"label": "word"}), on=["layer", "unit"])
    rows = []
    for layer, g in both.groupby("layer", sort=False):
        eq, co = [], []
        for r in g.itertuples(index=False):
            candidates = [str(r.word)] + (str(r.concept).split(";") if "concept" in g.columns else [])
            found = [matches(c, str(r.label)) for c in candidates]
            eq.append(any(f[0] for f in found))
            co.append(any(f[1] for f in found))
        eq_a, co_a, det = np.array(eq), np.array(co), g["detector"].to_numpy(bool)

        def share(mask, values):
            return float(values[mask].mean()) if mask.any() else float("nan")

        rows.append({"layer": layer, "units": len(g), "detectors": int(det.sum()),
                     "detectors_equal": share(det, eq_a), "detectors_contains": share(det, co_a),
                     "others": int((~det).sum()), "others_equal": share(~det, eq_a),
                     "others_contains": share(~det, co_a)})
    return pd.DataFrame(rows, columns=["layer", "units", "detectors", "detectors_equal", "detectors_contains",
                                       "others", "others_equal", "others_contains"])
