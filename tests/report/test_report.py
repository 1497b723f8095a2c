"""The HTML report, its strips and plots (no browser; see test_report_browser.py)."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import IDENTITY
from PIL import Image
from torch import nn

import netdissect
from netdissect.cli import main as cli_main
from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.errors import ConfigError
from netdissect.models import LoadedModel
from netdissect.report import json_for_script, region_masks, write_report
from netdissect.report.images import DIM, LABEL_RGB, REGION_RGB, StripSpec
from netdissect.stats import upsample

EVIL = "<script>alert(1)</script>"
SIZE = 32
N_IMAGES = 12


def concept_images(n: int = N_IMAGES, size: int = SIZE) -> ArrayConcepts:
    """Red squares (object named EVIL), a blue sky on the top half (object 'sky'),
    and a green tint on even images (scene 'even & odd-s', an image-level label)."""
    rng = np.random.default_rng(1)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, 2, size, size), dtype=np.int32)
    for i in range(n):
        s = int(rng.integers(6, size // 2))
        y, x = (int(v) for v in rng.integers(size // 2 - s // 2, size - s, size=2))
        sky = np.zeros((size, size), dtype=bool)
        sky[: size // 2] = True
        sky[y:y + s, x:x + s] = False
        images[i, ..., 2][sky] = 160
        labels[i, 1][sky] = 2
        if i % 2 == 0:
            images[i, ..., 1] = 90
        images[i, y:y + s, x:x + s] = (255, 0, 0)
        labels[i, 0, y:y + s, x:x + s] = 1
    table = ConceptTable(
        [Concept(1, EVIL, "object"), Concept(2, "sky", "object"), Concept(3, "even & odd-s", "scene")],
        ["object", "scene"],
    )
    return ArrayConcepts(images, labels, table, [[3] if i % 2 == 0 else [] for i in range(n)], name="evil")


class AddRamp(nn.Module):
    """Adds a tiny ramp over positions, so no two activations of a map tie."""

    def forward(self, f):
        ramp = torch.linspace(0, 1e-3, f.shape[-1] * f.shape[-2], device=f.device)
        return f + ramp.view(1, 1, f.shape[-2], f.shape[-1])


class ChannelUnits(nn.Module):
    """Units on a 16x16 grid (layer ``features``): red, blue, green channels and a constant."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            for u, ch in enumerate((0, 2, 1)):
                conv.weight[u, ch] = 1.0
            conv.bias[3] = 1.0
        self.features = nn.Sequential(conv, nn.AvgPool2d(2), AddRamp())

    def forward(self, x):
        return self.features(x).mean((2, 3))


def build_run(out: Path, ds: ArrayConcepts | None = None, **options) -> netdissect.Dissection:
    ds = ds if ds is not None else concept_images()
    model = LoadedModel(ChannelUnits().eval(), IDENTITY, "tests:ChannelUnits<b>")
    options.setdefault("quantile", 0.05)
    return netdissect.dissect(model, ds, layers=["features"], out=out, progress=False, num_workers=0, batch_size=6,
                              top_images=4, **options)


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    ds = concept_images()
    result = build_run(out, ds)
    index = write_report(out, dataset=ds)
    return result, ds, index


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.scripts: list[dict] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key])
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "script":
            self._in_script = {"attrs": a, "text": ""}
            self.scripts.append(self._in_script)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            self._in_script["text"] += data


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


# -- the folder ---------------------------------------------------------------------

def test_report_folder_is_self_contained_with_relative_links_that_resolve(evil_run):
    _, _, index = evil_run
    folder = index.parent
    assert index.name == "index.html" and folder.name == "report"
    pages = sorted(folder.glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "concepts.html", "layer-features.html"}
    for page in pages:
        links = parse(page)
        assert links.refs, page
        for ref in links.refs:
            assert not re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I), f"{page.name}: absolute link {ref!r}"
            assert not ref.startswith(("/", "\\")), f"{page.name}: rooted link {ref!r}"
            target, _, anchor = ref.partition("#")
            if target:
                assert (folder / target).is_file(), f"{page.name}: {ref!r} does not exist"
            if anchor:
                assert anchor in parse(folder / (target or page.name)).ids, f"{page.name}: anchor {ref!r} missing"
    css = (folder / "static" / "report.css").read_text()
    assert "url(" not in css and "@import" not in css
    js = (folder / "static" / "report.js").read_text()
    assert "http" not in js and "innerHTML" not in js
    # no stray temporary folders next to it
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".report")) == []


def test_every_string_from_data_is_escaped(evil_run):
    _, _, index = evil_run
    folder = index.parent
    for page in folder.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert EVIL not in html, page.name
        assert "<b>" not in html  # from the model spec
        for script in parse(page).scripts:
            assert script["attrs"].get("src") or script["attrs"].get("type") == "application/json"
    gallery = (folder / "layer-features.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in gallery
    assert "even &amp; odd-s" in gallery
    (data,) = [s for s in parse(folder / "layer-features.html").scripts if s["attrs"].get("id") == "nd-data"]
    assert "<" not in data["text"] and ">" not in data["text"] and "&" not in data["text"]
    items = json.loads(data["text"])["items"]
    assert EVIL in {i["label"] for i in items}
    concepts = (folder / "concepts.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in concepts
    assert "tests:ChannelUnits&lt;b&gt;" in index.read_text()


def test_json_for_script_round_trips_and_cannot_close_a_script():
    obj = {"a": "</script><!--", "b": "x & y > z", "c": "\u2028\u2029", "d": ["é", 1.5, None, True]}
    text = str(json_for_script(obj))
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == obj


def test_gallery_has_one_card_per_unit_sorted_by_iou(evil_run):
    result, _, index = evil_run
    html = (index.parent / "layer-features.html").read_text()
    cards = re.findall(r'<article class="card[^"]*" id="u(\d+)"', html)
    tally = result.tally("features")
    assert [int(c) for c in cards] == list(tally["unit"])  # tally order: by IoU, high to low
    labels = result.labels.set_index("unit")
    assert labels.loc[1, "label"] == EVIL and labels.loc[1, "detector"]
    assert labels.loc[2, "label"] == "sky" and labels.loc[3, "category"] == "scene"
    for unit in (1, 2, 3):
        assert f"{labels.loc[unit, 'iou']:.3f}" in html
    # both counting conventions are named and explained on the overview
    overview = index.read_text()
    assert "per-category" in overview and "top-label" in overview
    assert "CVPR 2017" in overview and "original report" in overview


def test_concept_index_links_every_detector_to_its_card(evil_run):
    result, _, index = evil_run
    html = (index.parent / "concepts.html").read_text()
    labels = result.labels
    for row in labels[labels["detector"]].itertuples():
        assert f'href="layer-features.html#u{row.unit}"' in html


# -- the strips ---------------------------------------------------------------------

def test_region_masks_are_the_regions_the_iou_tally_used(evil_run):
    result, _, _ = evil_run
    top = result.top_images("features")
    thr = result.thresholds("features")
    masks = region_masks(top["maps"], thr, (SIZE, SIZE)).numpy()
    ref = upsample(torch.from_numpy(top["maps"]).double(), (SIZE, SIZE)).numpy() > thr[:, None, None, None]
    # equal up to float32 rounding of the upsampled values exactly at the threshold
    assert (masks != ref).mean() < 1e-4
    # the red unit's region lies inside the red squares (label 1) on every top image
    ds = concept_images()
    for k, i in enumerate(top["indices"][0]):
        region = masks[0, k]
        assert region.any()
        square = ds.pixel_labels[i, 0] == 1
        assert (region & ~square).sum() <= 0.2 * region.sum()


def test_strips_show_region_bright_rest_dimmed_and_both_outlines(evil_run):
    result, ds, index = evil_run
    top = result.top_images("features")
    strip = index.parent / "strips" / "features" / "u0001.jpg"
    img = np.asarray(Image.open(strip).convert("RGB")).astype(int)
    spec = StripSpec()
    n = top["indices"].shape[1]
    assert img.shape[1::-1] == spec.mosaic_size(n, (SIZE, SIZE))
    th = spec.thumb
    first = img[:th, :th]
    # colours of both outlines are present
    def near(rgb, tol=60):
        return (np.abs(first - np.array(rgb)).sum(-1) < tol).sum()
    assert near(REGION_RGB) > 10
    assert near(LABEL_RGB) > 10
    # the sky (top-left corner, far from the red unit's region) is dimmed to about DIM
    original = np.asarray(Image.fromarray(ds.images[top["indices"][0, 0]]).resize((th, th)), dtype=float)
    corner = (slice(2, 10), slice(2, 10))
    assert abs(first[corner].mean() - DIM * original[corner].mean()) < 8
    assert first[corner].mean() < 0.5 * original[corner].mean()
    # a scene unit's images carry the scene as a whole: framed in the label colour
    scene_unit = int(result.labels.set_index("unit").query("category == 'scene'").index[0])
    framed = np.asarray(Image.open(strip.parent / f"u{scene_unit:04d}.jpg").convert("RGB")).astype(int)[:th, :th]
    assert np.abs(framed[0, th // 2] - np.array(LABEL_RGB)).sum() < 80


def test_in_memory_data_set_without_dataset_argument_reports_images_unavailable(evil_run, tmp_path):
    result, _, _ = evil_run
    index = write_report(result.run_dir, out=tmp_path / "r")
    html = index.read_text()
    assert "Images unavailable" in html and "could not be opened" in html
    assert not (tmp_path / "r" / "strips").exists()
    gallery = (tmp_path / "r" / "layer-features.html").read_text()
    assert "<img class=\"strip\"" not in gallery and gallery.count('<article class="card') == 4
    index = write_report(result.run_dir, out=tmp_path / "r2", images=False)
    assert "Images were turned off" in index.read_text()


def test_images_are_matched_by_image_id(tmp_path):
    ds = concept_images()
    build_run(tmp_path / "run", ds)
    ids = tmp_path / "run" / "images.csv"
    rows = list(csv.reader(ids.open()))
    with ids.open("w", newline="") as f:  # pretend the run saw other images
        w = csv.writer(f)
        w.writerow(rows[0])
        for index, image in rows[1:]:
            w.writerow([index, image + "-elsewhere"])
    html = write_report(tmp_path / "run", dataset=ds).read_text()
    assert "Images unavailable" in html and "image ids do not match" in html


# -- a run whose data set reopens from its spec ---------------------------------------------

def test_synthetic_run_reopens_its_data_set_and_replaces_an_old_report(tmp_path):
    model = LoadedModel(nn.Sequential(nn.Conv2d(3, 6, 5, stride=4), nn.ReLU()).eval(), IDENTITY, "tests:tiny")
    torch.manual_seed(0)
    run = tmp_path / "run"
    netdissect.dissect(model, "synthetic:n=16,size=48", layers=["0"], out=run, progress=False, num_workers=0,
                       top_images=3)
    stale = run / "report" / "stale.txt"
    stale.parent.mkdir()
    stale.write_text("old")
    code = cli_main(["report", str(run), "--no-progress", "--thumb", "48", "--columns", "3"])
    assert code == 0
    assert not stale.exists()
    strips = sorted((run / "report" / "strips" / "0").glob("u*.jpg"))
    assert len(strips) == 6
    with Image.open(strips[0]) as im:
        assert im.size == StripSpec(48, 3).mosaic_size(3, (48, 48))
    html = (run / "report" / "index.html").read_text()
    assert "Images unavailable" not in html and "synthetic:n=16,seed=0,size=48" in html


def test_cli_report_errors_on_an_incomplete_run(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "not a complete dissection run" in capsys.readouterr().err


def test_write_report_checks_its_options(evil_run):
    result, _, _ = evil_run
    with pytest.raises(ConfigError, match="thumb=4"):
        write_report(result.run_dir, thumb=4)
    with pytest.raises(ConfigError, match="columns=0"):
        write_report(result.run_dir, columns=0)


# -- plots and the notebook view ----------------------------------------------------------

def test_plots_from_python_and_files(evil_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result, _, index = evil_run
    ax = result.plot_categories("features")
    heights = [p.get_height() for p in ax.patches]
    uniq = result.summary["layers"]["features"]["unique_detectors"]
    expected = [uniq[c]["unique"][g] for c in ("per-category", "top-label") for g in result.concepts.categories]
    assert heights == expected
    assert isinstance(result.plot_categories(), matplotlib.axes.Axes)
    ax = result.plot_iou_distribution("features")
    assert sum(p.get_height() for p in ax.patches) == 4  # every unit in the histogram
    assert isinstance(result.plot_iou_distribution(), matplotlib.axes.Axes)
    ax = result.plot_layers(convention="top-label")
    assert sum(p.get_height() for p in ax.patches) == uniq["top-label"]["total_unique"]
    fig, axes = plt.subplots(1, 2)
    assert result.plot_categories("features", convention="top-label", ax=axes[1]) is axes[1]
    with pytest.raises(ConfigError, match="convention"):
        result.plot_categories("features", convention="both-ways")
    with pytest.raises(ConfigError, match="layer 'featurs'"):
        result.plot_iou_distribution("featurs")
    plt.close("all")
    plots = index.parent / "plots"
    for stem in ("layers-unique-detectors", "layers-iou", "features-categories", "features-iou"):
        with Image.open(plots / f"{stem}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300
        root = ET.parse(plots / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")


def test_repr_html_is_compact_and_escaped(evil_run):
    result, _, _ = evil_run
    html = result._repr_html_()
    assert "features" in html and "&lt;script&gt;" in html and EVIL not in html
    assert "<script" not in html and len(html) < 20_000
    assert "report/index.html" in html


def test_layer_slugs_are_safe_and_unique():
    from netdissect.report.html import slugify

    taken: set[str] = set()
    slugs = [slugify(n, taken) for n in ("blocks.2", "blocks/2", "blocks 2", "../x", "", "Blocks 2")]
    assert slugs[0] == "blocks.2"
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) and not s.startswith(".") for s in slugs)
    assert len({s.lower() for s in slugs}) == len(slugs)


def test_numeric_looking_concept_names_stay_as_written(tmp_path):
    ds = concept_images()
    table = ConceptTable([Concept(1, "007", "object"), Concept(2, "sky", "object"), Concept(3, "1e3", "scene")],
                         ["object", "scene"])
    ds = ArrayConcepts(ds.images, ds.pixel_labels, table, ds.image_labels, name="numbers")
    build_run(tmp_path / "run", ds)
    html = (write_report(tmp_path / "run", dataset=ds).parent / "layer-features.html").read_text()
    assert '<h3 class="label">007</h3>' in html and '<h3 class="label">1e3</h3>' in html


def test_word_labels_sit_beside_the_iou_labels_escaped_with_their_agreement(tmp_path):
    import pandas as pd

    from netdissect.results import write_labels

    out = tmp_path / "run"
    ds = concept_images()
    result = build_run(out, ds)
    iou = result.labels.set_index("unit")
    words = pd.DataFrame({"layer": "features", "unit": [1, 2, 3, 4], "label": [EVIL, "sky", "grass", "sky"],
                          "score": [0.9, 0.8, 0.7, 0.6], "concept": [EVIL, "sky", "grass", "sky"],
                          "label_2": ["red", "blue", "green", "white"], "score_2": [0.5, 0.4, 0.3, 0.2]})
    write_labels(out, "words-soft_wpmi", words)
    index = write_report(out, dataset=ds, images=False)
    gallery = (index.parent / "layer-features.html").read_text()
    assert EVIL not in gallery and "&lt;script&gt;alert(1)&lt;/script&gt;, red" in gallery
    assert re.search(r'class="words-method">words-soft_wpmi</span> sky, blue', gallery)
    (data,) = [s for s in parse(index.parent / "layer-features.html").scripts if s["attrs"].get("id") == "nd-data"]
    items = {i["unit"]: i for i in json.loads(data["text"])["items"]}
    assert items[2]["words"] == "sky blue"  # the gallery's search finds a unit by its words
    overview = index.read_text()
    assert "Words and IoU labels" in overview and "words-soft_wpmi" in overview
    detectors = iou[iou["detector"]]
    agree = {1: True, 2: True, 3: False, 4: False}  # unit 1: EVIL = EVIL, unit 2: sky = sky
    expected = np.mean([agree[u] for u in detectors.index])
    assert f"{100 * expected:.0f}%" in overview
    assert result.label_methods() == ["iou", "words-soft_wpmi"]
