"""`netdissect explain`: explain one prediction by the labelled units behind it (TPAMI 2018)."""

from __future__ import annotations

from pathlib import Path

from .dissect import MODELS_HELP


def add_parser(sub) -> None:
    """Register ``explain`` on the sub-command parser ``sub``."""
    p = sub.add_parser("explain", help="explain one prediction by the labelled units of a layer",
                       description="Split the class logit into unit contributions (exact for a global-average-pool "
                                   "+ linear head, else gradient x activation), show the top units with their "
                                   "dissection labels, IoU and regions next to the class activation map.")
    p.add_argument("--model", required=True, help=MODELS_HELP)
    p.add_argument("--weights", help="weights file to load into the model")
    p.add_argument("--layer", required=True, help="the layer (e.g. bn2 for efficientnet_lite0)")
    p.add_argument("--image", required=True, type=Path, help="the photo")
    p.add_argument("--run", type=Path, help="a dissection run directory of the layer (labels, IoU, thresholds)")
    p.add_argument("--class", dest="cls", help="class index or name to explain (default: the prediction)")
    p.add_argument("--classes", type=Path, help="class names file, one per line (default: ImageNet's for "
                                                "1000 outputs)")
    p.add_argument("--top", type=int, default=4, help="units to show (default 4)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/experiments/explain with --run, linked "
                                            "from the run's report; else explanation)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run_explain)


def class_names_for(k: int, path: Path | None) -> list[str]:
    """Class names from ``path`` (one per line), ImageNet's for 1000 outputs, else the indices."""
    from ..errors import ConfigError

    if path is not None:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--classes {path}: cannot read it ({exc.strerror or exc}); give a text file of "
                              "class names, one per line") from None
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) != k:
            raise ConfigError(f"--classes {path} lists {len(names)} names; the model has {k} outputs")
        return names
    if k == 1000:
        from ..imagetext.classifier import imagenet_classes

        return imagenet_classes()
    return [str(i) for i in range(k)]


def resolve_class(text: str | None, names: list[str]) -> int | None:
    """A class index from an index or a name (case-insensitive)."""
    from ..errors import ConfigError, close_matches

    if text is None:
        return None
    if text.isdigit():
        return int(text)
    lower = [n.lower() for n in names]
    if text.lower() in lower:
        return lower.index(text.lower())
    hint = close_matches(text, names)
    raise ConfigError(f"--class {text!r} is not a class of the model" + (f"; {hint}" if hint else ""))


def run_explain(args) -> int:
    """Run ``netdissect explain``."""
    import torch

    from ..experiments.explain import explain_file
    from ..models import load_model
    from ..results import DissectionData

    loaded = load_model(args.model, weights=args.weights)
    run = DissectionData.load(args.run) if args.run is not None else None
    with torch.no_grad():
        size = loaded.preprocess.crop_size
        k = loaded.module(torch.zeros(1, 3, size, size)).shape[-1]
    names = class_names_for(k, args.classes)
    e = explain_file(loaded, args.layer, args.image, run=run, class_index=resolve_class(args.cls, names),
                     class_names=names, top=args.top, device=args.device)
    from .experiment_ablation import default_out, link_page

    if args.out is None and args.run is not None:  # one page per photo in RUN/experiments/explain
        page = e.save(default_out(args, "explain"), stem=args.image.stem)
    else:
        page = e.save(args.out or Path("explanation"))
    print(f"{e.class_name} (class {e.class_index}): logit {e.logit:.3f} = bias {e.bias:.3f} + "
          f"{e.contributions.sum():.3f} from {len(e.contributions)} units ({e.method})")
    for _, r in e.units.iterrows():
        label = f"{r['label']} ({r['category']}, IoU {r['iou']:.3f})" if r["label"] else "-"
        print(f"  unit {r['unit']:>5}  {r['contribution']:+8.3f}  {label}")
    print(f"Wrote {page}")
    link_page(page, args.run)
    return 0
