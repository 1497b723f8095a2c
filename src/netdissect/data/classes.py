"""Classification data: labelled images for the unit experiments (PNAS 2020, B2/B4).

Two layouts are read:

- a folder per class, ``ROOT/<class>/*.jpg`` (classes in sorted folder order,
  class index = position), as torchvision's ``ImageFolder``;
- an ImageNet-style list file, one ``path class_index`` per line (paths
  relative to the list file's folder or to ``root``; ``#`` starts a comment),
  with optional class names.

Images are prepared with the model's classification recipe: shorter side
resized to ``resize_size``, centre crop of ``crop_size`` (see
:class:`netdissect.models.Preprocess`), then the model's normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetError
from .imageio import read_rgb
from .images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ClassData:
    """A list of images with class indices.

    Attributes
    ----------
    paths : tuple of Path
        Image files.
    targets : tuple of int
        Class index of each image, in ``[0, len(classes))``.
    classes : tuple of str
        Class names, by index.
    """

    paths: tuple[Path, ...]
    targets: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self):
        if len(self.paths) != len(self.targets):
            raise ConfigError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        bad = [t for t in self.targets if not 0 <= t < len(self.classes)]
        if bad:
            raise DatasetError(f"class index {bad[0]} is outside 0..{len(self.classes) - 1} "
                               f"({len(self.classes)} classes)")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """How many classes there are (also those without an image here)."""
        return len(self.classes)

    @classmethod
    def from_folders(cls, root: str | Path) -> "ClassData":
        """Every image in ``root/<class>/``; classes in sorted folder order.

        Raises
        ------
        DatasetError
            When ``root`` is not a folder or has no class folder with images.
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"class folder root {str(root)!r} does not exist")
        classes, paths, targets = [], [], []
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                continue
            paths += files
            targets += [len(classes)] * len(files)
            classes.append(d.name)
        if not classes:
            raise DatasetError(f"{str(root)!r} holds no class folder with images ({', '.join(IMAGE_SUFFIXES)})")
        return cls(tuple(paths), tuple(targets), tuple(classes))

    @classmethod
    def from_list(cls, list_file: str | Path, *, root: str | Path | None = None,
                  classes: Sequence[str] | None = None) -> "ClassData":
        """Read an ImageNet-style list file of ``path class_index`` lines.

        Parameters
        ----------
        list_file : str or Path
            The list.
        root : str or Path, optional
            Folder the paths are relative to (default: the list file's folder).
        classes : sequence of str, optional
            Class names by index (default: ``"0"``, ``"1"``, ... up to the
            largest index).

        Raises
        ------
        DatasetError
            For a missing file, a malformed line (named by number) or an
            index outside ``classes``.
        """
        list_file = Path(list_file).expanduser()
        if not list_file.is_file():
            raise DatasetError(f"class list file {str(list_file)!r} does not exist")
        base = Path(root).expanduser() if root is not None else list_file.parent
        paths, targets = [], []
        for number, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, index = line.rpartition(" ")
            try:
                target = int(index)
            except ValueError:
                target = -1
            if not name.strip() or target < 0:
                raise DatasetError(f"{list_file}:{number}: expected 'path class_index', got {line!r}")
            paths.append(base / name.strip())
            targets.append(target)
        if not paths:
            raise DatasetError(f"class list file {str(list_file)!r} lists no image")
        names = tuple(classes) if classes is not None else tuple(str(i) for i in range(max(targets) + 1))
        return cls(tuple(paths), tuple(targets), names)

    def subset(self, indices: Sequence[int]) -> "ClassData":
        """The images at ``indices`` (same classes)."""
        return ClassData(tuple(self.paths[i] for i in indices), tuple(self.targets[i] for i in indices),
                         self.classes)

    def split(self, fraction: float = 0.5) -> tuple["ClassData", "ClassData"]:
        """Split every class in two, deterministically: its first ``fraction`` of images, and the rest.

        The order within a class is the data's own (sorted file names for
        folders), so the split is reproducible and stratified.  The ablation
        experiment ranks units on the first part and tests on the second
        (PNAS 2020: "rank on train, test on val").

        Raises
        ------
        ConfigError
            When ``fraction`` is not strictly between 0 and 1.
        """
        if not 0 < fraction < 1:
            raise ConfigError(f"split fraction must be in (0, 1), got {fraction!r}")
        by_class: dict[int, list[int]] = {}
        for i, t in enumerate(self.targets):
            by_class.setdefault(t, []).append(i)
        first, second = [], []
        for items in by_class.values():
            k = int(round(len(items) * fraction))
            first += items[:k]
            second += items[k:]
        return self.subset(sorted(first)), self.subset(sorted(second))

    def load(self, index: int, crop_size: int = 224, resize_size: int = 256) -> np.ndarray:
        """Image ``index`` as (crop_size, crop_size, 3) uint8: shorter side to ``resize_size``, centre crop."""
        return center_crop(read_rgb(self.paths[index]), crop_size, resize_size)

    def batches(self, batch_size: int, crop_size: int = 224,
                resize_size: int = 256) -> Iterator[tuple["np.ndarray", "np.ndarray"]]:
        """Yield ``(images, targets)``: (B, 3, S, S) uint8 and (B,) int64, in order.

        Raises
        ------
        ConfigError
            When ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            idx = range(start, min(start + batch_size, len(self)))
            images = np.stack([self.load(i, crop_size, resize_size) for i in idx]).transpose(0, 3, 1, 2)
            yield np.ascontiguousarray(images), np.asarray([self.targets[i] for i in idx], dtype=np.int64)


def center_crop(image: np.ndarray, crop_size: int = 224, resize_size: int = 256) -> np.ndarray:
    """The classification recipe: (H, W, 3) uint8 -> shorter side ``resize_size`` (bicubic), centre crop.

    Raises
    ------
    ConfigError
        When ``crop_size`` > ``resize_size`` or either is below 1.
    """
    if not 1 <= crop_size <= resize_size:
        raise ConfigError(f"crop_size {crop_size} must be between 1 and resize_size {resize_size}")
    h, w = image.shape[:2]
    scale = resize_size / min(h, w)
    nh, nw = max(crop_size, round(h * scale)), max(crop_size, round(w * scale))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = (nh - crop_size) // 2, (nw - crop_size) // 2
    return image[top:top + crop_size, left:left + crop_size]
