"""One writer at a time in a run directory: the lock file ``RUN_DIR/.lock``.

A dissection, and the report of a run, hold an exclusive ``fcntl.flock`` on
``RUN_DIR/.lock`` for as long as they write into the folder.  The file
holds the holder's pid, host, start time and command line, so that a second
process started on the same folder says who is using it: it stops at once
with :class:`~netdissect.errors.RunInUseError`, or waits for the folder with
``wait=True`` (``--wait``).  The operating system releases the lock when the
holder exits however it exits (an exception, a crash, ``kill -9``), so a
lock is never stale; a normal release also removes the file, and a run
directory that the lock itself created and that stayed empty (the run failed
before writing anything) is removed with it.

Within one process the lock is counted: a process may take the lock of a
folder it already holds (the command line holds it around a dissection and
its report, and :func:`netdissect.dissect` inside takes it again); the last
release frees it.  Threads of one process share it.  In a multi-process run
only rank 0 takes it (:func:`netdissect.engine.plan.hold_run_dir`).

Limits: ``flock`` is advisory and local: it keeps netdissect processes
apart, on one machine or on a network file system that supports ``flock``
(NFSv4 does; some do not).  Processes forked while the lock is held (data
loader workers) share it until they exit.  Where ``fcntl`` is missing
(Windows) no lock is taken.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import RunInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover -- Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: the lock file's name inside a run directory
LOCK_NAME = ".lock"


@dataclass
class _Held:
    fd: int
    count: int
    created: list[Path]  # folders the lock created, outermost first


_held: dict[str, _Held] = {}
_guard = threading.RLock()


def _key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


def command_line() -> str:
    """The command line of this process, as a person would type it (``netdissect dissect ...``)."""
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0])
    if first.name == "__main__.py":  # python -m PACKAGE
        head = ["python", "-m", first.parent.name]
    elif first.name in ("", "-c"):
        head = ["python", "-c"] if first.name == "-c" else ["python"]
    else:
        head = [first.name]
    return " ".join(shlex.quote(a) for a in head + argv[1:]).replace("\n", " ")


def _describe(info: dict) -> str:
    """'process 123 (`netdissect dissect ...`, started 2024-01-01 10:00:00)', from a lock file's content."""
    pid = info.get("pid")
    text = f"process {pid}" if pid is not None else "another process"
    host = info.get("host")
    if host and host != socket.gethostname():
        text += f" on host {host}"
    elif isinstance(pid, int) and not pid_alive(pid):
        text += " (it has exited; processes it started still hold the folder and should exit shortly)"
    details = []
    if info.get("command"):
        details.append(f"`{info['command']}`")
    if info.get("started"):
        details.append(f"started {info['started']}")
    return text + (f" ({', '.join(details)})" if details else "")


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (possibly another user's, or a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read_info(fd: int) -> dict:
    """The holder's description from the lock file (it may not have written it yet: try for a moment)."""
    for _ in range(20):
        try:
            text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        except OSError:
            return {}
        if text.strip():
            try:
                info = json.loads(text)
                return info if isinstance(info, dict) else {}
            except ValueError:
                pass
        time.sleep(0.05)
    return {}


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and missing parents; returns the folders created, outermost first."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def acquire(run_dir: "str | os.PathLike[str]", *, wait: bool = False, poll: float = 0.2) -> None:
    """Take the lock of ``run_dir`` (created when missing) for this process.

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    wait : bool
        Wait until the holder releases it, instead of raising.
    poll : float
        Seconds between attempts while waiting.

    Raises
    ------
    RunInUseError
        When another process holds it and ``wait`` is false; the message
        names that process (pid, command line, start time).
    """
    run_dir = Path(run_dir)
    key = _key(run_dir)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return
        if fcntl is None:  # pragma: no cover -- no locking on this platform
            _held[key] = _Held(-1, 1, [])
            return
        said = False
        while True:
            created = _make_dirs(run_dir)
            path = run_dir / LOCK_NAME
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                os.close(fd)
                if not wait:
                    raise RunInUseError(
                        f"run directory {run_dir} is in use by {_describe(info)}; wait for it to finish, give "
                        "another --out, or add --wait to wait for it (Python: wait=True)") from None
                if not said:
                    log.warning("run directory %s is in use by %s; waiting for it to finish", run_dir,
                                _describe(info))
                    said = True
                time.sleep(poll)
                continue
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have removed the file while we waited on it: lock the file that is there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            _held[key] = _Held(fd, 1, created)
            return


def release(run_dir: "str | os.PathLike[str]") -> None:
    """Give back one hold of ``run_dir``'s lock; the last one removes the lock file and frees the lock.

    A run directory the lock created is removed too when it is empty (the
    run failed before writing anything).
    """
    run_dir = Path(run_dir)
    key = _key(run_dir)
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[key]
        if held.fd < 0:  # pragma: no cover -- no locking on this platform
            return
        try:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)  # while still holding it
            for folder in reversed(held.created):
                try:
                    folder.rmdir()
                except OSError:
                    break
        finally:
            os.close(held.fd)


def holds(run_dir: "str | os.PathLike[str]") -> bool:
    """True when this process holds the lock of ``run_dir``."""
    with _guard:
        return _key(Path(run_dir)) in _held


@contextmanager
def locked(run_dir: "str | os.PathLike[str]", *, wait: bool = False) -> Iterator[None]:
    """Hold the lock of ``run_dir`` inside the block (see :func:`acquire`).

    Raises
    ------
    RunInUseError
        When another process holds it and ``wait`` is false.
    """
    acquire(run_dir, wait=wait)
    try:
        yield
    finally:
        release(run_dir)
