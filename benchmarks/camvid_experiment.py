"""Road-scene object detectors in an ImageNet and a Places365 network, dissected on CamVid.

Steps (each timed; converted folders and finished runs are reused when run again):

1. convert all 701 CamVid images (train, val, test) to Broden format at 224
   (11 object classes + the 11 colours), and DTD10 (10 textures + colours);
   merge the two into one concept data set;
2. dissect EfficientNet-Lite0 (ImageNet, built in) and SqueezeNet-Places365
   (weights from ../shared/assets) on CamVid, at several layers;
3. print, per model and layer, the detectors (IoU > 0.04) and the road-scene
   objects among them with their best IoU, then a comparison at comparable
   depth (same fraction of the network's convolutional stages);
4. dissect the last layer of both on the merged CamVid + DTD + colour data set.

    python benchmarks/camvid_experiment.py [--assets DIR] [--work runs/camvid_experiment] [--workers 2] [--fresh]

Converted folders and finished dissections in the work folder are reused (a
step then takes well under a second); --fresh starts over.  A fresh run takes
about 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROAD_OBJECTS = ("sky", "road", "tree", "building", "car", "pavement", "pole", "sign_symbol", "fence",
                "pedestrian", "bicyclist")

# (model spec, weights file under assets or None, [(layer, relative depth label)])
# Relative depth: the position of the layer's stage among the network's convolutional stages.
#   EfficientNet-Lite0: stem, blocks.0..6, conv_head (9 stages); SqueezeNet: conv1, fire2..9, conv10 (10 stages).
MODELS = {
    "efficientnet_lite0 (ImageNet)": ("efficientnet_lite0", None, [
        ("blocks.2", "early (stage 4/9)"), ("blocks.3", "middle (5/9)"), ("blocks.4", "middle (6/9)"),
        ("blocks.5", "late (7/9)"), ("blocks.6", "late (8/9)"), ("bn2", "last (9/9)")]),
    "squeezenet_places365 (Places365)": ("squeezenet_places365", "weights/squeezenet_places365/"
                                                                 "squeezenet_places365.safetensors", [
        ("fire3", "early (stage 3/10)"), ("fire5", "middle (5/10)"), ("fire6", "middle (6/10)"),
        ("fire7", "late (7/10)"), ("fire8", "late (8/10)"), ("fire9", "last conv features (9/10)")]),
}
# Comparable depth pairs (ImageNet layer, Places365 layer).
PAIRS = [("blocks.3", "fire5", "middle"), ("blocks.5", "fire7", "late"), ("bn2", "fire9", "last")]


def timed(label: str, fn, timings: dict):
    t0 = time.perf_counter()
    out = fn()
    timings[label] = time.perf_counter() - t0
    print(f"[{timings[label]:7.1f} s] {label}", flush=True)
    return out


def convert(args, timings) -> tuple[Path, Path]:
    from netdissect.data import convert as cv
    from netdissect.data.broden import BrodenDataset

    data = args.assets / "data"
    camvid = args.work / "camvid_224"
    dtd = args.work / "dtd10_224"
    merged = args.work / "camvid_dtd_224"
    if not camvid.is_dir():
        timed("convert CamVid (701 images)", lambda: cv.convert_segmentation(
            data / "camvid", camvid, classes=data / "camvid" / "classes.txt", size=224, workers=args.workers,
            progress=False), timings)
    if not dtd.is_dir():
        timed("convert DTD10 (1200 images)", lambda: cv.convert_folders(
            data / "dtd10", dtd, category="texture", size=224, workers=args.workers, progress=False), timings)
    if not merged.is_dir():
        timed("merge CamVid + DTD10", lambda: cv.merge_broden([camvid, dtd], merged, progress=False), timings)
    ds = BrodenDataset(camvid)
    print(f"CamVid: {len(ds)} images, concepts: "
          + ", ".join(f"{c}: {sum(1 for k in ds.concepts if k.category == c)}" for c in ds.concepts.categories))
    return camvid, merged


def dissect_all(args, data: Path, tag: str, layers_of, timings, **options) -> dict:
    import netdissect

    results = {}
    for title, (spec, weights, layers) in MODELS.items():
        names = layers_of(layers)
        out = args.work / f"{tag}_{spec}"
        w = args.assets / weights if weights else None
        protocol = options.get("protocol", "netdissect")
        results[title] = timed(f"dissect {spec} on {data.name} ({', '.join(names)}; {protocol})",
                               functools.partial(netdissect.dissect, spec, data, layers=names, out=out, weights=w,
                                                 progress=False, batch_size=32, num_workers=args.workers,
                                                 **options), timings)
    return results


def print_detectors(results: dict, threshold: float) -> dict:
    """The per-layer object-detector table; returns {(model, layer): (units, object detectors, unique, objects)}."""
    print(f"{'model':34s} {'layer':10s} {'depth':26s} {'units':>5s} {'det.':>5s} {'obj.det':>7s} {'uniq':>4s}  "
          f"objects: units (best IoU)")
    summary = {}
    for title, result in results.items():
        depth_of = dict(MODELS[title][2])
        for layer in result.layers:
            info = result.summary["layers"][layer]
            per = info["unique_detectors"]["per-category"]
            objects = object_table(result, layer, threshold)
            summary[(title, layer)] = (info["units"], per["units"].get("object", 0), per["unique"].get("object", 0),
                                       objects)
            listed = ", ".join(f"{n}: {k} ({iou:.3f})" for n, k, iou in objects) or "-"
            print(f"{title:34s} {layer:10s} {depth_of[layer]:26s} {info['units']:5d} {info['detectors']:5d} "
                  f"{per['units'].get('object', 0):7d} {per['unique'].get('object', 0):4d}  {listed}")
    return summary


def print_pairs(summary: dict, results: dict) -> None:
    (imnet, places) = list(results)
    print(f"{'depth':8s} {'ImageNet layer':15s} {'obj.det/units':>14s} {'share':>6s} {'uniq':>5s}   "
          f"{'Places layer':13s} {'obj.det/units':>14s} {'share':>6s} {'uniq':>5s}")
    for a, b, depth in PAIRS:
        if (imnet, a) not in summary or (places, b) not in summary:
            continue
        ua, da, qa, _ = summary[(imnet, a)]
        ub, db, qb, _ = summary[(places, b)]
        print(f"{depth:8s} {a:15s} {f'{da}/{ua}':>14s} {da / ua:6.1%} {qa:5d}   {b:13s} {f'{db}/{ub}':>14s} "
              f"{db / ub:6.1%} {qb:5d}")


def print_ceilings(results: dict) -> None:
    """Per road-scene object: its pixel share, the IoU a typical unit's mask could reach at best, the best IoU found.

    A unit's IoU with concept c is at most min(A, G) / max(A, G), where A is the unit's mask area (over the
    images counted in the denominator) and G the concept's area: a mask of 0.5% of the pixels cannot reach
    IoU 0.04 with a class covering more than about 12% of them, however well it matches.
    """
    first = next(iter(results.values()))
    concepts = first.concepts
    truth = None
    rows = {}
    for title, result in results.items():
        for layer in result.layers:
            counts = np.load(result.run_dir / "layers" / layer / "counts.npz")
            truth = counts["truth"]
            g = list(concepts.categories).index("object")
            area = counts["denominator_pixels"][:, g]  # (units,) mask pixels in images with objects
            iou = result.iou(layer)
            for name in ROAD_OBJECTS:
                n = concepts.by_name(name).number
                ceiling = np.minimum(area, truth[n]) / np.maximum(np.maximum(area, truth[n]), 1)
                best = float(iou[name].max())
                entry = rows.setdefault(name, {"ceiling": [], "best": []})
                entry["ceiling"].append(float(np.median(ceiling)))
                entry["best"].append((best, title.split()[0], layer))
    total = float(sum(truth[c.number] for c in concepts if c.category == "object")) or 1.0
    print(f"{'object':12s} {'share of labels':>15s} {'ceiling (median unit)':>22s}   best IoU over all layers")
    for name, entry in rows.items():
        n = concepts.by_name(name).number
        best, model, layer = max(entry["best"])
        print(f"{name:12s} {truth[n] / total:15.1%} {np.median(entry['ceiling']):22.3f}   {best:.3f} "
              f"({model} {layer}){'  detector' if best > first.iou_threshold else ''}")


def object_table(result, layer: str, threshold: float) -> list[tuple[str, int, float]]:
    """(object, units detecting it, best IoU) for object detectors of a layer (per-category convention)."""
    t = result.tally(layer)
    hit = t[t["object-iou"] > threshold]
    rows = []
    for name, group in hit.groupby("object-label"):
        rows.append((name, len(group), float(group["object-iou"].max())))
    return sorted(rows, key=lambda r: -r[2])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "camvid_experiment")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="delete the work folder first (else finished steps are reused)")
    args = p.parse_args(argv)
    if not (args.assets / "data" / "camvid").is_dir():
        print(f"CamVid not found under {args.assets}/data; pass --assets DIR", file=sys.stderr)
        return 2
    if args.fresh and args.work.exists():
        import shutil

        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    camvid, merged = convert(args, timings)
    results = dissect_all(args, camvid, "camvid", lambda layers: [l for l, _ in layers], timings)
    threshold = next(iter(results.values())).iou_threshold

    print(f"\n== Object detectors on CamVid (IoU > {threshold:g}; a unit counts for its best object label) ==")
    summary = print_detectors(results, threshold)
    print("\n== Comparable depth: ImageNet (EfficientNet-Lite0) vs Places365 (SqueezeNet) ==")
    print_pairs(summary, results)
    print("\n== Road-scene objects: how large they are, the best IoU a 0.5% mask allows, the best IoU found ==")
    print_ceilings(results)

    print("\n== The same with the PNAS 2020 protocol (top 1% after upsampling, all-pixel denominator) ==")
    pair_layers = {a for a, _, _ in PAIRS} | {b for _, b, _ in PAIRS}
    pnas = dissect_all(args, camvid, "camvid_pnas", lambda layers: [l for l, _ in layers if l in pair_layers],
                       timings, protocol="pnas2020")
    # The PNAS protocol labels a unit with its best concept over all categories.
    pnas_summary = print_detectors(pnas, threshold)
    print()
    print_pairs(pnas_summary, pnas)
    print()
    print_ceilings(pnas)

    print("\n== Merged CamVid + DTD10 + colours, last layers (unique detectors per category, per-category) ==")
    merged_results = dissect_all(args, merged, "merged",
                                 lambda layers: [layers[-1][0]], timings)
    for title, result in merged_results.items():
        layer = result.layers[0]
        info = result.summary["layers"][layer]
        per = info["unique_detectors"]["per-category"]
        top = result.labels[result.labels["detector"]].sort_values("iou", ascending=False).head(6)
        best = ", ".join(f"u{u} {lab} ({c}) {iou:.3f}" for u, lab, c, iou in
                         zip(top["unit"], top["label"], top["category"], top["iou"]))
        print(f"{title:34s} {layer:6s} units {info['units']:4d} detectors {info['detectors']:4d}  unique: "
              + ", ".join(f"{c} {n}" for c, n in per["unique"].items()))
        print(f"{'':34s} best: {best}")

    import torch

    print(f"\n== Timings ({'GPU: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
          f"{torch.get_num_threads()} threads) ==")
    for label, seconds in timings.items():
        print(f"  {seconds:7.1f} s  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
