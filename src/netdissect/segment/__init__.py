"""Segmenters: images in, concept label maps out.

A segmenter labels the pixels of any image with concepts, so that a folder
of photos (or the images a generator draws) can be dissected without stored
labels (Bau et al. 2020, "Understanding the role of individual units").
The protocol is :class:`Segmenter`; open one by spec with
:func:`load_segmenter`:

==========================================  ==================================================
spec                                        segmenter
==========================================  ==================================================
``color`` (``color?size=56``)               the colour namer, 11 colour concepts
                                            (:class:`~netdissect.segment.color.ColorSegmenter`)
``ink`` (``ink?threshold=127``)              grey level above a threshold = ``ink`` (digits)
                                            (:class:`~netdissect.segment.ink.InkSegmenter`)
``scene_seg`` (``scene_seg?size=32``)       the 16 synthetic objects in 32x32 scenes
                                            (:func:`~netdissect.segment.scene.scene_segmenter`)
``oracle`` (with ``dataset=``)              a data set's stored labels
                                            (:class:`~netdissect.segment.oracle.OracleSegmenter`)
``torchvision:NAME[:WEIGHTS]``              a torchvision segmentation model, VOC's 20 objects
                                            (:func:`~netdissect.segment.torchvision.torchvision_segmenter`)
``module:package.module:factory``           a user's segmenter or segmentation network
                                            (:func:`~netdissect.segment.module.module_segmenter`)
==========================================  ==================================================

Options go after ``?`` joined by ``&``: ``size`` (the label size, ``56`` or
``56x64``) and, for model segmenters, ``weights`` (a file; the same as the
``weights=`` argument).  Register more with :func:`register_segmenter`.
"""

from .base import Segmentation, Segmenter
from .registry import list_segmenters, load_segmenter, register_segmenter

# Register the built-in segmenters (none imports torchvision or downloads anything here).
from . import color, ink, module, oracle, scene, torchvision  # noqa: E402,F401  isort: skip
from .color import ColorSegmenter  # noqa: E402
from .ink import InkSegmenter  # noqa: E402
from .module import ModuleSegmenter  # noqa: E402
from .oracle import OracleSegmenter  # noqa: E402

__all__ = [
    "ColorSegmenter",
    "InkSegmenter",
    "ModuleSegmenter",
    "OracleSegmenter",
    "Segmentation",
    "Segmenter",
    "list_segmenters",
    "load_segmenter",
    "register_segmenter",
]
