"""The segmenter registry: spec strings -> :class:`~netdissect.segment.base.Segmenter` objects.

A spec is ``NAME[:ARG][?KEY=VALUE[&KEY=VALUE...]]``: ``color``,
``color?size=56``, ``oracle``, ``torchvision:deeplabv3_resnet50:DEFAULT``,
``module:package.module:factory``.  ``NAME`` picks a registered factory,
``ARG`` is everything between the first ``:`` and the ``?`` (it may contain
more colons), and the options after ``?`` are separated by ``&`` or ``,``.

The registry itself is private; it is read and extended only through
:func:`register_segmenter`, :func:`list_segmenters` and
:func:`load_segmenter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError, close_matches
from .base import Segmenter

#: factory(arg, options, *, dataset, weights, spec) -> Segmenter
SegmenterFactory = Callable[..., Segmenter]

_FACTORIES: dict[str, SegmenterFactory] = {}
#: what each name expects after ``NAME:``, for messages (empty: nothing)
_ARG_HELP: dict[str, str] = {}


def register_segmenter(name: str, *, arg: str = ""):
    """Register a segmenter factory under ``name`` (a decorator).

    The factory is called as ``factory(arg, options, *, dataset, weights,
    spec)`` with ``arg`` the text after ``NAME:`` (``""`` when absent),
    ``options`` a ``dict[str, str]`` of the ``?KEY=VALUE`` options, the
    ``dataset`` and ``weights`` given to :func:`load_segmenter`, and ``spec``
    the whole spec string (for messages).  It returns a
    :class:`~netdissect.segment.base.Segmenter` and raises
    :class:`~netdissect.errors.ConfigError` for options it does not know.

    Parameters
    ----------
    name : str
        The spec name, e.g. ``"color"``; letters, digits, ``_`` and ``-``.
    arg : str, optional
        A short description of what follows ``NAME:`` (e.g. ``"NAME[:WEIGHTS]"``),
        shown in error messages; empty when the segmenter takes no argument.

    Returns
    -------
    Callable
        The decorator; it returns the factory unchanged.

    Raises
    ------
    ConfigError
        If ``name`` is not a valid name or is already registered.
    """
    if not isinstance(name, str) or not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ConfigError(f"segmenter name {name!r} must be a non-empty string of letters, digits, '_' and '-'")

    def deco(fn: SegmenterFactory) -> SegmenterFactory:
        if name in _FACTORIES and _FACTORIES[name] is not fn:
            raise ConfigError(f"a segmenter named {name!r} is already registered")
        _FACTORIES[name] = fn
        _ARG_HELP[name] = arg
        return fn

    return deco


def list_segmenters() -> list[str]:
    """The registered segmenter names, sorted.

    Returns
    -------
    list of str
        E.g. ``["color", "module", "oracle", "torchvision"]``.
    """
    return sorted(_FACTORIES)


def _allowed() -> str:
    return ", ".join(n + (f":{_ARG_HELP[n]}" if _ARG_HELP[n] else "") for n in sorted(_FACTORIES))


def parse_options(query: str, spec: str) -> dict[str, str]:
    """Split ``KEY=VALUE`` options joined by ``&`` or ``,``.

    Parameters
    ----------
    query : str
        The text after ``?`` in a spec.
    spec : str
        The whole spec, for messages.

    Returns
    -------
    dict of str to str

    Raises
    ------
    ConfigError
        If a part is not ``KEY=VALUE`` or a key repeats.
    """
    options: dict[str, str] = {}
    for part in filter(None, query.replace("&", ",").split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"segmenter spec {spec!r}: option {part!r} is not KEY=VALUE (example: color?size=56)")
        if key in options:
            raise ConfigError(f"segmenter spec {spec!r}: option {key!r} is given twice")
        options[key] = value.strip()
    return options


def check_options(spec: str, options: dict[str, str], allowed: Iterable[str]) -> None:
    """Raise if ``options`` holds a key outside ``allowed``.

    Parameters
    ----------
    spec : str
        The whole spec, for messages.
    options : dict of str to str
        The parsed options.
    allowed : iterable of str
        The keys this segmenter understands.

    Raises
    ------
    ConfigError
        Naming the unknown keys, the allowed ones and close matches.
    """
    allowed = sorted(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hints = [h for h in (close_matches(u, allowed) for u in unknown) if h]
        raise ConfigError(
            f"segmenter spec {spec!r}: unknown option(s) {', '.join(unknown)}; allowed: "
            + (", ".join(allowed) if allowed else "none")
            + (f"; {'; '.join(hints)}" if hints else "")
        )


def parse_size(value: Any, what: str) -> tuple[int, int]:
    """A label size from ``56``, ``"56"``, ``"56x64"`` or ``(56, 64)``.

    Parameters
    ----------
    value : int, str or pair of int
        The size; one number means a square.
    what : str
        Where it came from, for messages (e.g. ``"segmenter spec 'color?size=0'"``).

    Returns
    -------
    (int, int)
        (h, w), both >= 1.

    Raises
    ------
    ConfigError
        If the value is not one or two positive integers.
    """
    try:
        if isinstance(value, str):
            parts = value.lower().replace("*", "x").split("x")
            nums = [int(p) for p in parts]
        elif isinstance(value, int):
            nums = [value]
        else:
            nums = [int(v) for v in value]
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2 or min(nums) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{what}: size {value!r} must be a positive integer or HxW (e.g. 56 or 56x64)"
        ) from None
    return nums[0], nums[1]


def load_segmenter(
    spec: "str | Segmenter",
    *,
    dataset: Any = None,
    weights: "str | Path | None" = None,
) -> Segmenter:
    """Open a segmenter from a spec string (or pass a segmenter object through).

    Specs:

    - ``color`` (options: ``size``): the colour namer,
      :class:`~netdissect.segment.color.ColorSegmenter`;
    - ``scene_seg`` (options: ``size``, ``weights``): the 16 synthetic objects
      in 32x32 scenes, see :func:`~netdissect.segment.scene.scene_segmenter`;
    - ``oracle`` (needs ``dataset=``): the data set's stored labels,
      :class:`~netdissect.segment.oracle.OracleSegmenter`;
    - ``torchvision:NAME[:WEIGHTS]`` (options: ``size``, ``weights``):
      a torchvision semantic segmentation model, see
      :func:`~netdissect.segment.torchvision.torchvision_segmenter`;
    - ``module:package.module:factory`` (options: ``size``, ``weights``, any
      other option is passed to the factory as a string keyword argument),
      see :func:`~netdissect.segment.module.module_segmenter`.

    Parameters
    ----------
    spec : str or Segmenter
        The spec; an object following the
        :class:`~netdissect.segment.base.Segmenter` protocol is returned as is.
    dataset : ConceptDataset, optional
        The concept data set, for ``oracle``; other segmenters ignore it.
    weights : str or Path, optional
        A weights file (state dict or safetensors) for model segmenters
        (``torchvision:``, ``module:``); the same as the ``weights=`` option.

    Returns
    -------
    Segmenter

    Raises
    ------
    ConfigError
        For an unknown name (listing the known ones and close matches), a
        malformed spec or unknown options, or ``weights`` given to a segmenter
        that takes none.
    ModelError
        When a model segmenter cannot be built or its weights do not load.
    """
    # Importing the package registers the built-in segmenters.
    from . import color, ink, module, oracle, scene, torchvision  # noqa: F401

    if not isinstance(spec, str):
        if isinstance(spec, Segmenter):
            if weights is not None:
                raise ConfigError(
                    f"weights={str(weights)!r} cannot be applied to a segmenter object "
                    f"({type(spec).__name__}); load the weights before passing it"
                )
            return spec
        raise ConfigError(
            f"segmenter must be a spec string ({_allowed()}) or an object with concepts, label_size, "
            f"segment, to, spec and fingerprint; got {type(spec).__name__}"
        )
    text = spec.strip()
    if not text:
        raise ConfigError(f"segmenter spec must be a non-empty string; choose one of {_allowed()}")
    base, _, query = text.partition("?")
    name, _, arg = base.partition(":")
    if name not in _FACTORIES:
        hint = close_matches(name, list(_FACTORIES))
        raise ConfigError(
            f"segmenter spec {spec!r}: unknown segmenter {name!r}; allowed: {_allowed()}"
            + (f"; {hint}" if hint else "")
        )
    options = parse_options(query, text)
    return _FACTORIES[name](arg, options, dataset=dataset, weights=weights, spec=text)
