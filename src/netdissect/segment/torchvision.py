"""torchvision's semantic segmentation models as segmenters (spec ``torchvision:NAME[:WEIGHTS]``).

Models: ``deeplabv3_resnet50``, ``deeplabv3_resnet101``,
``deeplabv3_mobilenet_v3_large``, ``fcn_resnet50``, ``fcn_resnet101``,
``lraspp_mobilenet_v3_large`` (whatever
``torchvision.models.list_models(module=torchvision.models.segmentation)``
lists).  Their 21 classes are Pascal VOC's: ``__background__`` is no label
(0), the other 20 (``aeroplane`` ... ``tvmonitor``) are concepts 1..20 in
category ``object``.

Weights:

- none: random initialisation drawn from a fixed seed (the same network in
  every process, nothing downloaded), for tests and baselines;
- ``WEIGHTS``: a torchvision weights enum name or ``DEFAULT``
  (``COCO_WITH_VOC_LABELS_V1``), downloaded by torchvision into its cache;
- ``weights=FILE``: a state dict or safetensors file, loaded strictly
  (with ``WEIGHTS`` as well, the enum gives the class names and
  normalisation and nothing is downloaded: the way to use a file fetched
  elsewhere).

Images are normalised with the weights' mean and std (ImageNet's) on [0, 1]
values at their own size; the logits (N, 21, H, W) are resized bilinearly to
the label grid (a quarter of the image size by default: 56x56 for 224) and
the class of largest logit labels each pixel (see
:class:`~netdissect.segment.module.ModuleSegmenter`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, ModelError, close_matches
from ..models import Preprocess, load_weights, read_state_dict
from .module import ModuleSegmenter
from .registry import check_options, parse_size, register_segmenter

#: the Pascal VOC classes of torchvision's segmentation weights, in logit order
VOC_CLASSES = (
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# keys holding the last classifier layer, (num_classes, ...) shaped
_CLASSIFIER_KEYS = ("classifier.4.weight", "classifier.high_classifier.weight")


def segmentation_models() -> list[str]:
    """The names of torchvision's semantic segmentation models.

    Returns
    -------
    list of str
        Sorted, e.g. ``["deeplabv3_mobilenet_v3_large", ...]``.
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def torchvision_segmenter(
    name: str,
    weights_name: str | None = None,
    *,
    weights: "str | Path | None" = None,
    size: "int | str | tuple[int, int] | None" = None,
) -> ModuleSegmenter:
    """A torchvision semantic segmentation model as a segmenter.

    Parameters
    ----------
    name : str
        A model name, e.g. ``"deeplabv3_resnet50"`` (see
        :func:`segmentation_models`).
    weights_name : str, optional
        A weights enum name of the model or ``"DEFAULT"``; downloaded by
        torchvision unless ``weights`` gives the file.  None: random weights
        (fixed seed) or ``weights``.
    weights : str or Path, optional
        A state dict or safetensors file for the model, loaded strictly.
        Checkpoints with an auxiliary classifier (``aux_classifier.*``, as
        torchvision's own files have) are accepted.
    size : int, str or (int, int), optional
        A fixed label size; by default (H // 4, W // 4).

    Returns
    -------
    ModuleSegmenter
        In eval mode on the CPU; ``spec()`` gives
        ``torchvision:NAME[:WEIGHTS][?weights=FILE][&size=HxW]``.

    Raises
    ------
    ConfigError
        For an unknown model or weights name (naming the allowed ones and
        close matches) or a malformed ``size``.
    ModelError
        For a failed download (suggesting ``--weights FILE``), or a weights
        file that does not fit or has a number of classes other than the
        names it is given.
    """
    import torchvision

    names = segmentation_models()
    if name not in names:
        hint = close_matches(name, names)
        raise ConfigError(
            f"torchvision has no segmentation model {name!r}; choose one of {', '.join(names)}"
            + (f"; {hint}" if hint else "")
        )
    enum_weights = None
    if weights_name:
        enum = torchvision.models.get_model_weights(name)
        try:
            enum_weights = enum.DEFAULT if weights_name == "DEFAULT" else enum[weights_name]
        except KeyError:
            allowed = ["DEFAULT"] + [w.name for w in enum]
            hint = close_matches(weights_name, allowed)
            raise ConfigError(
                f"torchvision model {name!r} has no weights {weights_name!r}; choose one of {', '.join(allowed)}"
                + (f"; {hint}" if hint else "")
            ) from None
    class_names = list(enum_weights.meta["categories"]) if enum_weights is not None else list(VOC_CLASSES)
    preprocess = Preprocess()
    if enum_weights is not None:
        t = enum_weights.transforms()
        preprocess = Preprocess(mean=tuple(t.mean), std=tuple(t.std))

    kwargs: dict = {"weights": None, "weights_backbone": None, "num_classes": len(class_names)}
    if weights is not None:
        state = read_state_dict(weights)
        num_classes = next((state[k].shape[0] for k in _CLASSIFIER_KEYS if k in state), len(class_names))
        if num_classes != len(class_names):
            raise ModelError(
                f"weights file {str(weights)!r} has {num_classes} classes, but torchvision:{name} names "
                f"{len(class_names)} ({', '.join(class_names[:3])}, ...); for other classes write a factory with "
                "concept_names and use the spec module:package.module:factory"
            )
        if any(k.startswith("aux_classifier.") for k in state) and name.startswith(("deeplabv3", "fcn")):
            kwargs["aux_loss"] = True
        del state
    elif enum_weights is not None:
        kwargs = {"weights": enum_weights, "weights_backbone": None}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            module = torchvision.models.get_model(name, **kwargs)
        except OSError as exc:  # download failures surface as URLError (an OSError)
            raise ModelError(
                f"could not download torchvision weights {enum_weights.name if enum_weights else weights_name!r} "
                f"for {name!r} from {getattr(enum_weights, 'url', '?')} ({exc}); download the file elsewhere and "
                f"pass it with --weights FILE (spec torchvision:{name}:{weights_name} with weights=FILE)"
            ) from None
    spec = f"torchvision:{name}" + (f":{weights_name}" if weights_name else "")
    options = []
    if weights is not None:
        load_weights(module, weights)
        options.append(f"weights={Path(weights).expanduser().resolve()}")
    size = None if size is None else parse_size(size, f"segmenter {spec!r}")
    if size is not None:
        options.append(f"size={size[0]}x{size[1]}")
    if options:
        spec += "?" + "&".join(options)
    return ModuleSegmenter(module.eval(), class_names, preprocess=preprocess, size=size, spec=spec)


@register_segmenter("torchvision", arg="NAME[:WEIGHTS]")
def _torchvision(arg: str, options: dict[str, str], *, dataset=None, weights=None,
                 spec: str = "torchvision") -> ModuleSegmenter:
    name, _, weights_name = arg.partition(":")
    if not name:
        raise ConfigError(
            f"segmenter spec {spec!r} must look like torchvision:NAME[:WEIGHTS], "
            "e.g. torchvision:deeplabv3_resnet50:DEFAULT"
        )
    check_options(spec, options, ["size", "weights"])
    if "weights" in options and weights is not None:
        raise ConfigError(f"segmenter spec {spec!r}: weights given twice (in the spec and as weights={str(weights)!r})")
    size = parse_size(options["size"], f"segmenter spec {spec!r}") if "size" in options else None
    return torchvision_segmenter(name, weights_name or None, weights=weights or options.get("weights"), size=size)


__all__ = ["VOC_CLASSES", "segmentation_models", "torchvision_segmenter"]
