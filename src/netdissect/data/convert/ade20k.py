"""ADE20K in its own format: :class:`ADE20KSource`, :func:`convert_ade20k`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ..colornames import COLOR_CONCEPTS
from ..imageio import MAX_LABEL
from ..protocol import Concept, ConceptTable
from .common import ConvertedDataset, Record, color_concepts, open_image, ordered_categories, write_converted


def _read_ade_mask(path: Path) -> np.ndarray:
    """An ADE20K ``_seg.png`` / ``_parts_N.png``: class = R // 10 * 256 + G, as (H, W) int64."""
    im = open_image(path, "ADE20K mask")
    try:
        if im.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"ADE20K mask {path} is mode {im.mode}; expected an RGB image (class in R and G)")
        rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"ADE20K mask {path} cannot be decoded: {e}") from None
    finally:
        im.close()
    return (rgb[:, :, 0].astype(np.int64) // 10) * 256 + rgb[:, :, 1].astype(np.int64)


def _ade_display_names(full: dict[int, str]) -> dict[int, str]:
    """ADE class index -> concept name: the first synonym of the WordNet-style name.

    Two classes with the same first synonym are told apart by their second
    synonym (``plant (flora)``), or else by the index (``plant (1931)``).
    """
    first = {k: v.split(",")[0].strip() for k, v in full.items()}
    counts: dict[str, int] = {}
    for name in first.values():
        counts[name] = counts.get(name, 0) + 1
    out = {}
    for k, name in first.items():
        if counts[name] > 1:
            syns = [s.strip() for s in full[k].split(",")[1:] if s.strip()]
            name = f"{name} ({syns[0]})" if syns else f"{name} ({k})"
        out[k] = name
    taken: dict[str, int] = {}
    for k in sorted(out):
        if out[k] in taken:  # second synonyms collide too
            out[k] = f"{first[k]} ({k})"
        taken[out[k]] = k
    return out


class ADE20KSource(ConvertedDataset):
    """ADE20K in its own format (the 2021 release), as a concept data set.

    ``source`` is searched recursively for ``<stem>_seg.png``; each needs
    ``<stem>.jpg`` and ``<stem>.json`` beside it, and may have part masks
    ``<stem>_parts_1.png``, ``_parts_2.png``, ...  In every mask the class
    index is ``R // 10 * 256 + G`` (0 = unlabelled) and equals ``name_ndx``
    of the JSON's objects; the JSON names it (``"car, auto, automobile"``:
    the concept is called by the first synonym, ``car``).  Objects at
    ``part_level`` 0 are ``object`` concepts (from ``_seg.png``); those at
    level N >= 1 are ``part`` concepts (from ``_parts_N.png``, one label
    layer per level).  The scene is the last entry of the JSON's ``scene``
    list with ``-s`` appended (``['outdoor', 'urban', 'street']`` ->
    ``street-s``), an image-level ``scene`` concept.  A class seen both as
    an object and as a part is one concept, whose primary category is the
    one it occurs in for more images (ties: object).  The split is ``train``
    for paths with a ``training`` folder, ``val`` for ``validation``.
    """

    kind = "ade20k"

    def __init__(self, source: "str | os.PathLike[str]", *, size=224, fit: str = "stretch", colors: bool = True):
        super().__init__(size, fit, colors)
        self.source = Path(source).expanduser()
        if not self.source.is_dir():
            raise DatasetError(f"ADE20K source {self.source} is not a folder")
        segs = sorted(p for p in self.source.rglob("*_seg.png") if not p.name.startswith("."))
        if not segs:
            raise DatasetError(f"ADE20K source {self.source} holds no *_seg.png files")
        full_names: dict[int, str] = {}
        image_counts: dict[int, list[int]] = {}  # index -> [images as object, images as part]
        scenes: list[str | None] = []
        records = []
        for seg in segs:
            stem = seg.name[: -len("_seg.png")]
            image = seg.with_name(stem + ".jpg")
            meta = seg.with_name(stem + ".json")
            for p, what in ((image, "image"), (meta, "annotation")):
                if not p.is_file():
                    raise DatasetError(f"ADE20K mask {seg} has no {what} file {p.name} beside it")
            ann = self._read_json(meta)
            levels_seen: dict[int, set[int]] = {}
            for k, obj in enumerate(ann.get("object", [])):
                try:
                    index, name = int(obj["name_ndx"]), str(obj["name"])
                    level = int((obj.get("parts") or {}).get("part_level", 0))
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(f"{meta}: object {k} lacks a valid name_ndx, name or parts.part_level") from None
                if index < 1 or index > MAX_LABEL:
                    raise DatasetError(f"{meta}: object {k} has name_ndx {index}, outside 1..{MAX_LABEL}")
                if full_names.setdefault(index, name) != name:
                    raise DatasetError(
                        f"{meta}: class {index} is named {name!r}, but another file names it {full_names[index]!r}"
                    )
                levels_seen.setdefault(index, set()).add(level)
            for index, levels in levels_seen.items():
                counts = image_counts.setdefault(index, [0, 0])
                counts[0] += 0 in levels
                counts[1] += any(lv > 0 for lv in levels)
            scene = ann.get("scene") or []
            scenes.append(str(scene[-1]).strip() + "-s" if isinstance(scene, list) and scene and str(scene[-1]).strip()
                          else None)
            parts = []
            level = 1
            while seg.with_name(f"{stem}_parts_{level}.png").is_file():
                parts.append(seg.with_name(f"{stem}_parts_{level}.png"))
                level += 1
            parts_in_path = seg.relative_to(self.source).parts
            split = "val" if "validation" in parts_in_path else "train"
            records.append(Record(stem, split, image, {"seg": seg, "parts": parts, "json": meta}))
        seen_ids = set()
        for r in records:
            if r.image_id in seen_ids:
                raise DatasetError(f"ADE20K source {self.source} has two images named {r.image_id}")
            seen_ids.add(r.image_id)

        display = _ade_display_names(full_names)
        scene_names = sorted({s for s in scenes if s})
        taken = set(display.values())
        first = len(COLOR_CONCEPTS) + 1 if colors else 1
        concepts = color_concepts() if colors else []
        self._number = np.zeros(MAX_LABEL + 1, dtype=np.int64)  # ADE index -> label number (0: unnamed)
        number = first
        for category in ("object", "part"):
            for index in sorted(full_names, key=lambda k: display[k]):
                obj_images, part_images = image_counts.get(index, [0, 0])
                primary = "object" if obj_images >= part_images else "part"
                if primary != category:
                    continue
                concepts.append(Concept(number, display[index], category))
                self._number[index] = number
                number += 1
        scene_number = {}
        for s in scene_names:
            name = s if s not in taken else f"{s} (scene)"
            concepts.append(Concept(number, name, "scene"))
            scene_number[s] = number
            number += 1
        cats = (["color"] if colors else []) + ["object", "part"] + (["scene"] if scene_names else [])
        self.concepts = ConceptTable(concepts, ordered_categories(cats))
        self._known = np.zeros(MAX_LABEL + 1, dtype=bool)
        self._known[list(full_names)] = True
        self._known[0] = True
        for r, s in zip(records, scenes):
            r.data["scene"] = scene_number.get(s) if s else None
        self.records = records
        self.options = {"source": str(self.source.resolve())}

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DatasetError(f"ADE20K annotation {path} cannot be read: {e}") from None
        for encoding in ("utf-8", "latin-1"):  # some ADE20K files are not valid UTF-8
            try:
                obj = json.loads(raw.decode(encoding))
                break
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                error = e
        else:
            raise DatasetError(f"ADE20K annotation {path} is not valid JSON: {error}")
        ann = obj.get("annotation") if isinstance(obj, dict) else None
        if not isinstance(ann, dict):
            raise DatasetError(f"ADE20K annotation {path} has no 'annotation' object")
        return ann

    def _record_files(self, record: Record) -> list[Path]:
        return [record.data["seg"], *record.data["parts"], record.data["json"]]

    def _map(self, path: Path) -> np.ndarray:
        classes = _read_ade_mask(path)
        if not self._known[classes].all():
            bad = np.unique(classes[~self._known[classes]])
            raise DatasetError(
                f"ADE20K mask {path} holds class index(es) {', '.join(map(str, bad[:10]))} that no annotation "
                f"(.json) under {self.source} names"
            )
        return self._number[classes]

    def _source_labels(self, record: Record) -> tuple[list[np.ndarray], list[int]]:
        layers = [self._map(record.data["seg"])] + [self._map(p) for p in record.data["parts"]]
        scene = record.data.get("scene")
        return layers, ([scene] if scene else [])


def convert_ade20k(source, out, *, size=224, fit="stretch", colors=True, image_format="jpg", quality=95,
                   workers=0, progress=False, overwrite=False) -> Path:
    """Convert ADE20K (see :class:`ADE20KSource`) into a Broden folder ``out``."""
    ds = ADE20KSource(source, size=size, fit=fit, colors=colors)
    return write_converted(ds, out, image_format, quality, workers, progress, overwrite)


__all__ = ["ADE20KSource", "convert_ade20k"]
