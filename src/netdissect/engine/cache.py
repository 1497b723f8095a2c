"""The activation cache: each layer's float32 activations on disk, for a second pass without the model.

One file per layer, image-major: image ``i`` of the shard occupies bytes
``[i * units * h * w * 4, (i + 1) * ...)``.  Files are appended to in the
first pass, truncated to the last checkpoint when a run resumes, read in
order in the second pass and deleted when the run is complete.  float32 keeps
results bit-identical to recomputing (a float16 cache would change
thresholds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ..paths import encode_name
from ..storage import disk_full_as_error


def cache_fits(bytes_needed: int, directory: Path, limit_gb: float) -> bool:
    """True when ``bytes_needed`` fits under ``limit_gb`` and half the free space of ``directory``."""
    free = shutil.disk_usage(directory).free
    return bytes_needed <= min(limit_gb * 2**30, free // 2)


class ActivationCache:
    """float32 activation files of several layers.

    Parameters
    ----------
    directory : Path
        Where the files go (a run's cache folder).
    shapes : dict of str to tuple of int
        Layer name -> (units, h, w).
    prefix : str
        File-name prefix (distinct per process of a multi-process run).
    """

    def __init__(self, directory: Path, shapes: dict[str, tuple[int, int, int]], *, prefix: str = "acts"):
        self.directory = Path(directory)
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.paths = {name: self.directory / f"{prefix}-{encode_name(name)}.f32" for name in self.shapes}
        self._append: dict[str, object] = {}
        self._read: dict[str, object] = {}
        self.planned: int | None = None  # images the files will hold once the pass is complete

    def image_bytes(self, name: str) -> int:
        """Bytes of one image's activations of layer ``name``."""
        u, h, w = self.shapes[name]
        return u * h * w * 4

    def total_bytes(self, images: int) -> int:
        """Bytes needed for ``images`` images of every layer."""
        return images * sum(self.image_bytes(n) for n in self.shapes)

    def images_stored(self) -> int:
        """Whole images present in every layer's file (0 when a file is missing)."""
        counts = []
        for name, path in self.paths.items():
            counts.append(path.stat().st_size // self.image_bytes(name) if path.is_file() else 0)
        return min(counts, default=0)

    def truncate(self, images: int, *, planned: int | None = None) -> None:
        """Keep the first ``images`` images of every file (creating missing files).

        ``planned``: the images the files will hold at the end of the pass
        (says how much space is still needed when the disk fills up).
        """
        self.close()
        self.planned = planned
        with self._disk_full(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            for name, path in self.paths.items():
                with open(path, "ab") as f:
                    f.truncate(images * self.image_bytes(name))

    def _disk_full(self, path: Path):
        """Turns a full disk while writing ``path`` into a DiskFullError saying how much the cache still needs."""
        needed = None
        if self.planned is not None:
            have = sum(p.stat().st_size for p in self.paths.values() if p.is_file())
            needed = max(0, self.total_bytes(self.planned) - have)
        return disk_full_as_error(
            "the activation cache", path, needed,
            "the state up to the last checkpoint is kept: free some space and run the same command again to "
            "resume (or run with --activation-cache recompute, which needs no cache but starts again)")

    def append(self, acts: dict[str, torch.Tensor]) -> None:
        """Append a batch: ``acts[name]`` is (B, units, h, w) float32.

        Raises
        ------
        DiskFullError
            When the disk is full, naming the file and the space the rest of the cache needs.
        """
        for name, a in acts.items():
            with self._disk_full(self.paths[name]):
                f = self._append.get(name)
                if f is None:
                    f = self._append[name] = open(self.paths[name], "ab")
                array = np.ascontiguousarray(a.detach().to("cpu", torch.float32).numpy())
                f.write(memoryview(array).cast("B"))

    def read(self, first: int, count: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Images ``first .. first + count - 1`` of every layer as (count, units, h, w) float32 tensors.

        Raises
        ------
        DatasetError
            When a file is shorter than asked (a truncated cache).
        """
        out = {}
        for name, path in self.paths.items():
            f = self._read.get(name)
            if f is None:
                f = self._read[name] = open(path, "rb")
            f.seek(first * self.image_bytes(name))
            buf = np.empty((count, *self.shapes[name]), dtype=np.float32)
            if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                raise DatasetError(f"activation cache {path} is truncated; delete {self.directory} and run again")
            out[name] = torch.from_numpy(buf).to(device, non_blocking=True)
        return out

    def flush(self) -> None:
        """Push appended data to the operating system (before a checkpoint records it).

        Raises
        ------
        DiskFullError
            When the disk is full.
        """
        for name, f in self._append.items():
            with self._disk_full(self.paths[name]):
                f.flush()

    def close(self) -> None:
        """Close every open file (every one, even when writing out a file's buffer fails).

        Raises
        ------
        DiskFullError
            When the disk is full (the first file that failed).
        """
        files = [(self.paths[name], f) for name, f in self._append.items()] + [(None, f) for f in self._read.values()]
        self._append, self._read = {}, {}
        failed: BaseException | None = None
        for path, f in files:
            try:
                with self._disk_full(path or self.directory):
                    f.close()
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def delete(self) -> None:
        """Close and remove the files."""
        self.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)

    @staticmethod
    def remove_leftovers(directory: Path) -> None:
        """Remove every activation file in ``directory`` (left by a run killed after it wrote its results)."""
        for path in Path(directory).glob("acts*.f32"):
            path.unlink(missing_ok=True)
