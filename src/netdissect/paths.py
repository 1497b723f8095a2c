"""Names that become file or folder names, encoded so they stay where they are put.

A layer's name is not a path: ``"/abs"``, ``"a/../b"`` or ``".."`` are valid
module names in a ``ModuleDict``.  :func:`encode_name` maps any string to a
single path component that cannot climb out of its folder, reversibly
(:func:`decode_name`); ordinary dotted names (``layer4.1.conv2``) are kept as
they are.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_PLAIN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def encode_name(name: str) -> str:
    """A file-name-safe, reversible encoding of ``name`` (one path component, never ``.`` or ``..``).

    Characters other than letters, digits, ``_``, ``-`` and ``.`` are
    percent-encoded, as is a leading ``.``; the empty name becomes ``%``.

    Parameters
    ----------
    name : str
        Any string.

    Returns
    -------
    str
        The encoded name; ``decode_name(encode_name(s)) == s``.
    """
    if not name:
        return "%"
    if _PLAIN.match(name):
        return name
    encoded = quote(name, safe="._-")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    return encoded


def decode_name(encoded: str) -> str:
    """The name :func:`encode_name` encoded."""
    return "" if encoded == "%" else unquote(encoded)
