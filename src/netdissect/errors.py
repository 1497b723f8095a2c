"""Exceptions raised for bad input.

Every error names the argument, file or value that was wrong and says what is
allowed, so the message alone tells a user how to fix the call.
"""

from __future__ import annotations

import difflib
import errno
from typing import Iterable


class NetDissectError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(NetDissectError, ValueError):
    """An option or argument has a value outside what is allowed."""


class ModelError(NetDissectError):
    """A model spec, checkpoint or layer cannot be used."""


class LayerError(ModelError, KeyError):
    """A layer name is unknown or its output cannot be dissected."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CaptureError(NetDissectError, RuntimeError):
    """Capturing activations failed (a module fired twice, bad values...)."""


class DatasetError(NetDissectError):
    """A concept data set is missing, malformed or inconsistent."""


class DownloadError(NetDissectError):
    """A download failed, was truncated or did not match its checksum."""


class DiskFullError(NetDissectError, OSError):
    """Writing a file failed because its disk (or the user's quota) is full.

    The message names the file, the space it needs and the space free; what
    was finished before is kept (see :mod:`netdissect.storage`).

    Attributes
    ----------
    path : str or None
        The file or folder being written.
    needed, free : int or None
        Bytes the write needed (an estimate) and bytes free on that disk, when known.
    """

    def __init__(self, message: str, *, path=None, needed: int | None = None, free: int | None = None):
        super().__init__(message)
        self.errno = errno.ENOSPC
        self.path, self.needed, self.free = (None if path is None else str(path)), needed, free

    def __str__(self) -> str:  # OSError would otherwise format errno and filename
        return str(self.args[0]) if self.args else ""


class RunInUseError(NetDissectError):
    """Another process is writing into the same run directory (it holds ``RUN_DIR/.lock``)."""


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> str:
    """A short human phrase listing the choices closest to ``name``."""
    choices = list(choices)
    matches = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not matches:
        # Fall back to names sharing a prefix or a dotted component.
        stem = name.split(".")[0]
        matches = [c for c in choices if c.startswith(stem)][:n]
    if not matches:
        return ""
    return "did you mean " + ", ".join(repr(m) for m in matches) + "?"
