"""Argument types and printing shared by the sub-commands."""

from __future__ import annotations

import argparse


def size_pair(text: str) -> tuple[int, int]:
    """'224' or '224x160' -> (H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be N or HxW, e.g. 224 or 224x160") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be N or HxW with positive integers")
    return values[0], values[1]


def print_table(frame, floatfmt: str = "{:.3f}") -> None:
    """Print a DataFrame left-aligned, floats with ``floatfmt``."""
    import pandas as pd

    if frame.empty:
        print("(no rows)")
        return
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    formatters = {c: (lambda w: (lambda v: f"{v:<{w}}"))(int(frame[c].astype(str).str.len().max() or 1))
                  for c in text_columns}
    print(frame.to_string(index=False, float_format=lambda v: floatfmt.format(v), formatters=formatters,
                          justify="left"))


def best_units_table(result, per_layer: int = 5):
    """The top units of each layer by IoU, for printing."""
    labels = result.labels
    rows = labels.sort_values(["layer", "iou"], ascending=[True, False]).groupby("layer", sort=False).head(per_layer)
    order = {name: i for i, name in enumerate(result.layers)}
    rows = rows.sort_values(["layer", "iou"], key=lambda s: s.map(order) if s.name == "layer" else -s)
    return rows[["layer", "unit", "category", "label", "iou"]]


def print_summary(result) -> None:
    """Detectors per layer and category, then the best units."""
    import pandas as pd

    rows = []
    for layer, info in result.summary["layers"].items():
        uniq = info["unique_detectors"]["per-category"]["unique"]
        row = {"layer": layer, "units": info["units"], "detectors": info["detectors"]}
        row.update({f"unique {c}": n for c, n in uniq.items()})
        rows.append(row)
    print(f"Detectors (IoU > {result.iou_threshold:g}); unique concepts per category, per-category convention:")
    print_table(pd.DataFrame(rows))
    print()
    print("Best units:")
    print_table(best_units_table(result))
    print()
    print(f"Results: {result.run_dir}  (tally.csv per layer under {result.run_dir / 'layers'}; summary.json)")
