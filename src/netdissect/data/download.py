"""Downloading concept data sets: resumable HTTP transfers, checksums, safe zip extraction.

:func:`download_dataset` fetches a known data set (``broden1_224``,
``broden1_227``; see :data:`KNOWN_DATASETS`) or any zip of a Broden folder
into a data root, in four steps, each safe to interrupt:

1. **Transfer** (:func:`download_file`) into ``<name>.zip.part``; an
   interrupted transfer is resumed with an HTTP ``Range`` request (the next
   call, or up to ``retries`` automatic attempts), and a server that ignores
   ``Range`` restarts it from zero.
2. **Verification** of the size and SHA-256 (or MD5) when they are known; a
   mismatch deletes the file and raises :class:`DownloadError`.
3. **Extraction** (:func:`extract_zip`): every entry is checked first (no
   absolute paths, no ``..``, no links); a truncated or corrupt archive is
   reported; files are extracted into a hidden temporary folder beside the
   target.
4. **Completion**: a marker file :data:`MARKER` is written into the temporary
   folder, which is then renamed to the target.  A folder without the marker
   was not made by a completed download and is never used as one.

Nothing is downloaded as a side effect of importing or opening: a data set
name that is not downloaded yet raises an error naming the command to run.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import __version__
from ..errors import DatasetError, DiskFullError, DownloadError
from ..storage import disk_full_error, is_disk_full

#: marker file written into a folder once its download and extraction completed
MARKER = ".netdissect-complete.json"
#: environment variable naming the data root (default ``~/.cache/netdissect/data``)
DATA_ENV = "NETDISSECT_DATA"
CHUNK = 1 << 20
#: files a Broden folder must hold
BRODEN_FILES = ("index.csv", "label.csv", "category.csv")


class CorruptArchiveError(DownloadError):
    """A zip archive is truncated or corrupt (downloading it again may help)."""


class TransferError(DownloadError):
    """The server could not be reached, refused the file, or the transfer broke off (a mirror may help)."""


@dataclass(frozen=True)
class KnownDataset:
    """A downloadable data set: where it is and what it should hash to (None: unknown)."""

    name: str
    url: str
    description: str
    size: int | None = None  # bytes of the zip
    sha256: str | None = None
    md5: str | None = None


# The original release's files (Bau et al. 2017, http://netdissect.csail.mit.edu).
# Sizes and SHA-256 digests: unknown to us (the original tools publish none, and
# these machines cannot reach the server to measure them), so only what is known
# is checked.  The MD5 of broden1_224.zip is the one a third-party setup script
# checks against (the "bisturi" project's setup script); we could not verify it
# ourselves.  Nothing is known for broden1_227.zip.  Give --sha256 to check a
# digest you trust; a mismatch is an error.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "broden1_224": KnownDataset(
        "broden1_224",
        "http://netdissect.csail.mit.edu/data/broden1_224.zip",
        "Broden 1 (Bau et al. 2017): 63,305 images at 224x224, labels at 112x112, 1,197 concepts",
        size=None,  # unknown
        sha256=None,  # unknown
        md5="be13c292eaef3300da03f8d0e48eab1c",  # third-party, unverified (see above)
    ),
    "broden1_227": KnownDataset(
        "broden1_227",
        "http://netdissect.csail.mit.edu/data/broden1_227.zip",
        "Broden 1 (Bau et al. 2017) at 227x227 (labels 113x113), for Caffe AlexNet-style models",
        size=None,  # unknown
        sha256=None,  # unknown
        md5=None,  # unknown
    ),
}


def data_root() -> Path:
    """Where downloaded data sets live: ``$NETDISSECT_DATA``, else ``~/.cache/netdissect/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "netdissect" / "data"


def is_complete(folder: "str | os.PathLike[str]") -> bool:
    """True when ``folder`` was made by a completed download (it holds the marker file)."""
    return (Path(folder) / MARKER).is_file()


def downloaded_folder(name: str, root: "str | os.PathLike[str] | None" = None) -> Path:
    """The folder of a downloaded data set; raises DatasetError naming the command if it is not there."""
    base = Path(root).expanduser() if root is not None else data_root()
    folder = base / name
    if is_complete(folder):
        return folder
    if folder.exists():
        raise DatasetError(
            f"{folder} exists but is not a completed download of {name!r} (no {MARKER}); remove it and run "
            f"`netdissect data download {name} --dest {base}`, or pass the folder path itself"
        )
    raise DatasetError(
        f"data set {name!r} is not downloaded in {base}; run `netdissect data download {name}"
        + (f" --dest {base}`" if root is not None else "`")
        + f" (the data root is ${DATA_ENV} or ~/.cache/netdissect/data)"
    )


# ---------------------------------------------------------------------------
# Transfer


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                dynamic_ncols=True)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """'bytes 100-199/1000' -> (100, 1000); None when absent or malformed."""
    if not value or not value.startswith("bytes "):
        return None
    spec, _, total = value[6:].partition("/")
    start, _, _ = spec.partition("-")
    try:
        return int(start), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, expected_size: int | None) -> int:
    """One attempt to bring ``part`` to the full file; returns the total size. Raises OSError-likes on drops."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"netdissect/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Nothing more to send: the part is complete if its size is the total.
            total = _content_range(e.headers.get("Content-Range"))
            size = total[1] if total and total[1] is not None else expected_size
            if size is not None and have == size:
                return have
            part.unlink()  # inconsistent: start over
            return _transfer(url, part, timeout=timeout, progress=progress, expected_size=expected_size)
        raise TransferError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            rng = _content_range(response.headers.get("Content-Range"))
            if rng is None or rng[0] != have:
                raise DownloadError(
                    f"download of {url}: the server answered the resume request (Range: bytes={have}-) with "
                    f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} to start over"
                )
            total = rng[1] if rng[1] is not None else (have + length if length is not None else None)
            mode = "ab"
        else:
            # A fresh transfer, or a server that ignores Range: (re)start from zero.
            have = 0
            total = length
            mode = "wb"
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(
                f"download of {url}: the server reports {total} bytes but {expected_size} are expected; "
                f"is this the right URL?"
            )
        bar = _progress(total, have, part.name[: -len(".part")], progress)
        try:
            with open(part, mode) as f:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:
                        _raise_if_disk_full(e, url, part, total)
                        raise
                    have += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except OSError as e:  # also the last buffered bytes, written when the file closes
            _raise_if_disk_full(e, url, part, total)
            raise
        finally:
            if bar is not None:
                bar.close()
    if total is not None and have < total:
        raise http.client.IncompleteRead(b"", total - have)
    return have


def _raise_if_disk_full(error: OSError, url: str, part: Path, total: int | None) -> None:
    """Raise DiskFullError for a write of ``part`` that found the disk full (not a dropped connection: no retry)."""
    if isinstance(error, DiskFullError) or not is_disk_full(error):
        return
    have = part.stat().st_size if part.exists() else 0
    needed = total - have if total is not None else None
    raise disk_full_error(
        f"the download of {url} into", part, needed,
        f"the {have} bytes received are kept in {part}: free some space and run the same command again to "
        "resume") from error


def file_digest(path: "str | os.PathLike[str]", algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, url: str, size: int | None, sha256: str | None, md5: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"download of {url}: {path} has {actual} bytes but {size} are expected")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                path.unlink()
                raise DownloadError(
                    f"download of {url}: {algorithm.upper()} checksum mismatch for {path.name}: expected "
                    f"{expected.lower()}, got {got}; the file was deleted (a corrupt transfer, or a mirror "
                    f"serving another file)"
                )


def download_file(
    url: str,
    dest: "str | os.PathLike[str]",
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resumably; returns ``dest``.

    Bytes go to ``<dest>.part`` first.  An interrupted transfer (dropped
    connection, timeout) keeps the part file and is resumed with an HTTP
    ``Range`` request, automatically up to ``retries`` times, and on the next
    call.  Once complete, the size and checksums that are given are checked
    (a mismatch deletes the part file and raises :class:`DownloadError`) and
    the part file is renamed to ``dest``.  An existing ``dest`` is verified
    and returned without downloading.  A full disk is not retried: it
    raises :class:`~netdissect.errors.DiskFullError` at once, naming the part
    file (kept, to resume) and the space needed and free.
    """
    dest = Path(dest).expanduser()
    for name, value, n in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is not None and (len(value) != n or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise DownloadError(f"{name}={value!r} is not a {n}-digit hexadecimal digest")
    if dest.is_file():
        _verify(dest, url, size, sha256, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout=timeout, progress=progress, expected_size=size)
            break
        except (DownloadError, DiskFullError):  # a full disk is no dropped connection: no retry
            raise
        except (http.client.HTTPException, urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt < retries and (have or not isinstance(e, urllib.error.URLError)):
                attempt += 1
                time.sleep(min(2.0 ** attempt, 30.0) * 0.1)
                continue
            reason = getattr(e, "reason", None) or e.__class__.__name__
            if have:
                raise TransferError(
                    f"download of {url} was interrupted after {have} bytes ({reason}); the partial file {part} is "
                    f"kept: run the same command again to resume"
                ) from None
            raise TransferError(f"download of {url} failed: {reason}") from None
    _verify(part, url, size, sha256, md5)
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------
# Extraction


def _safe_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The entry's relative path, or DownloadError if it could escape the target; None for directories."""
    name = info.filename
    unix_mode = info.external_attr >> 16
    if stat.S_ISLNK(unix_mode):
        raise DownloadError(f"archive {archive} holds a symbolic link {name!r}; refusing to extract it")
    norm = name.replace("\\", "/")
    path = PurePosixPath(norm)
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in path.parts:
        raise DownloadError(
            f"archive {archive} holds an unsafe entry {name!r} (an absolute path or '..'); refusing to extract "
            f"anything from it"
        )
    if "\x00" in norm:
        raise DownloadError(f"archive {archive} holds an entry with a NUL byte in its name")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or info.is_dir():
        return None
    return PurePosixPath(*parts)


def extract_zip(archive: "str | os.PathLike[str]", target: "str | os.PathLike[str]", *,
                progress: bool = True, marker: dict | None = None,
                required_files: tuple[str, ...] = ()) -> Path:
    """Extract a zip safely into ``target`` (which must not exist); returns ``target``.

    All entries are checked before anything is written (see the module
    docstring).  Files are extracted into ``.<target name>.extracting``
    beside ``target``; when the archive holds a single top-level folder (as
    Broden's zips do: ``broden1_224/index.csv``), that folder's contents
    become ``target``.  The marker :data:`MARKER` (with ``marker``'s entries)
    is written last, then the folder is renamed to ``target``: a crash at
    any point leaves no folder at ``target``.  ``required_files`` must exist
    in the extracted folder (else DownloadError, and nothing is kept).
    """
    archive = Path(archive)
    target = Path(target)
    if target.exists():
        raise DownloadError(f"extraction target {target} already exists")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise CorruptArchiveError(
            f"archive {archive} is truncated or corrupt ({e}); delete it and download it again"
        ) from None
    except OSError as e:
        raise DownloadError(f"archive {archive} cannot be read: {e}") from None
    tmp = target.with_name(f".{target.name}.extracting")
    with zf:
        members = [(info, _safe_member(info, archive)) for info in zf.infolist()]
        files = [(info, rel) for info, rel in members if rel is not None]
        if not files:
            raise DownloadError(f"archive {archive} holds no files")
        if tmp.exists():
            shutil.rmtree(tmp)  # left over from an interrupted extraction
        tmp.mkdir(parents=True)
        total = sum(info.file_size for info, _ in files)
        bar = _progress(total, 0, f"extracting {archive.name}", progress)
        try:
            for info, rel in files:
                out = tmp.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(e):
                raise disk_full_error(f"the files of {archive} into", tmp, total,
                                      f"the partial extraction was removed and {archive.name} is kept: free some "
                                      "space and run the same command again") from None
            if isinstance(e, OSError) and e.errno is not None:  # permissions, ...
                raise DownloadError(f"extracting {archive} into {tmp} failed: {e}") from None
            raise CorruptArchiveError(
                f"archive {archive} is truncated or corrupt (entry {info.filename!r}: {e}); delete it and download "
                f"it again"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if bar is not None:
                bar.close()
    # A single top-level folder is the data set itself.
    content = tmp
    tops = list(tmp.iterdir())
    if len(tops) == 1 and tops[0].is_dir():
        content = tops[0]
    missing = [f for f in required_files if not (content / f).is_file()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"archive {archive} does not hold the expected data: no {', '.join(missing)} at its top level "
            f"(or inside its single top-level folder)"
        )
    info = {"archive": archive.name, "files": len(files), "bytes": total, "netdissect": __version__,
            "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info.update(marker or {})
    (content / MARKER).write_text(json.dumps(info, indent=1) + "\n")
    os.replace(content, target)
    if content != tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------
# Data sets


def download_dataset(
    name: str,
    dest: "str | os.PathLike[str] | None" = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    keep_zip: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download and extract a data set into ``dest/name``; returns that folder.

    ``name`` is a key of :data:`KNOWN_DATASETS` (its URL and known checksums
    are used), or any folder name together with ``url``.  ``url`` replaces
    the known URL (a mirror; the known checksums still apply); ``sha256`` /
    ``md5`` add or replace checksums.  ``dest`` defaults to
    :func:`data_root`.  When the known URL fails (:class:`TransferError`),
    the message suggests a mirror through ``url``.  A completed download is returned at once.  The zip
    is deleted after extraction unless ``keep_zip``.
    """
    if not name or any(c in name for c in "/\\") or name in (".", ".."):
        raise DownloadError(f"data set name {name!r} must be a plain folder name")
    known = KNOWN_DATASETS.get(name)
    if known is None and url is None:
        raise DownloadError(
            f"unknown data set {name!r}; known: {', '.join(sorted(KNOWN_DATASETS))} (or give --url URL of a zip "
            f"holding a Broden folder)"
        )
    source = url or known.url
    base = Path(dest).expanduser() if dest is not None else data_root()
    target = base / name
    if is_complete(target):
        return target
    if target.exists():
        raise DownloadError(
            f"{target} exists but is not a completed download (no {MARKER}); remove it or choose another --dest"
        )
    size = known.size if known else None  # a mirror serves the same bytes
    sha = sha256 or (known.sha256 if known else None)
    md = md5 or (known.md5 if known else None)
    base.mkdir(parents=True, exist_ok=True)
    archive = base / f"{name}.zip"
    try:
        download_file(source, archive, sha256=sha, md5=md, size=size, retries=retries, timeout=timeout,
                      progress=progress)
    except TransferError as e:
        if url is not None:
            raise
        raise TransferError(f"{e}; the server may be down or moved: download from a mirror with "
                            f"`netdissect data download {name} --url URL` (Python: url=URL)") from None
    try:
        extract_zip(archive, target, progress=progress, required_files=BRODEN_FILES,
                    marker={"name": name, "url": source, "sha256": file_digest(archive)})
    except CorruptArchiveError as e:
        archive.unlink(missing_ok=True)  # so that the next run downloads it again
        raise CorruptArchiveError(f"{e} (the archive was deleted; run the command again to download it anew)") from None
    if not keep_zip:
        archive.unlink()
    return target


__all__ = [
    "BRODEN_FILES",
    "CorruptArchiveError",
    "DATA_ENV",
    "KNOWN_DATASETS",
    "KnownDataset",
    "MARKER",
    "TransferError",
    "data_root",
    "download_dataset",
    "download_file",
    "downloaded_folder",
    "extract_zip",
    "file_digest",
    "is_complete",
]
