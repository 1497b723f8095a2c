"""The report in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Set-up: ``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system browser is used).  Skipped, saying why,
only when one of the two is missing.  Set NETDISSECT_SCREENSHOTS=DIR to keep
the screenshots.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_report import EVIL, build_run, concept_images

from netdissect.report import write_report

CHROMIUM = os.environ.get("NETDISSECT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                                                             "(pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium browser at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "run"
    ds = concept_images()
    result = build_run(out, ds)
    return result, write_report(out, dataset=ds)


class Page:
    """A page with every console message, page error and dialog recorded."""

    def __init__(self, browser, url: str, width: int = 1280):
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.failed: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.goto(url, wait_until="load")

    def load_all_images(self) -> list[dict]:
        """Turns lazy images eager, waits for all, and returns those that did not load."""
        self.page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        self.page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete)", timeout=15_000)
        return self.page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.naturalWidth > 0))"
            ".map(i => ({src: i.getAttribute('src'), w: i.naturalWidth}))")

    def visible_cards(self) -> list[str]:
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('#nd-grid > [id]')).filter(e => !e.hidden"
            " && e.offsetParent !== null).map(e => e.id)")

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert [m for m in self.console if m.startswith(("error", "warning"))] == []
        assert self.failed == []
        assert self.dialogs == []


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000
    keep = os.environ.get("NETDISSECT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / name)
    return path


def test_gallery_loads_filters_searches_and_shows_the_escaped_name(browser, report, tmp_path):
    result, index = report
    p = Page(browser, (index.parent / "layer-features.html").as_uri())
    page = p.page
    assert p.load_all_images() == []
    n_img = page.evaluate("() => document.images.length")
    assert n_img == 4  # one strip per unit
    units = [f"u{u}" for u in result.tally("features")["unit"]]
    assert p.visible_cards() == units

    # the concept named like a script shows as text, and ran nothing
    label = page.locator("#u1 .label")
    assert label.inner_text() == EVIL
    assert page.evaluate("() => document.querySelectorAll('script').length") == 2  # the data block and report.js

    # category filter
    labels = result.labels.set_index("unit")
    scene = [f"u{u}" for u in labels.index if labels.loc[u, "category"] == "scene"]
    assert 0 < len(scene) < len(units)
    page.click(".chip[data-cat='scene']")
    assert sorted(p.visible_cards()) == sorted(scene)
    assert "Showing %d of 4 units" % len(scene) in page.inner_text("#nd-count")
    page.click(".chip[data-cat='']")
    assert p.visible_cards() == units

    # search by concept name (the literal text of the escaped name, too)
    page.fill("#nd-search", "sky")
    assert p.visible_cards() == ["u2"]
    page.fill("#nd-search", "<script>")
    assert p.visible_cards() == ["u1"]
    page.fill("#nd-search", "#3")
    assert p.visible_cards() == ["u3"]
    page.fill("#nd-search", "no such concept")
    assert p.visible_cards() == []
    assert page.is_visible("#nd-empty")
    page.click("#nd-reset")
    assert p.visible_cards() == units

    # sort by unit number, and back
    page.select_option("#nd-sort", "unit")
    assert p.visible_cards() == ["u1", "u2", "u3", "u4"]
    page.select_option("#nd-sort", "score")
    assert p.visible_cards() == units

    # detectors only: with a cut-off above some units, fewer cards
    page.check("#nd-detectors")
    detectors = [f"u{u}" for u in result.tally("features")["unit"]
                 if labels.loc[u, "iou"] > result.iou_threshold]
    assert p.visible_cards() == detectors
    page.uncheck("#nd-detectors")

    page.fill("#nd-search", "script")
    shot = screenshot(page, tmp_path, "report-gallery.png")
    assert shot.is_file()
    p.check_clean()
    page.close()


def test_overview_and_concept_index_load_cleanly(browser, report, tmp_path):
    result, index = report
    p = Page(browser, index.as_uri())
    assert p.load_all_images() == []
    assert p.page.evaluate("() => document.images.length") >= 4 + 2  # plots, best-unit strips
    assert "Images unavailable" not in p.page.inner_text("body")
    assert p.page.inner_text("h1") == "tests:ChannelUnits<b>"
    screenshot(p.page, tmp_path, "report-overview.png")
    p.check_clean()
    p.page.close()

    p = Page(browser, (index.parent / "concepts.html").as_uri())
    rows = p.page.evaluate("() => Array.from(document.querySelectorAll('#nd-grid tbody tr')).map(r => r.id)")
    assert len(rows) == result.labels.query("detector")["label"].nunique()
    assert p.page.locator("#c1 .concept-name").inner_text() == EVIL
    p.page.click(".chip[data-cat='scene']")
    visible = p.page.evaluate("() => Array.from(document.querySelectorAll('#nd-grid tbody tr'))"
                              ".filter(r => !r.hidden).map(r => r.id)")
    assert visible == ["c3"]
    # a unit link goes to its card in the gallery
    p.page.click(".chip[data-cat='']")
    p.page.click("#c1 a.unit-chip")
    p.page.wait_for_load_state("load")
    assert p.page.url.endswith("layer-features.html#u1")
    p.check_clean()
    p.page.close()


def test_report_without_images_loads_cleanly_and_says_so(browser, report, tmp_path):
    result, _ = report
    index = write_report(result.run_dir, out=tmp_path / "noimages")
    p = Page(browser, (index.parent / "layer-features.html").as_uri(), width=420)
    assert p.load_all_images() == []
    assert "Images unavailable" in p.page.inner_text(".notice")
    assert len(p.visible_cards()) == 4
    screenshot(p.page, tmp_path, "report-narrow-no-images.png")
    p.check_clean()
    p.page.close()
