"""The Broden data format: reading, writing, inspecting and checking it.

:class:`BrodenDataset` reads it, :func:`write_broden` writes it,
:func:`data_info` and :func:`check_broden` inspect and check it.

A Broden folder (Bau et al. 2017) holds::

    index.csv      image,split,ih,iw,sh,sw,<one column per category>
    label.csv      number,name,category,frequency,coverage,syns
    category.csv   name,first,last,count,frequency
    c_<cat>.csv    code,number,name,frequency,coverage   (dense recoding per category)
    images/        the images and label PNGs that index.csv names

Category cells in ``index.csv`` hold ``;``-separated entries: a decimal number
is an image-level label; a file name is a label PNG under ``images/`` whose
pixels hold label ``R + 256 * G`` (0 = no label).  Several PNGs in one cell
are separate label layers.  ``label.csv``'s ``category`` cell lists
``name(count)`` pairs such as ``material(36);object(3)``.

Statistics follow the original release (``joinseg.py`` and the published
files): ``frequency`` is the number of images a label appears in (per
category in ``c_<cat>.csv`` and in ``label.csv``'s ``category`` cell);
``coverage`` is the *sum* over those images of the fraction of the image the
label covers ("coverage in units of whole images": 289 images of ``red-c``
cover 9.14 images' worth of pixels); an image-level label covers its whole
image (1.0).  ``category.csv`` ``frequency`` is the sum of its labels'
frequencies.  Label 0 (``-``, no label) gets no row in ``label.csv`` or the
``c_`` files, as in the original files; the original readers fill it in, and
:class:`BrodenDataset` skips a 0 row if one is present.

A label's **primary category**, the only one it is scored in, is the
category where its ``c_<cat>.csv`` coverage is largest (ties go to the
category listed first in ``category.csv``; the original code broke ties
toward the last).  Without ``c_`` files the counts in ``label.csv``'s
``category`` cell decide instead.

Modules: :mod:`.read` (:class:`BrodenDataset` and the CSV parsing),
:mod:`.write` (:func:`write_broden`), :mod:`.check` (:func:`data_info`,
:func:`check_broden`).
"""

from __future__ import annotations

from .check import CategoryInfo, DataInfo, Problem, check_broden, data_info
from .read import INDEX_META, REQUIRED_FILES, BrodenDataset
from .write import write_broden

__all__ = [
    "INDEX_META",
    "REQUIRED_FILES",
    "BrodenDataset",
    "CategoryInfo",
    "DataInfo",
    "Problem",
    "check_broden",
    "data_info",
    "write_broden",
]
