"""Running out of disk: one clear error that names the file, the space needed and the space free.

Python reports a full disk as a bare ``OSError(ENOSPC)`` from somewhere deep
in a write (``torch.save`` to a path even turns it into an internal
``RuntimeError``; given an open file it lets the ``OSError`` through).
The writers of this package (checkpoint, activation cache, results, report,
downloads) catch it and raise :class:`~netdissect.errors.DiskFullError`
instead, saying what was being written, how much it needs, how much is free
and what was kept, so that the same command resumes once space is freed.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DiskFullError

#: errno values that mean "no space": the disk is full, or the user's quota is spent
DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from, is an ``OSError`` meaning "no space left"."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: "str | Path") -> int | None:
    """Bytes free (for this user) on the disk holding ``path`` or its nearest existing parent; None if unknown."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            return int(shutil.disk_usage(candidate).free)
        except OSError:
            continue
    return None


def format_bytes(n: int | None) -> str:
    """A byte count for people: ``1536`` -> ``'1.5 KiB'``, None -> ``'an unknown amount'``."""
    if n is None:
        return "an unknown amount"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def disk_full_error(what: str, path: "str | Path", needed: int | None, kept: str) -> DiskFullError:
    """The error for a write that found the disk full.

    Parameters
    ----------
    what : str
        What was being written, e.g. ``"the checkpoint"``.
    path : str or Path
        The file (or folder) being written.
    needed : int or None
        Bytes the write needs (an estimate; None when unknown).
    kept : str
        What is kept and how to go on, e.g. ``"the last good checkpoint is kept: ..."``.

    Returns
    -------
    DiskFullError
        Its message names ``path``, the space needed and the space free now.
    """
    free = free_bytes(path)
    need = f"needs about {format_bytes(needed)}" if needed is not None else "needs more space"
    return DiskFullError(f"disk full while writing {what} {path}: it {need} and {format_bytes(free)} "
                         f"{'is' if free is None else 'are'} free on that disk; {kept}",
                         path=path, needed=needed, free=free)


@contextmanager
def disk_full_as_error(what: str, path: "str | Path", needed: int | None, kept: str) -> Iterator[None]:
    """Turn an ``OSError`` meaning "no space left" raised in the block into :func:`disk_full_error`'s error.

    Raises
    ------
    DiskFullError
        When the disk (or quota) was full; other errors pass unchanged.
    """
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(what, path, needed, kept) from exc
        raise


def tensor_bytes(obj) -> int:
    """Bytes of the tensors and arrays inside nested dicts, lists and tuples (an estimate of a file's size)."""
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # torch tensors of older versions
        return int(obj.element_size() * obj.numel())
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0
