"""The HTML report of a run directory: ``RUN_DIR/report/``.

Layout of the report folder (self-contained, relative links only)::

    index.html            overview: the run, a table comparing layers, per layer the
                          detector counts under both conventions, plots, best units; with
                          word labels (`netdissect describe`), where words and IoU labels agree
    layer-<slug>.html     the unit gallery of one layer (filter, search, sort in plain JS)
    concepts.html         concept index: for each concept, the units that detect it
    plots/*.png|svg       every plot, in both formats
    strips/<slug>/uNNNN.jpg  each unit's top images with its region drawn on them
    static/report.css|js

Pages are rendered with Jinja2, autoescaping on; data embedded for the
scripts goes through :func:`json_for_script`, so no string from the data
(concept, layer, model or file names) can end a ``<script>`` block.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .. import __version__
from ..data.protocol import ConceptDataset
from ..errors import ConfigError, DiskFullError
from ..labeling.iou import CONVENTIONS, is_detector
from ..results import DissectionData as Dissection
from ..results.lock import locked, pid_alive
from ..storage import disk_full_as_error, disk_full_error, is_disk_full
from . import plots
from .images import LABEL_RGB, REGION_RGB, ImageSource, StripRenderer, StripSpec, needed_images
from .links import experiment_pages, experiments_section, link_experiments

log = logging.getLogger(__name__)

#: the report's folder name inside a run directory
REPORT_DIR = "report"
#: best units previewed per layer on the overview page
PREVIEW_UNITS = 4

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(obj: Any) -> Markup:
    r"""JSON safe to place inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` (and the two JavaScript line separators) become
    ``\\uXXXX`` escapes, which JSON.parse reads back as the same characters,
    so no string can close the script element or open a comment.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text))


def _percent(share: float) -> str:
    """0.004 -> '0.4%', 0.25 -> '25%'."""
    p = 100 * float(share)
    return f"{p:.1f}%" if 0 < p < 9.95 else f"{p:.0f}%"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("netdissect.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["json_script"] = json_for_script
    env.filters["iou"] = lambda v: f"{float(v):.3f}"
    env.filters["pct"] = _percent
    env.filters["sentence"] = lambda v: str(v)[:1].upper() + str(v)[1:]
    return env


def slugify(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique slug for a layer name."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "layer"
    slug, k = base, 2
    while slug.lower() in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug.lower())
    return slug


@dataclass
class UnitView:
    """One unit's card in a gallery page: its label, IoU, strip and top image ids."""

    unit: int  # 1-based
    label: str
    category: str
    iou: float
    detector: bool
    concept: int  # label number, 0 = unknown
    strip: str | None = None  # relative path of the strip image
    images: list[str] = field(default_factory=list)  # image ids of the top images
    words: list[tuple[str, list[str]]] = field(default_factory=list)  # (method, best words) of other label tables

    @property
    def anchor(self) -> str:
        """The HTML id of the unit's card."""
        return f"u{self.unit}"


@dataclass
class LayerView:
    """One layer of the report: its units and summary (from ``summary.json``)."""

    name: str
    slug: str
    units: list[UnitView]
    info: dict[str, Any]
    grid: tuple[int, int]
    n_top: int

    @property
    def page(self) -> str:
        """File name of the layer's gallery page."""
        return f"layer-{self.slug}.html"

    @property
    def detectors(self) -> int:
        """Units whose best IoU exceeds the cut-off."""
        return int(self.info["detectors"])

    @property
    def share(self) -> float:
        """Detectors as a share of the layer's units."""
        return self.detectors / max(1, len(self.units))

    def unique(self, convention: str) -> dict[str, int]:
        """Unique detectors per category under ``convention``."""
        return dict(self.info["unique_detectors"][convention]["unique"])

    def unique_units(self, convention: str) -> dict[str, int]:
        """Detector units per category under ``convention``."""
        return dict(self.info["unique_detectors"][convention]["units"])

    def total_unique(self, convention: str) -> int:
        """Unique detectors of all categories under ``convention``."""
        return int(self.info["unique_detectors"][convention]["total_unique"])

    def category_counts(self) -> dict[str, int]:
        """Detector units per category of their top label."""
        out: dict[str, int] = {}
        for u in self.units:
            out[u.category] = out.get(u.category, 0) + 1
        return out


def _concept_numbers(result: Dissection) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for c in result.concepts:  # in label-number order: ties go to the lower number
        out.setdefault((c.category, c.name), c.number)
    return out


def _layer_views(result: Dissection) -> list[LayerView]:
    numbers = _concept_numbers(result)
    cut = result.iou_threshold
    taken: set[str] = set()
    views = []
    for name in result.layers:
        t = pd.read_csv(result.layer_dir(name) / "tally.csv", keep_default_na=False,
                        dtype={"label": str, "category": str})  # a concept named "007" stays "007"
        units = [UnitView(int(r.unit), str(r.label), str(r.category), float(r.score),
                          bool(is_detector(float(r.score), cut)), numbers.get((str(r.category), str(r.label)), 0))
                 for r in t[["unit", "label", "category", "score"]].itertuples(index=False)]
        _attach_words(result, name, units)
        info = result.summary["layers"][name]
        n_top = int(result.config.get("config", {}).get("top_images", 0) or 0)
        views.append(LayerView(name, slugify(name, taken), units, info, tuple(info.get("grid", (0, 0))), n_top))
    return views


#: words of another method shown on a unit card
CARD_WORDS = 3


def _other_tables(result: Dissection) -> dict[str, pd.DataFrame]:
    """The label tables of methods other than IoU (words from `netdissect describe`), by method."""
    return {m: result.label_table(m) for m in result.label_methods() if m != "iou"}


def _attach_words(result: Dissection, layer: str, units: list[UnitView]) -> None:
    """Add each other method's best words to the cards of ``layer``."""
    from ..labeling.words import ranked_labels

    by_unit = {u.unit: u for u in units}
    for method, table in _other_tables(result).items():
        if not {"layer", "unit", "label"} <= set(table.columns):
            continue
        rows = table[table["layer"] == layer]
        for unit, words in zip(rows["unit"].astype(int), ranked_labels(rows)):
            if unit in by_unit:
                by_unit[unit].words.append((method, words[:CARD_WORDS]))


def _agreement(result: Dissection) -> list[dict[str, Any]]:
    """Per word method, per layer: how often its best word agrees with the IoU label (detectors, the rest)."""
    from ..labeling.words import agreement

    out = []
    for method, table in _other_tables(result).items():
        if not {"layer", "unit", "label"} <= set(table.columns):
            continue
        rows = agreement(result.labels, table)
        if len(rows):
            out.append({"method": method, "rows": rows.to_dict("records")})
    return out


def read_image_ids(run_dir: Path) -> dict[int, str]:
    """``images.csv`` as run index -> image id, ids read as text (``"000012"`` stays as written)."""
    path = Path(run_dir) / "images.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"image": str}, keep_default_na=False)
    return dict(zip(table["index"].astype(int), table["image"].astype(str)))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{int(minutes)} min {int(seconds % 60)} s"
    return f"{int(minutes // 60)} h {int(minutes % 60)} min"


def _run_facts(result: Dissection) -> list[tuple[str, str]]:
    cfg = result.config
    opts = cfg.get("config") or cfg.get("options") or {}
    facts = [("Model", str(cfg.get("model", "?")))]
    if cfg.get("weights"):
        facts.append(("Weights", str(cfg["weights"])))
    facts.append(("Data", str(cfg.get("data", "?"))))
    if "images" in cfg:
        facts.append(("Images", f"{int(cfg['images']):,}"))
    if "image_size" in cfg:
        ih, iw = cfg["image_size"]
        sh, sw = cfg.get("label_size", cfg["image_size"])
        facts.append(("Image / label size", f"{ih}\u00d7{iw} / {sh}\u00d7{sw}"))
    if opts:
        facts.append(("Protocol", str(opts.get("protocol", "?"))))
        if "quantile" in opts:
            facts.append(("Region", f"top {100 * float(opts['quantile']):g}% of each unit's activations"))
    facts.append(("Detector cut-off", f"IoU > {result.iou_threshold:g}"))
    if cfg.get("started"):
        took = f", in {_duration(float(cfg['seconds']))}" if cfg.get("seconds") is not None else ""
        facts.append(("Dissected", f"{str(cfg['started']).replace('T', ' ')[:16]}{took}"))
    facts.append(("netdissect", str(cfg.get("netdissect", __version__))))
    return facts


def _concept_index(result: Dissection, views: list[LayerView]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(detected, undetected) concepts; a detected one lists its detector units per layer, best first."""
    rows: dict[int, dict[str, Any]] = {}
    for c in result.concepts:
        rows[c.number] = {"number": c.number, "name": c.name, "category": c.category, "layers": [], "count": 0,
                          "best": 0.0}
    for v in views:
        by_concept: dict[int, list[UnitView]] = {}
        for u in v.units:
            if u.detector and u.concept in rows:
                by_concept.setdefault(u.concept, []).append(u)
        for number, units in by_concept.items():
            units.sort(key=lambda u: (-u.iou, u.unit))
            row = rows[number]
            row["layers"].append({"name": v.name, "page": v.page, "units": units})
            row["count"] += len(units)
            row["best"] = max(row["best"], units[0].iou)
    detected = sorted((r for r in rows.values() if r["count"]), key=lambda r: (-r["count"], -r["best"], r["name"]))
    undetected = sorted((r for r in rows.values() if not r["count"]), key=lambda r: (r["category"], r["name"]))
    return detected, undetected


def _write_plots(result: Dissection, views: list[LayerView], folder: Path) -> dict[str, str]:
    """Writes every plot as PNG and SVG; returns name -> stem relative to the report folder."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def save(fig, name: str) -> None:
        plots.save_figure(fig, folder / name)
        out[name] = f"plots/{name}"

    fig, (a, b) = plots.new_figure(9.6, 3.3, ncols=2)
    plots.plot_layers(result, convention="per-category", legend=False, ax=a)
    plots.plot_layers(result, convention="top-label", ax=b)
    save(fig, "layers-unique-detectors")
    fig, (a,) = plots.new_figure(5.6, 3.2)
    plots.plot_iou_distribution(result, ax=a)
    save(fig, "layers-iou")
    for v in views:
        fig, (a,) = plots.new_figure(5.2, 3.0)
        plots.plot_categories(result, v.name, ax=a)
        save(fig, f"{v.slug}-categories")
        fig, (a,) = plots.new_figure(5.2, 3.0)
        plots.plot_iou_distribution(result, v.name, ax=a)
        save(fig, f"{v.slug}-iou")
    return out


def _render_strips(result: Dissection, views: list[LayerView], folder: Path, source: ImageSource, spec: StripSpec,
                   progress: bool) -> None:
    label_size = tuple(result.config.get("label_size") or result.config.get("image_size") or (0, 0))
    image_size = tuple(result.config.get("image_size") or label_size)
    renderer = StripRenderer(source, label_size, image_size, spec)
    tops = {v.name: result.top_images(v.name) for v in views}
    concepts_of = {}
    for v in views:
        arr = np.zeros(len(v.units), dtype=np.int64)
        for u in v.units:
            arr[u.unit - 1] = u.concept
        concepts_of[v.name] = arr
    needs = needed_images((tops[v.name]["indices"], concepts_of[v.name]) for v in views)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(needs), desc="report: images", unit="img")
    renderer.load(needs, progress=bar.update if bar else None)
    if bar:
        bar.close()
    ids = read_image_ids(result.run_dir)
    for v in views:
        top = tops[v.name]
        indices = top["indices"]
        v.n_top = indices.shape[1]
        if indices.shape[1] == 0:
            continue
        paths: list[Path | None] = [None] * indices.shape[0]
        by_unit = {u.unit: u for u in v.units}
        for u in range(indices.shape[0]):
            rel = f"strips/{v.slug}/u{u + 1:04d}.jpg"
            paths[u] = folder / rel
            view = by_unit.get(u + 1)
            if view is not None:
                view.strip = rel
                view.images = [ids.get(int(i), str(int(i))) for i in indices[u] if int(i) >= 0]
        renderer.render(top["maps"], result.thresholds(v.name), indices, concepts_of[v.name], paths)
    if renderer.failed:
        n = len(renderer.failed)
        first = next(iter(renderer.failed.values()))
        extra = f"{n} top image{'s' if n > 1 else ''} could not be loaded (first error: {first})"
        source.reason = f"{source.reason}; {extra}" if source.reason else extra


def _clear_leftovers(dest: Path) -> None:
    """Remove the temporary folders (``.report.tmp-<pid>``, ``.report.old-<pid>``) of writers that died.

    A report writer killed while writing leaves its temporary folder behind;
    one whose process is gone (or is this process) is removed.
    """
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.(?:tmp|old)-(\d+)")
    if not dest.parent.is_dir():
        return
    for path in dest.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink():
            pid = int(match.group(1))
            if pid == os.getpid() or not pid_alive(pid):
                log.info("removing %s, left by a report writer that stopped (pid %d)", path, pid)
                shutil.rmtree(path, ignore_errors=True)


def _replace_folder(tmp: Path, dest: Path) -> None:
    """Puts the finished ``tmp`` where ``dest`` is, removing the old report only once the new one is complete."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_report(run_dir: str | Path, *, out: str | Path | None = None, dataset: ConceptDataset | None = None,
                 images: bool = True, thumb: int = 96, columns: int = 5, quality: int = 75,
                 progress: bool = False, wait: bool = False) -> Path:
    """Write the HTML report of a finished run; returns the path of its ``index.html``.

    run_dir: a complete run directory.  out: the report folder (default
    ``RUN_DIR/report``; replaced whole when it exists).  dataset: the concept
    data set, when it cannot be reopened from the run's ``config.json``
    (e.g. an in-memory one); without it, or with ``images=False``, the report
    is built without image strips and says why.  thumb: thumbnail height in
    pixels; columns: thumbnails per row of a unit's strip; quality: JPEG
    quality.  progress: show a progress bar while loading images.  wait:
    when another process is writing into the run directory (it holds
    ``RUN_DIR/.lock``), wait for it instead of raising RunInUseError.

    The report is built in a temporary folder beside ``out`` that replaces it
    once complete; temporary folders left by writers that were killed are
    removed first.  A full disk raises DiskFullError naming the folder (the
    old report is kept).
    """
    if not 16 <= int(thumb) <= 512:
        raise ConfigError(f"thumb={thumb} is out of range; thumbnail height must be 16..512 pixels")
    if not 1 <= int(columns) <= 50:
        raise ConfigError(f"columns={columns} is out of range; thumbnails per row must be 1..50")
    if not 1 <= int(quality) <= 95:
        raise ConfigError(f"quality={quality} is out of range; JPEG quality must be 1..95")
    # the same lock as a dissection: no report of a run that is being (re)written
    with locked(run_dir, wait=wait) if Path(run_dir).is_dir() else nullcontext():
        return _write_report(run_dir, out, dataset, images, thumb, columns, quality, progress)


def _write_report(run_dir, out, dataset, images, thumb, columns, quality, progress) -> Path:
    started = time.time()
    result = Dissection.load(run_dir)
    dest = Path(out) if out is not None else result.run_dir / REPORT_DIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    kept = ("the previous report, if any, is kept: free some space and run `netdissect report "
            f"{result.run_dir}` again")
    with disk_full_as_error("the report into", tmp, None, kept):
        tmp.mkdir()
    try:
        views = _layer_views(result)
        spec = StripSpec(int(thumb), int(columns), int(quality))
        if images:
            source = ImageSource(result.config.get("data"), read_image_ids(result.run_dir), dataset,
                                 source_info=result.config.get("source"))
        else:
            source = ImageSource.unavailable("images were turned off for this report")
        if source.available:
            _render_strips(result, views, tmp, source, spec, progress)
        plot_files = _write_plots(result, views, tmp / "plots")
        static = tmp / "static"
        static.mkdir()
        here = Path(__file__).parent / "static"
        for name in ("report.css", "report.js"):
            shutil.copyfile(here / name, static / name)
        _write_pages(result, views, tmp, source, spec, plot_files)
        log.info("report written to %s in %.1f s", dest, time.time() - started)
        _replace_folder(tmp, dest)
        link_experiments(result.run_dir, dest / "index.html")  # RUN/experiments/index.html, when there are pages
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # before the free space is measured
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and is_disk_full(exc):
            raise disk_full_error("the report into", tmp, None, kept) from exc
        raise
    return dest / "index.html"


def _write_pages(result: Dissection, views: list[LayerView], folder: Path, source: ImageSource, spec: StripSpec,
                 plot_files: dict[str, str]) -> None:
    env = _environment()
    categories = list(result.concepts.categories)
    colors = plots.category_colors(categories)
    opts = result.config.get("config") or result.config.get("options") or {}
    q = opts.get("quantile")
    image_size = tuple(result.config.get("image_size") or (spec.thumb, spec.thumb))
    n_top = max((v.n_top for v in views), default=0)
    mosaic = spec.mosaic_size(n_top, image_size) if n_top and source.available else (0, 0)
    # the narrowest a card gets before the grid drops a column: a little under the strip's width
    card_width = max(300, round(0.8 * mosaic[0]) + 26)
    common = {
        "title": f"Network Dissection: {result.config.get('model', '?')}",
        "model": str(result.config.get("model", "?")),
        "data_spec": str(result.config.get("data", "?")),
        "layers": views,
        "categories": categories,
        "colors": colors,
        "cutoff": result.iou_threshold,
        "quantile": q,
        "images_available": source.available,
        "images_note": source.reason,
        "conventions": CONVENTIONS,
        "convention_text": plots.CONVENTION_TEXT,
        "plots": plot_files,
        "mosaic": mosaic,
        "card_width": card_width,
        "quantile_text": f"{100 * float(q):g}%" if q else None,
        "region_rgb": "rgb(%d,%d,%d)" % REGION_RGB,
        "label_rgb": "rgb(%d,%d,%d)" % LABEL_RGB,
        "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }
    # tmp folder and final folder are siblings: links relative to one hold for the other
    experiments = Markup(experiments_section(experiment_pages(result.run_dir), folder))
    pages = {"index.html": ("index.html.j2", {"page": "index", "facts": _run_facts(result),
                                               "preview": PREVIEW_UNITS, "agreement": _agreement(result),
                                               "experiments": experiments})}
    for v in views:
        data = {"kind": "units", "layer": v.name, "cutoff": result.iou_threshold,
                "items": [{"id": u.anchor, "unit": u.unit, "label": u.label, "cat": u.category,
                           "score": round(u.iou, 6), "det": u.detector,
                           "words": " ".join(w for _, words in u.words for w in words)} for u in v.units]}
        pages[v.page] = ("layer.html.j2", {"page": v.page, "layer": v, "data": data})
    detected, undetected = _concept_index(result, views)
    data = {"kind": "concepts", "items": [{"id": f"c{r['number']}", "label": r["name"], "cat": r["category"],
                                           "score": r["best"], "det": True, "unit": r["number"]} for r in detected]}
    pages["concepts.html"] = ("concepts.html.j2", {"page": "concepts.html", "detected": detected,
                                                   "undetected": undetected, "data": data})
    for name, (template, extra) in pages.items():
        html = env.get_template(template).render(**common, **extra)
        (folder / name).write_text(html, encoding="utf-8")


def summary_html(result: Dissection) -> str:
    """A compact HTML view of a result (for Jupyter): per layer units, detectors, unique detectors, best units."""
    env = _environment()
    categories = list(result.concepts.categories)
    rows = []
    labels = result.labels
    for layer in result.layers:
        info = result.summary["layers"][layer]
        best = labels[labels["layer"] == layer].nlargest(3, "iou")
        rows.append({
            "name": layer,
            "units": int(info["units"]),
            "detectors": int(info["detectors"]),
            "unique": {c: dict(info["unique_detectors"][c]["unique"]) for c in CONVENTIONS},
            "total": {c: int(info["unique_detectors"][c]["total_unique"]) for c in CONVENTIONS},
            "best": [(int(r.unit), str(r.label), float(r.iou)) for r in best.itertuples()],
        })
    report = result.run_dir / REPORT_DIR / "index.html"
    return env.get_template("summary.html.j2").render(
        run=str(result.run_dir), model=str(result.config.get("model", "?")), data=str(result.config.get("data", "?")),
        cutoff=result.iou_threshold, categories=categories, colors=plots.category_colors(categories), rows=rows,
        report=str(report) if report.is_file() else None,
    )
