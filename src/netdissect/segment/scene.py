"""The scene segmenter (spec ``scene_seg``): the 16 synthetic objects in 32x32 scenes.

A :class:`~netdissect.segment.module.ModuleSegmenter` around
:class:`~netdissect.generators.scene.SceneSegNet`, trained by
``scripts/train_scene_gan.py`` on the exact object labels of the project's
synthetic concept scenes (at 32x32) and shipped with the package.  It labels
the samples of the ``scene_gan`` generator (and any image, resized to 32x32
first) with ``sky``, ``sea``, ``sand``, ``grass``, ``building``, ``road``,
``wall``, ``floor``, ``house``, ``tree``, ``car``, ``person``, ``flower``,
``ball``, ``sun``, ``box`` (category ``object``).

Options: ``size`` (label size, default 32x32, the network's resolution) and
``weights`` (another weights file of the same architecture).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..models import Preprocess
from .module import ModuleSegmenter
from .registry import check_options, parse_size, register_segmenter


def scene_segmenter(size=None, weights=None, spec: str = "scene_seg") -> ModuleSegmenter:
    """The trained scene segmenter.

    Parameters
    ----------
    size : int, str or (int, int), optional
        Label size (h, w); default 32x32.
    weights : str or Path, optional
        A weights file; default the one shipped in the package.
    spec : str
        The spec string it is opened again with.

    Returns
    -------
    ModuleSegmenter
        16 object concepts, numbered 1..16 in :data:`~netdissect.generators.scene.OBJECTS` order.
    """
    from ..generators.scene import OBJECTS, SIZE, load_scene_segnet

    net = load_scene_segnet(weights)
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=(SIZE, SIZE))
    return ModuleSegmenter(net, list(OBJECTS), preprocess=pre, size=size if size is not None else (SIZE, SIZE),
                           spec=spec)


@register_segmenter("scene_seg")
def _scene_seg(arg: str, options: dict[str, str], *, dataset=None, weights=None,
               spec: str = "scene_seg") -> ModuleSegmenter:
    if arg:
        raise ConfigError(f"segmenter spec {spec!r}: 'scene_seg' takes no argument (options go after '?', "
                          "e.g. scene_seg?size=32)")
    check_options(spec, options, ["size", "weights"])
    if weights is not None and "weights" in options:
        raise ConfigError(f"segmenter spec {spec!r}: weights given twice (option and argument)")
    size = parse_size(options["size"], f"segmenter spec {spec!r}") if "size" in options else None
    return scene_segmenter(size, weights if weights is not None else options.get("weights"), spec)


__all__ = ["scene_segmenter"]
