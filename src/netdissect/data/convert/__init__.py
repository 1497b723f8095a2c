"""Converters from common labelled data sets into Broden format, and merging.

Each source is first wrapped as a concept data set (the
:class:`~netdissect.data.protocol.ConceptDataset` protocol), which can be
dissected directly, and is then written with
:func:`~netdissect.data.broden.write_broden` (into ``<out>.partial``, renamed
only when complete):

- :class:`SegmentationFolders` / :func:`convert_segmentation`: images and
  label maps of class indices plus a class list (CamVid, Pascal VOC, ...);
- :class:`ADE20KSource` / :func:`convert_ade20k`: ADE20K's own format
  (objects from ``*_seg.png``, parts from ``*_parts_N.png``, the scene from
  the ``.json``);
- :class:`ImageFolders` / :func:`convert_folders`: one folder per class, as
  image-level ``texture`` or ``scene`` concepts (DTD, Places, ...);
- :class:`MergedBroden` / :func:`merge_broden`: several Broden folders into
  one data set with one label table.

Every converted data set also gets a pixel-level ``color`` category named by
:mod:`netdissect.data.colornames` (``black-c`` ... ``yellow-c``, label
numbers 1 to 11).

Every converter resizes the same way (the rules are in
:mod:`netdissect.data.convert.common`): images to ``size`` x ``size``,
labels to ``size // 2``, by stretching the whole image (``fit="stretch"``,
default) or keeping the centred square (``fit="crop"``); labels by nearest
neighbour (:func:`label_sample_index`).

Modules: :mod:`.common` (resizing, label sampling, the shared base class),
:mod:`.segmentation`, :mod:`.ade20k`, :mod:`.folders`, :mod:`.merge`.
"""

from __future__ import annotations

from .ade20k import ADE20KSource, convert_ade20k
from .common import CATEGORY_ORDER, CONVERTER_VERSION, FITS, IMAGE_SUFFIXES, label_sample_index
from .folders import ImageFolders, convert_folders
from .merge import MergedBroden, merge_broden
from .segmentation import DEFAULT_IGNORE, SegmentationFolders, convert_segmentation, read_class_list, read_class_map

__all__ = [
    "ADE20KSource",
    "CATEGORY_ORDER",
    "CONVERTER_VERSION",
    "DEFAULT_IGNORE",
    "FITS",
    "IMAGE_SUFFIXES",
    "ImageFolders",
    "MergedBroden",
    "SegmentationFolders",
    "convert_ade20k",
    "convert_folders",
    "convert_segmentation",
    "label_sample_index",
    "merge_broden",
    "read_class_list",
    "read_class_map",
]
