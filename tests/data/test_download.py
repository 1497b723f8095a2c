"""Tests of downloading and extracting data sets (netdissect.data.download), against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading
import zipfile
from pathlib import Path

import pytest

from netdissect.cli import main
from netdissect.data import open_dataset
from netdissect.data.broden import BrodenDataset, write_broden
from netdissect.data.download import (
    KNOWN_DATASETS,
    MARKER,
    CorruptArchiveError,
    KnownDataset,
    download_dataset,
    download_file,
    downloaded_folder,
    extract_zip,
    is_complete,
)
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.errors import DatasetError, DownloadError

# -- a small HTTP server with Range support ------------------------------------------


class Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with Range support and scripted faults.

    ``drop_after[path] = n``: the next response for ``path`` sends only ``n``
    bytes of its body (announcing the full length), then closes.
    ``ignore_range``: answer Range requests with the whole file (200).
    ``requests``: (path, Range header or None) of every GET.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                if rng and not server.ignore_range:
                    assert rng.startswith("bytes=") and rng.endswith("-")
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if self.path in server.drop_after:
                    n = server.drop_after.pop(self.path)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def zip_folder(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def broden_zip(tmp_path_factory):
    """(zip bytes, the Broden folder it holds): SyntheticConcepts(n=8) written with write_broden."""
    folder = write_broden(SyntheticConcepts(n=8, size=32), tmp_path_factory.mktemp("src") / "mini", image_format="png")
    return zip_folder(folder, "broden1_224"), folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def same_folder(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != MARKER)
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != MARKER)
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


# -- transfers --------------------------------------------------------------------


def test_download_extract_and_open(server, broden_zip, tmp_path):
    data, source = broden_zip
    server.files["/mini.zip"] = data
    folder = download_dataset("mini", tmp_path, url=server.url("/mini.zip"), sha256=sha(data), progress=False)
    assert folder == tmp_path / "mini" and is_complete(folder)
    assert same_folder(folder, source)  # the zip's single top folder became the data set folder
    assert not (tmp_path / "mini.zip").exists() and not (tmp_path / "mini.zip.part").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]  # no temporary folder left
    ds = BrodenDataset(folder)
    assert len(ds) == 8
    # A second call finds it complete and makes no request.
    n = len(server.requests)
    assert download_dataset("mini", tmp_path, url=server.url("/mini.zip"), progress=False) == folder
    assert len(server.requests) == n


def test_interrupted_transfer_resumes_with_range(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/b.zip"] = data
    cut = len(data) * 2 // 5
    server.drop_after["/b.zip"] = cut
    dest = tmp_path / "b.zip"
    with pytest.raises(DownloadError, match=rf"interrupted after {cut} bytes.*b\.zip\.part is kept.*again to resume"):
        download_file(server.url("/b.zip"), dest, sha256=sha(data), retries=0, progress=False)
    part = tmp_path / "b.zip.part"
    assert part.stat().st_size == cut and not dest.exists()
    download_file(server.url("/b.zip"), dest, sha256=sha(data), retries=0, progress=False)
    assert server.requests[-1] == ("/b.zip", f"bytes={cut}-")
    assert dest.read_bytes() == data and not part.exists()


def test_interrupted_transfer_resumes_automatically(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/c.zip"] = data
    server.drop_after["/c.zip"] = 1000
    download_file(server.url("/c.zip"), tmp_path / "c.zip", sha256=sha(data), retries=2, progress=False)
    assert server.requests == [("/c.zip", None), ("/c.zip", "bytes=1000-")]
    assert (tmp_path / "c.zip").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/d.zip"] = data
    server.ignore_range = True
    (tmp_path / "d.zip.part").write_bytes(b"garbage that is not the start of the file")
    download_file(server.url("/d.zip"), tmp_path / "d.zip", sha256=sha(data), progress=False)
    assert server.requests[-1][1] is not None  # it asked to resume ...
    assert (tmp_path / "d.zip").read_bytes() == data  # ... and restarted cleanly on a 200


def test_complete_part_file_gets_416_and_is_used(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/e.zip"] = data
    (tmp_path / "e.zip.part").write_bytes(data)
    download_file(server.url("/e.zip"), tmp_path / "e.zip", sha256=sha(data), progress=False)
    assert (tmp_path / "e.zip").read_bytes() == data


def test_bad_checksum_is_reported_and_the_file_deleted(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/f.zip"] = data
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=rf"SHA256 checksum mismatch for f\.zip\.part: expected {wrong}, got "
                                            rf"{sha(data)}; the file was deleted"):
        download_dataset("f", tmp_path, url=server.url("/f.zip"), sha256=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="not a 64-digit hexadecimal digest"):
        download_file(server.url("/f.zip"), tmp_path / "f.zip", sha256="abc", progress=False)


def test_known_table_checksum_and_registered_name(server, broden_zip, tmp_path, monkeypatch):
    data, source = broden_zip
    server.files["/broden1_224.zip"] = data
    monkeypatch.setitem(KNOWN_DATASETS, "broden1_224", KnownDataset(
        "broden1_224", server.url("/broden1_224.zip"), "test", size=len(data), sha256=sha(data)))
    monkeypatch.setenv("NETDISSECT_DATA", str(tmp_path / "root"))
    with pytest.raises(DatasetError, match=r"'broden1_224' is not downloaded in .*root; run `netdissect data "
                                           r"download broden1_224`"):
        open_dataset("broden1_224")
    assert download_dataset("broden1_224", progress=False) == tmp_path / "root" / "broden1_224"
    ds = open_dataset("broden1_224")
    assert isinstance(ds, BrodenDataset) and len(ds) == 8
    assert len(open_dataset("broden1_224:split=train")) == 8
    assert len(open_dataset(f"broden1_224:root={tmp_path / 'root'}")) == 8
    with pytest.raises(DatasetError, match="unknown option.*bogus; allowed: root, split"):
        open_dataset("broden1_224:bogus=1")
    # A wrong size in the table is caught before anything is written.
    monkeypatch.setitem(KNOWN_DATASETS, "broden1_227", KnownDataset(
        "broden1_227", server.url("/broden1_224.zip"), "test", size=len(data) + 1))
    with pytest.raises(DownloadError, match=rf"server reports {len(data)} bytes but {len(data) + 1} are expected"):
        download_dataset("broden1_227", progress=False)


def test_http_errors_and_unknown_names(server, tmp_path):
    with pytest.raises(DownloadError, match=r"download of http://127\.0\.0\.1:\d+/missing\.zip failed: HTTP 404"):
        download_file(server.url("/missing.zip"), tmp_path / "m.zip", progress=False)
    with pytest.raises(DownloadError, match=r"unknown data set 'nope'; known: broden1_224, broden1_227"):
        download_dataset("nope", tmp_path)
    with pytest.raises(DownloadError, match="must be a plain folder name"):
        download_dataset("../x", tmp_path, url=server.url("/x.zip"))


def test_failed_download_of_a_known_data_set_suggests_a_mirror(server, broden_zip, tmp_path, monkeypatch):
    data, _ = broden_zip
    monkeypatch.setitem(KNOWN_DATASETS, "broden1_224", KnownDataset(
        "broden1_224", server.url("/gone/broden1_224.zip"), "test"))
    with pytest.raises(DownloadError, match=r"failed: HTTP 404.*; the server may be down or moved: download from a "
                                            r"mirror with `netdissect data download broden1_224 --url URL`"):
        download_dataset("broden1_224", tmp_path, progress=False)
    # An unreachable server (connection refused) too, and through the command line.
    closed = Server()
    url = closed.url("/broden1_224.zip")
    closed.close()
    monkeypatch.setitem(KNOWN_DATASETS, "broden1_224", KnownDataset("broden1_224", url, "test"))
    with pytest.raises(DownloadError, match=r"failed: .*--url URL"):
        download_dataset("broden1_224", tmp_path, progress=False, retries=0)
    # The mirror then works; with --url given, a failure does not suggest --url again.
    server.files["/mirror.zip"] = data
    with pytest.raises(DownloadError) as e:
        download_dataset("broden1_224", tmp_path, url=server.url("/nothing.zip"), progress=False)
    assert "--url" not in str(e.value)
    assert download_dataset("broden1_224", tmp_path, url=server.url("/mirror.zip"), progress=False).is_dir()


def test_existing_foreign_folder_is_not_overwritten(server, tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(DownloadError, match=rf"{tmp_path / 'mine'} exists but is not a completed download"):
        download_dataset("mine", tmp_path, url=server.url("/mine.zip"))
    with pytest.raises(DatasetError, match="exists but is not a completed download"):
        downloaded_folder("mine", tmp_path)
    assert server.requests == []


# -- extraction -----------------------------------------------------------------------


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return buf.getvalue()


@pytest.mark.parametrize("evil", ["../evil", "data/../../evil", "/abs/evil", "C:/evil", "..\\evil"])
def test_unsafe_entries_are_refused(tmp_path, evil):
    archive = tmp_path / "x.zip"
    archive.write_bytes(make_zip({"data/index.csv": b"a", evil: b"pwned"}))
    target = tmp_path / "out" / "x"
    with pytest.raises(DownloadError, match=f"unsafe entry {re.escape(repr(evil))}"):
        extract_zip(archive, target, progress=False)
    assert not target.exists() and not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_symlink_entries_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    archive = tmp_path / "l.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match="symbolic link 'data/link'"):
        extract_zip(archive, tmp_path / "l", progress=False)


def test_truncated_zip_is_reported(tmp_path, broden_zip):
    data, _ = broden_zip
    archive = tmp_path / "t.zip"
    archive.write_bytes(data[: len(data) // 2])  # the central directory is lost
    with pytest.raises(CorruptArchiveError, match=r"archive .*t\.zip is truncated or corrupt"):
        extract_zip(archive, tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()


def test_corrupt_member_leaves_nothing_behind(tmp_path):
    content = bytes(range(256)) * 400
    data = bytearray(make_zip({"d/index.csv": b"x", "d/label.csv": b"y", "d/category.csv": b"z", "d/big.bin": content}))
    start = data.find(b"d/big.bin") + len("d/big.bin")  # local header name, then the compressed data
    data[start + 40] ^= 0xFF
    archive = tmp_path / "c.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"truncated or corrupt \(entry 'd/big\.bin'"):
        extract_zip(archive, tmp_path / "c", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zip"]  # no target, no .c.extracting


def test_download_of_a_truncated_archive_deletes_it(server, broden_zip, tmp_path):
    data, _ = broden_zip
    server.files["/g.zip"] = data[:-100]  # the server itself serves a cut file
    with pytest.raises(CorruptArchiveError, match="the archive was deleted; run the command again"):
        download_dataset("g", tmp_path, url=server.url("/g.zip"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_archive_without_broden_files_is_refused(server, tmp_path):
    server.files["/h.zip"] = make_zip({"h/readme.txt": b"hello"})
    with pytest.raises(DownloadError, match="no index.csv, label.csv, category.csv at its top level"):
        download_dataset("h", tmp_path, url=server.url("/h.zip"), progress=False)
    assert not (tmp_path / "h").exists()


def test_half_extracted_folder_is_never_complete(tmp_path, broden_zip, monkeypatch):
    """A crash in the middle of extraction leaves only the hidden temporary folder, which the next run replaces."""
    data, source = broden_zip
    archive = tmp_path / "k.zip"
    archive.write_bytes(data)
    import netdissect.data.download as dl

    real_open = open
    calls = {"n": 0}

    def failing_open(path, mode="r", *a, **kw):
        if "w" in mode and ".k.extracting" in str(path):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(dl, "open", failing_open, raising=False)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(archive, tmp_path / "k", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "k").exists()
    extract_zip(archive, tmp_path / "k", progress=False)
    assert is_complete(tmp_path / "k") and same_folder(tmp_path / "k", source)


# -- command line ------------------------------------------------------------------------


def test_cli_download(server, broden_zip, tmp_path, capsys):
    data, _ = broden_zip
    server.files["/cli.zip"] = data
    rc = main(["data", "download", "mini", "--url", server.url("/cli.zip"), "--dest", str(tmp_path),
               "--sha256", sha(data)])
    out = capsys.readouterr().out
    assert rc == 0 and f"mini: {tmp_path / 'mini'}" in out
    assert main(["data", "check", str(tmp_path / "mini")]) == 0
    rc = main(["data", "download", "other", "--url", server.url("/cli.zip"), "--dest", str(tmp_path),
               "--sha256", "f" * 64])
    assert rc == 2 and "checksum mismatch" in capsys.readouterr().err
    assert main(["data", "download", "--list", "--dest", str(tmp_path)]) == 0
    assert "broden1_227" in capsys.readouterr().out


# -- a full disk (issue 8, kind 7) --------------------------------------------------------


class _FullDisk:
    """``open`` for the download module: files whose name ends with ``suffix`` take ``room`` bytes, then ENOSPC."""

    def __init__(self, suffix: str, room: int):
        self.suffix, self.room = suffix, room

    def __call__(self, path, mode="r", *args, **kw):
        import builtins

        f = builtins.open(path, mode, *args, **kw)
        if "r" in mode or not str(path).endswith(self.suffix):
            return f
        disk = self

        class File:
            def write(self, data):
                import errno
                import os

                data = bytes(data)
                f.write(data[: disk.room])
                f.flush()
                if len(data) > disk.room:
                    disk.room = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= len(data)
                return len(data)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return File()


def test_a_full_disk_stops_the_download_at_once_and_resumes_later(server, broden_zip, tmp_path, monkeypatch, capsys):
    import netdissect.data.download as download
    from netdissect import storage
    from netdissect.errors import DiskFullError

    data, _ = broden_zip
    server.files["/full.zip"] = data
    monkeypatch.setattr(storage, "free_bytes", lambda path: 1000)
    monkeypatch.setattr(download, "open", _FullDisk(".part", 1000), raising=False)
    dest = tmp_path / "full.zip"
    with pytest.raises(DiskFullError) as info:
        download_file(server.url("/full.zip"), dest, sha256=sha(data), retries=3, progress=False)
    message = str(info.value)
    part = tmp_path / "full.zip.part"
    assert message.startswith("disk full while writing the download of") and str(part) in message, message
    assert f"needs about {storage.format_bytes(len(data) - 1000)} and 1000 bytes are free" in message, message
    assert "run the same command again to resume" in message
    assert len(server.requests) == 1  # not taken for a dropped connection: no retry
    assert part.read_bytes() == data[:1000]  # kept, to resume

    # the command line: one line, exit status 2
    rc = main(["data", "download", "full", "--url", server.url("/full.zip"), "--dest", str(tmp_path)])
    err = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip() and "%|" not in line]
    assert rc == 2 and len(err) == 1 and err[0].startswith("netdissect data: error: disk full"), err

    monkeypatch.undo()  # space freed: the same call resumes where it stopped
    download_file(server.url("/full.zip"), dest, sha256=sha(data), retries=0, progress=False)
    assert server.requests[-1] == ("/full.zip", "bytes=1000-")
    assert dest.read_bytes() == data


def test_a_full_disk_while_extracting_leaves_nothing_behind(tmp_path, broden_zip, monkeypatch):
    import netdissect.data.download as download
    from netdissect.errors import DiskFullError

    data, _ = broden_zip
    archive = tmp_path / "mini.zip"
    archive.write_bytes(data)
    monkeypatch.setattr(download, "open", _FullDisk(".png", 500), raising=False)
    with pytest.raises(DiskFullError, match=r"disk full while writing the files of .*mini\.zip into .*needs about"):
        extract_zip(archive, tmp_path / "mini", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini.zip"]
