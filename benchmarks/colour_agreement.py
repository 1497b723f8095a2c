"""How often does netdissect's colour namer agree with the lookup table Broden used?

Broden's colour labels came from the van de Weijer et al. (2009) colour-naming
model, shipped with the original tools as a 32x32x32 table ``w2color.npy``
(RGB // 8 -> one of the 11 basic colour terms).  That table is in
``../shared/assets/reference/netdissect`` for comparison only; netdissect
never ships or reads it.  This script names every pixel of the real photos in
``../shared/assets/data`` (ImageNet samples, CamVid, DTD, ADE20K samples, the
landscape photo) with :func:`netdissect.data.colornames.color_map`, the way
the converters do (whole image resized to 224x224, bicubic, then area-averaged
to the 112x112 label grid), looks up the reference name of the same pixels,
and prints the share of pixels where the two agree, per source and overall,
the share of the table's own cells (RGB grid) where they agree, and the
confusion between names.

    python benchmarks/colour_agreement.py [--assets DIR] [--size 224] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from netdissect.data.colornames import COLOR_NAMES, color_map, name_colors

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "imagenet-samples": "imagenet-samples/*.jpg",
    "camvid": "camvid/*/images/*.jpg",
    "dtd10": "dtd10/*/*.jpg",
    "ade20k-samples": "ade20k-samples/**/*.jpg",
    "photos": "photos/*.jpg",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    p.add_argument("--size", type=int, default=224, help="image side; colours are named at half of it")
    p.add_argument("--limit", type=int, default=0, help="at most this many images per source (0: all)")
    args = p.parse_args(argv)
    table_path = args.assets / "reference" / "netdissect" / "w2color.npy"
    if not table_path.is_file():
        print(f"reference table {table_path} not found; pass --assets DIR", file=sys.stderr)
        return 2
    table = np.load(table_path)
    label = args.size // 2
    confusion = np.zeros((11, 11), dtype=np.int64)
    rows = []
    t0 = time.perf_counter()
    for source, pattern in SOURCES.items():
        files = sorted((args.assets / "data").glob(pattern))
        if args.limit:
            files = files[: args.limit]
        agree = total = 0
        for f in files:
            with Image.open(f) as im:
                image = np.asarray(im.convert("RGB").resize((args.size, args.size), Image.Resampling.BICUBIC))
            small = np.asarray(Image.fromarray(image).resize((label, label), Image.Resampling.BOX))
            ours = color_map(image, (label, label)).ravel()
            ref = table[small[..., 0] // 8, small[..., 1] // 8, small[..., 2] // 8].ravel()
            np.add.at(confusion, (ref, ours), 1)
            agree += int((ours == ref).sum())
            total += ours.size
        rows.append((source, len(files), total, agree / max(total, 1)))
    elapsed = time.perf_counter() - t0
    print(f"{'source':18s} {'images':>7s} {'pixels':>11s} {'agreement':>10s}")
    for source, n, total, share in rows:
        print(f"{source:18s} {n:7d} {total:11d} {100 * share:9.2f}%")
    overall = np.trace(confusion) / confusion.sum()
    print(f"{'all':18s} {sum(r[1] for r in rows):7d} {confusion.sum():11d} {100 * overall:9.2f}%")
    centres = (np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1) * 8 + 4).astype(np.uint8)
    grid = float((name_colors(centres) == table).mean())
    print(f"\nthe reference table's 32x32x32 RGB grid (cell centres): {100 * grid:.2f}% of cells agree")
    print()
    print("confusion, % of all pixels (rows: reference table, columns: netdissect)")
    print(" " * 8 + "".join(f"{n[:6]:>7s}" for n in COLOR_NAMES))
    for i, n in enumerate(COLOR_NAMES):
        print(f"{n:8s}" + "".join(f"{100 * confusion[i, j] / confusion.sum():7.2f}" for j in range(11)))
    print(f"\n{elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
