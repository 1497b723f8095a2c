"""Writing the Broden format: :func:`write_broden`.

The format and the statistics written (``frequency``, ``coverage``) are
described in :mod:`netdissect.data.broden`.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ConfigError, DatasetError
from ..imageio import MAX_LABEL, write_label_png, write_rgb
from ..protocol import Concept, ConceptDataset
from .read import INDEX_META

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|bmp|gif|tiff?|webp)$", re.IGNORECASE)


def _safe_stem(image_id: str) -> str:
    """A relative path usable as a file stem: no '..', no ';' ',' or odd characters, no image suffix."""
    parts = [p for p in re.split(r"[\\/]+", str(image_id)) if p not in ("", ".", "..")]
    parts = [_SAFE.sub("_", p) for p in parts]
    stem = _IMAGE_EXT.sub("", "/".join(parts))
    return stem if stem and not stem.endswith("/") else (stem + "image")


def _fmt(x: float) -> str:
    r"""Fixed-point decimal that the original readers parse as a float (``\d+\.\d*``)."""
    s = f"{x:.10f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _union_counts(layers: list[np.ndarray], minlength: int) -> np.ndarray:
    """Pixels per label number in the union of ``layers`` (a label twice at one pixel counts once)."""
    if len(layers) == 1:
        return np.bincount(layers[0].ravel(), minlength=minlength)
    stack = np.sort(np.stack(layers).reshape(len(layers), -1), axis=0)
    dup = np.zeros_like(stack, dtype=bool)
    dup[1:] = stack[1:] == stack[:-1]
    return np.bincount(stack[~dup], minlength=minlength)


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_broden(
    dataset: ConceptDataset,
    root: "str | os.PathLike[str]",
    *,
    image_format: str = "jpg",
    quality: int = 95,
    progress: bool = False,
    overwrite: bool = False,
    workers: int = 0,
) -> Path:
    """Write any concept data set in Broden format; returns the folder.

    Images go to ``images/<id>.jpg`` (or ``.png``), label layers to
    ``images/<id>_<category>.png``, or ``images/<id>_<category>_<k>.png``
    (k = 1, 2, ...) when an image has several layers of one category.  Each
    layer goes to the primary category (in ``dataset.concepts``) of the
    labels it holds; a layer holding labels of several categories is split
    into one layer per category.  Image-level labels go into their primary
    category's cell as numbers.  Every concept of the table gets a row in
    ``label.csv`` and its category's ``c_`` file, also if no image has it.

    The folder is written as ``<root>.partial`` and renamed to ``root`` only
    once complete (a failed write removes it).  An existing ``root`` raises
    DatasetError unless ``overwrite=True``.

    ``workers > 0`` loads samples in that many processes (decoding and
    resizing are usually the slow part; order and output are unchanged).  A
    data set with an ``image_file(i)`` method returning an already encoded
    image of the right size and of format ``image_format`` has that file
    copied byte for byte instead of being decoded and encoded again.

    Parameters
    ----------
    dataset : ConceptDataset
        The data set to write (its ``split_name(i)``, when present, fills the
        ``split`` column).
    root : str or os.PathLike
        The folder to create.
    image_format : str
        "jpg" (or "jpeg") or "png".
    quality : int
        JPEG quality, 1 to 100.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace an existing ``root``.
    workers : int
        Processes loading samples (0: the calling process).

    Returns
    -------
    pathlib.Path
        The written folder.

    Raises
    ------
    ConfigError
        For a bad ``image_format``, ``quality`` or ``workers``.
    DatasetError
        When ``root`` exists (without ``overwrite``) or a sample does not
        fit the data set's sizes or concept table.
    """
    fmt = str(image_format).lower().lstrip(".")
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in ("jpg", "png"):
        raise ConfigError(f"image_format={image_format!r} is not supported; use 'jpg' or 'png'")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ConfigError(f"quality={quality!r} must be an integer from 1 to 100")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"workers={workers!r} must be an integer >= 0")
    root = Path(root).expanduser()
    if root.exists() and not overwrite:
        raise DatasetError(f"output folder {root} already exists; pass overwrite=True to replace it")
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left over from an interrupted write
    try:
        _write_contents(dataset, partial, fmt, int(quality), progress, int(workers))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if root.exists():
        old = root.with_name(root.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)
        partial.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(root)
    return root


class _Loader:
    """Loads image i of a data set for writing: (sample, encoded image file to copy, or None).

    A data set with ``image_file(i)`` whose file already has the output
    format, the image size and RGB mode is copied as is (only its labels
    are loaded); otherwise the sample is loaded in full.
    """

    def __init__(self, dataset: ConceptDataset, fmt: str, size: tuple[int, int]):
        self.dataset, self.fmt, self.size = dataset, fmt, size

    def __call__(self, i: int):
        image_file = getattr(self.dataset, "image_file", None)
        if callable(image_file):
            path = Path(image_file(i))
            suffix = path.suffix.lower().lstrip(".")
            if ("jpg" if suffix == "jpeg" else suffix) == self.fmt:
                try:
                    from PIL import Image

                    with Image.open(path) as im:
                        ok = (im.size[1], im.size[0]) == tuple(self.size) and im.mode == "RGB"
                except OSError:
                    ok = False
                if ok:
                    return self.dataset.load_labels(i), path
        return self.dataset[i], None


_WORKER_LOADER: "_Loader | None" = None  # set in each loader process


def _init_worker(loader: _Loader) -> None:
    global _WORKER_LOADER
    _WORKER_LOADER = loader


def _worker_load(i: int):
    return _WORKER_LOADER(i)


def _samples(loader: _Loader, indices, workers: int):
    """Yield (index, sample, image file or None) in order, loading in ``workers`` processes when > 0."""
    if workers <= 0:
        for i in indices:
            yield (i, *loader(i))
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pending: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                             initializer=_init_worker, initargs=(loader,)) as pool:
        try:
            for i in indices:
                pending.append((i, pool.submit(_worker_load, i)))
                if len(pending) >= 4 * workers:  # bounded read-ahead: memory stays flat
                    j, fut = pending.popleft()
                    yield (j, *fut.result())
            while pending:
                j, fut = pending.popleft()
                yield (j, *fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()


def _write_contents(dataset: ConceptDataset, out: Path, fmt: str, quality: int, progress: bool,
                    workers: int = 0) -> None:
    concepts = dataset.concepts
    categories = list(concepts.categories)
    ncat = len(categories)
    max_number = concepts.max_number
    if max_number > MAX_LABEL:
        raise DatasetError(f"label number {max_number} does not fit a label PNG (max {MAX_LABEL})")
    cat_of = concepts.category_index()  # (max_number + 1,) primary category index, -1 = none
    ih, iw = (int(v) for v in dataset.image_size)
    sh, sw = (int(v) for v in dataset.label_size)
    npix = float(sh * sw)
    frequency = np.zeros(max_number + 1, dtype=np.int64)
    coverage = np.zeros(max_number + 1, dtype=np.float64)
    images_dir = out / "images"
    images_dir.mkdir(parents=True)
    split_name = getattr(dataset, "split_name", None)
    used: set[str] = set()  # lower-cased relative file names already taken
    index_rows: list[list] = []

    indices = range(len(dataset))
    if progress:
        try:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"writing {out.name[:-len('.partial')]}", unit="img")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass

    for i, sample, source_file in _samples(_Loader(dataset, fmt, (ih, iw)), indices, workers):
        ident = dataset.image_id(i)
        image = None
        if source_file is None:
            image = np.asarray(sample.image)
            if image.shape != (ih, iw, 3):
                raise DatasetError(f"image {i} ({ident}) has shape {image.shape}; the data set says ({ih}, {iw}, 3)")
        pixel = np.asarray(sample.pixel_labels)
        if pixel.ndim != 3 or pixel.shape[1:] != (sh, sw):
            raise DatasetError(
                f"image {i} ({ident}): pixel_labels has shape {pixel.shape}; expected (L, {sh}, {sw})"
            )
        # Sort label layers and image-level labels into categories.
        layers: list[list[np.ndarray]] = [[] for _ in categories]
        for layer in pixel:
            layer = layer.astype(np.int64, copy=False)
            lo, hi = int(layer.min(initial=0)), int(layer.max(initial=0))
            if hi == 0 and lo == 0:
                continue
            if lo < 0 or hi > max_number:
                bad = np.unique(layer[(layer < 0) | (layer > max_number)])
                raise DatasetError(
                    f"image {i} ({ident}): label code(s) {bad[:10].tolist()} are not in the concept table"
                )
            codes = np.flatnonzero(np.bincount(layer.ravel(), minlength=max_number + 1)[1:]) + 1
            if (cat_of[codes] < 0).any():
                bad = codes[cat_of[codes] < 0]
                raise DatasetError(
                    f"image {i} ({ident}): label code(s) {bad[:10].tolist()} are not in the concept table"
                )
            layer_cats = np.unique(cat_of[codes])
            if len(layer_cats) == 1:
                layers[int(layer_cats[0])].append(layer)
            else:
                per_pixel_cat = cat_of[layer]
                for c in layer_cats:
                    layers[int(c)].append(np.where(per_pixel_cat == c, layer, 0))
        scalars: list[list[int]] = [[] for _ in categories]
        for code in dict.fromkeys(int(v) for v in np.asarray(sample.image_labels).ravel()):
            if code == 0:
                continue
            if not 0 < code <= max_number or cat_of[code] < 0:
                raise DatasetError(f"image {i} ({ident}): image-level label {code} is not in the concept table")
            scalars[int(cat_of[code])].append(code)

        # Unique file names for this image.
        base = _safe_stem(ident)
        stem, attempt = base, 1
        while True:
            names = [f"{stem}.{fmt}"]
            for c, cat in enumerate(categories):
                k = len(layers[c])
                names += [f"{stem}_{cat}.png"] if k == 1 else [f"{stem}_{cat}_{j + 1}.png" for j in range(k)]
            if not any(n.lower() in used for n in names):
                break
            attempt += 1
            stem = f"{base}_{attempt}"
        used.update(n.lower() for n in names)

        # Write the files.
        image_path = images_dir / names[0]
        image_path.parent.mkdir(parents=True, exist_ok=True)
        if source_file is not None:
            shutil.copyfile(source_file, image_path)
        else:
            write_rgb(image_path, image.astype(np.uint8, copy=False), quality=quality)
        cells = []
        fraction = np.zeros(max_number + 1, dtype=np.float64)
        pos = 1
        for c in range(ncat):
            entries = []
            for layer in layers[c]:
                write_label_png(images_dir / names[pos], layer)
                entries.append(names[pos])
                pos += 1
            if layers[c]:
                counts = _union_counts(layers[c], max_number + 1)
                np.maximum(fraction, counts / npix, out=fraction)
            for code in scalars[c]:
                fraction[code] = 1.0
            entries += [str(code) for code in scalars[c]]
            cells.append(";".join(entries))
        fraction[0] = 0.0
        frequency += fraction > 0
        coverage += fraction
        split = str(split_name(i)) if callable(split_name) else "train"
        index_rows.append([names[0], split, ih, iw, sh, sw] + cells)

    # Metadata files.
    _write_csv(out / "index.csv", list(INDEX_META) + categories, index_rows)
    label_rows = []
    by_cat: list[list[Concept]] = [[] for _ in categories]
    for concept in concepts:
        n = concept.number
        by_cat[categories.index(concept.category)].append(concept)
        label_rows.append([n, concept.name, f"{concept.category}({frequency[n]})", int(frequency[n]),
                           _fmt(coverage[n]), ""])
    _write_csv(out / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], label_rows)
    category_rows = []
    for cat, members in zip(categories, by_cat):
        numbers = [m.number for m in members]
        category_rows.append([
            cat,
            min(numbers, default=0),
            max(numbers, default=0),
            len(numbers),
            int(sum(frequency[n] for n in numbers)),
        ])
        dense = sorted(members, key=lambda m: (-frequency[m.number], -coverage[m.number], m.number))
        _write_csv(
            out / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [[code + 1, m.number, m.name, int(frequency[m.number]), _fmt(coverage[m.number])]
             for code, m in enumerate(dense)],
        )
    _write_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"], category_rows)


__all__ = ["write_broden"]
