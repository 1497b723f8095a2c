"""Content digests of data files, cached in a sidecar file keyed by each file's identity.

A data set's fingerprint keys every cache of results, so it must change
whenever an image or a label file changes: also when a label PNG is rewritten
in place with the same byte size (relabelled classes) and its modification
time is put back (``cp -p``, ``rsync -t``, ``touch -r``).  Only the contents
tell, so :func:`file_digests` hashes them (SHA-256, which CPUs accelerate:
about 0.9 GB/s per core; in threads, since hashing and reading release the
GIL).

Reading all of Broden (about 1 GB) on every open would cost seconds, so the
digests are kept in a sidecar file, by default ``.netdissect-digests.json``
in the data folder (or, where that cannot be written, under
``~/.cache/netdissect/digests/``).  Each entry holds the file's size,
``mtime_ns``, ``ctime_ns``, inode and device as seen when it was hashed; a
later call reads a file again only when one of these differs.  The inode
change time cannot be set by user programs and moves on every write, so
restoring the modification time does not hide a change.  A file changed less
than :data:`RACY_SECONDS` before it was hashed is not kept in the sidecar (it
could change again within the file system's timestamp resolution without its
times moving: git's "racily clean" entries), nor is one that changed while it
was being read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

#: the sidecar's file name, in the data folder
SIDECAR = ".netdissect-digests.json"
#: files changed less than this many seconds before hashing are not cached
RACY_SECONDS = 2.0
#: hex digits of SHA-256 kept per file (128 bits)
DIGEST_CHARS = 32
_FORMAT = "netdissect-digests-1"


class UnreadableFileError(OSError):
    """A file listed for hashing is missing or cannot be read; ``name`` is its name as given."""

    def __init__(self, name: str, error: OSError):
        super().__init__(error.errno, error.strerror, error.filename)
        self.name = name
        self.missing = isinstance(error, FileNotFoundError)
        self.error = error


def fallback_sidecar(sidecar: Path) -> Path:
    """Where the digests of ``sidecar`` go when it cannot be written: ``~/.cache/netdissect/digests/<hash>.json``."""
    key = hashlib.sha256(str(Path(sidecar).absolute()).encode()).hexdigest()[:24]
    return Path.home() / ".cache" / "netdissect" / "digests" / f"{key}.json"


def _load(sidecar: Path) -> dict[str, list]:
    """The entries of the sidecar and of its fallback (written when the sidecar could not be); {} if none."""
    out: dict[str, list] = {}
    for path in (sidecar, fallback_sidecar(sidecar)):
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and obj.get("format") == _FORMAT and isinstance(obj.get("files"), dict):
            out.update(obj["files"])  # every entry is checked against the file before it is used
    return out


def _save(sidecar: Path, files: dict[str, list]) -> None:
    """Write the sidecar atomically; else the fallback; else nothing (the digests are computed again)."""
    text = json.dumps({"format": _FORMAT, "files": files}, separators=(",", ":"))
    for path in (sidecar, fallback_sidecar(sidecar)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
            return
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _digest_chunk(base: str, names: Sequence[str], cached: dict[str, list], oldest_ns: int):
    """[(name, digest, sidecar entry or None)] for ``names``: cached digests where the key matches, else hashed."""
    out = []
    for name in names:
        path = os.path.join(base, name)
        try:
            entry = cached.get(name)
            if entry is not None:
                if _key(os.stat(path)) == entry[:5]:
                    out.append((name, entry[5], None))
                    continue
            with open(path, "rb") as f:
                key = _key(os.fstat(f.fileno()))
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                digest = h.hexdigest()[:DIGEST_CHARS]
                steady = _key(os.fstat(f.fileno())) == key
        except OSError as e:
            raise UnreadableFileError(name, e) from None
        keep = steady and max(key[1], key[2]) < oldest_ns
        out.append((name, digest, key + [digest] if keep else False))  # False: do not cache
    return out


def file_digests(base: "str | os.PathLike[str]", names: Sequence[str], *, sidecar: "str | os.PathLike[str] | None",
                 workers: int | None = None) -> dict[str, str]:
    """Content digest of each file ``base / name``, reading only the files that changed since the last call.

    Parameters
    ----------
    base : path
        The folder the names are relative to.
    names : sequence of str
        Relative file names (repeats are hashed once).
    sidecar : path or None
        The cache file of digests (see the module docstring); None: no cache,
        every file is read.
    workers : int, optional
        Threads that stat and hash (default: twice the CPU count, at most 16).

    Returns
    -------
    dict
        name -> hex digest (the first :data:`DIGEST_CHARS` digits of SHA-256
        of the file's bytes).

    Raises
    ------
    UnreadableFileError
        A file is missing or cannot be read; its ``name`` attribute says which.
    """
    base = os.fspath(Path(base).absolute())
    unique = list(dict.fromkeys(names))
    sidecar = Path(sidecar) if sidecar is not None else None
    cached = _load(sidecar) if sidecar is not None else {}
    cached = {k: v for k, v in cached.items() if isinstance(v, list) and len(v) == 6 and isinstance(v[5], str)}
    oldest_ns = time.time_ns() - int(RACY_SECONDS * 1e9)
    if workers is None:
        workers = min(16, 2 * (os.cpu_count() or 1))
    workers = max(1, min(int(workers), len(unique) // 64 or 1))
    if workers == 1:
        results = _digest_chunk(base, unique, cached, oldest_ns)
    else:
        step = -(-len(unique) // workers)
        chunks = [unique[i:i + step] for i in range(0, len(unique), step)]
        with ThreadPoolExecutor(workers) as pool:
            parts = pool.map(lambda c: _digest_chunk(base, c, cached, oldest_ns), chunks)
            results = [r for part in parts for r in part]
    out: dict[str, str] = {}
    changed = False
    for name, digest, entry in results:
        out[name] = digest
        if entry:
            cached[name] = entry
            changed = True
        elif entry is False and name in cached:
            del cached[name]  # changed a moment ago: hash it again next time
            changed = True
    if sidecar is not None and changed:
        _save(sidecar, cached)
    return out


__all__ = ["DIGEST_CHARS", "RACY_SECONDS", "SIDECAR", "UnreadableFileError", "fallback_sidecar", "file_digests"]
