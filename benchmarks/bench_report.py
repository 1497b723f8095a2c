"""How heavy and how fast is the HTML report?  Build time, folder size, page load in Chromium.

Dissects one layer (default: ResNet-18 ``layer4``, 512 units, random weights)
on the synthetic data set with 10 top images per unit, writes the report, and
measures:

- the time to write the report, and the size of the report folder (total,
  strips, the layer's page);
- in headless Chromium (Debian's ``chromium``, driven by Playwright; each
  visit in a fresh browser context, so nothing is cached): the layer's
  gallery page from ``file://`` until its ``load`` event (the 2-second
  budget), the same for the overview page, and the time until *every* strip
  of the layer has loaded once lazy loading is switched off (the worst case:
  a reader who scrolls through the whole page at once);
- the cost of the alternatives to one pre-rendered JPEG mosaic per unit:
  ten separate thumbnail files per unit, and chroma-subsampled (4:2:0) JPEG
  (estimated by re-encoding a sample of the strips).

    python benchmarks/bench_report.py                          # ResNet-18 layer4 on synthetic:n=300
    python benchmarks/bench_report.py --run runs/r18 --keep    # reuse / keep the run directory
    python benchmarks/bench_report.py --model efficientnet_lite0 --layer bn2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dissect(args, run: Path) -> float:
    import torch

    import netdissect

    if (run / "summary.json").is_file():
        print(f"reusing the run in {run}")
        return 0.0
    torch.manual_seed(0)
    start = time.perf_counter()
    netdissect.dissect(args.model, f"synthetic:n={args.images}", layers=[args.layer], out=run, progress=False,
                       top_images=args.top_images, batch_size=32, num_workers=args.workers)
    return time.perf_counter() - start


def page_timings(url: str, chromium: str, repeat: int, all_images: bool) -> dict:
    from playwright.sync_api import sync_playwright

    loads, dcls, walls, everything = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeat):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                errors: list[str] = []
                # bind this page's list: an event firing late must not land in the next page's
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                start = time.perf_counter()
                page.goto(url, wait_until="load")
                walls.append(time.perf_counter() - start)
                nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                                    " return {load: n.loadEventEnd, dcl: n.domContentLoadedEventEnd}; }")
                loads.append(nav["load"] / 1000)
                dcls.append(nav["dcl"] / 1000)
                if all_images:
                    start = time.perf_counter()
                    page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
                    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)",
                                           timeout=120_000)
                    everything.append(time.perf_counter() - start + nav["load"] / 1000)
                    broken = page.evaluate("() => Array.from(document.images).filter(i => !(i.naturalWidth > 0))"
                                           ".length")
                    if broken:
                        errors.append(f"{broken} images did not load")
                if errors:
                    raise SystemExit(f"{url}: {errors[:5]}")
                context.close()
        finally:
            browser.close()
    out = {"load_s": statistics.median(loads), "dom_content_loaded_s": statistics.median(dcls),
           "goto_wall_s": statistics.median(walls), "load_s_all": [round(x, 3) for x in loads]}
    if everything:
        out["all_images_s"] = statistics.median(everything)
    return out


def alternatives(strips: list[Path], n: int, columns: int, thumb: int, quality: int, sample: int) -> dict:
    """Bytes per unit of the mosaic as written, and (re-encoded estimates) of the alternatives."""
    from PIL import Image

    from netdissect.report.images import GAP

    picked = strips[:: max(1, len(strips) // sample)][:sample]
    mosaic = tiles = sub420 = 0
    for path in picked:
        mosaic += path.stat().st_size
        with Image.open(path) as im:
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, optimize=True, subsampling="4:2:0")
        sub420 += buf.tell()
        tw = (im.width + GAP) // min(columns, n) - GAP
        for k in range(n):
            r, q = divmod(k, columns)
            tile = im.crop((q * (tw + GAP), r * (thumb + GAP), q * (tw + GAP) + tw, r * (thumb + GAP) + thumb))
            buf = io.BytesIO()
            tile.save(buf, "JPEG", quality=quality, optimize=True, subsampling="4:4:4")
            tiles += buf.tell()
    k = max(1, len(picked))
    return {"units_sampled": len(picked), "mosaic_bytes_per_unit": mosaic / k,
            "separate_thumbnails_bytes_per_unit": tiles / k, "separate_thumbnails_files_per_unit": n,
            "mosaic_420_bytes_per_unit": sub420 / k}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="torchvision:resnet18", help="model spec (random weights are fine)")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--images", type=int, default=300, help="synthetic images")
    p.add_argument("--top-images", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--run", type=Path, help="run directory (reused when complete; default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    p.add_argument("--thumb", type=int, default=96)
    p.add_argument("--columns", type=int, default=5)
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--repeat", type=int, default=5, help="page visits to take the median of")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    from netdissect.report import write_report
    from netdissect.report.html import slugify

    tmp = None
    run = args.run
    if run is None:
        tmp = tempfile.mkdtemp(prefix="bench-report-")
        run = Path(tmp) / "run"
    try:
        dissect_s = dissect(args, run)
        start = time.perf_counter()
        index = write_report(run, thumb=args.thumb, columns=args.columns, quality=args.quality)
        report_s = time.perf_counter() - start
        folder = index.parent
        layer_page = folder / f"layer-{slugify(args.layer, set())}.html"
        strips = sorted((folder / "strips").rglob("*.jpg"))
        import json as _json

        units = _json.loads((run / "summary.json").read_text())["layers"][args.layer]["units"]
        figures = {
            "model": args.model, "layer": args.layer, "units": units, "images": args.images,
            "top_images": args.top_images, "thumb": args.thumb, "columns": args.columns, "quality": args.quality,
            "dissect_s": round(dissect_s, 2), "write_report_s": round(report_s, 2),
            "report_bytes": folder_bytes(folder), "strips_bytes": sum(s.stat().st_size for s in strips),
            "strip_files": len(strips), "layer_page_bytes": layer_page.stat().st_size,
            "cpu_count": os.cpu_count(),
        }
        figures["gallery"] = page_timings(layer_page.as_uri(), args.chromium, args.repeat, all_images=True)
        figures["overview"] = page_timings(index.as_uri(), args.chromium, args.repeat, all_images=False)
        figures["alternatives"] = alternatives(strips, args.top_images, args.columns, args.thumb, args.quality, 64)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"run kept in {run}")

    mb = 1024 * 1024
    g, o, alt = figures["gallery"], figures["overview"], figures["alternatives"]
    print(f"{args.model} {args.layer}: {units} units x {args.top_images} top images, synthetic:n={args.images}, "
          f"thumbnails {args.thumb} px, {args.columns} per row, JPEG quality {args.quality}")
    if dissect_s:
        print(f"  dissection                 {dissect_s:8.1f} s")
    print(f"  write_report               {report_s:8.1f} s")
    print(f"  report folder              {figures['report_bytes'] / mb:8.2f} MB  (budget 20 MB)")
    print(f"    strips ({len(strips)} files)       {figures['strips_bytes'] / mb:8.2f} MB")
    print(f"    layer page (HTML)        {figures['layer_page_bytes'] / 1024:8.0f} KB")
    print(f"  gallery page, load event   {g['load_s']:8.3f} s  (median of {args.repeat}; budget 2 s) "
          f"DOMContentLoaded {g['dom_content_loaded_s']:.3f} s")
    print(f"  gallery, every strip loaded {g['all_images_s']:7.3f} s  (lazy loading switched off)")
    print(f"  overview page, load event  {o['load_s']:8.3f} s")
    print(f"  per unit: mosaic {alt['mosaic_bytes_per_unit'] / 1024:.1f} KB in 1 file; as {args.top_images} "
          f"separate thumbnails ~{alt['separate_thumbnails_bytes_per_unit'] / 1024:.1f} KB in "
          f"{args.top_images} files; mosaic with 4:2:0 chroma ~{alt['mosaic_420_bytes_per_unit'] / 1024:.1f} KB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
