"""A compact classification trainer on folder data (a folder per class), resumable epoch by epoch.

DISCOVER (Panousis et al., NeurIPS 2023, section 4; METHODS D) trains its
LWTA ResNets with SGD (lr 0.1, momentum 0.9, wd 1e-4, step schedule) and
its DeiTs with AdamW and a cosine schedule; :class:`TrainConfig` covers both
recipes at small scale.  Every epoch ends with a checkpoint
(``OUT/checkpoint.pt``: model, optimizer, epoch, history; written atomically);
calling :func:`train` again with the same configuration resumes after the
last finished epoch and gives the same weights as an uninterrupted run
(each epoch's randomness -- shuffling, augmentation, Gumbel noise -- comes
from generators seeded by (seed, epoch), inside ``torch.random.fork_rng``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.imageio import read_rgb
from ..data.images import IMAGE_SUFFIXES
from ..errors import ConfigError, DatasetError
from ..models import Preprocess
from .layer import kl_loss, sample_ids

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTATIONS = ("none", "flip", "crop-flip")


@dataclass(frozen=True)
class TrainConfig:
    """Every training option (frozen; its JSON must match to resume a run).

    Attributes
    ----------
    epochs : int
        Passes over the training images.
    batch_size : int
        Images per step.
    optimizer : str
        "sgd" (momentum, nesterov off) or "adamw".
    lr, momentum, weight_decay : float
        Optimizer settings (momentum for SGD only).
    schedule : str
        "cosine" (to ``min_lr``), "step" (x ``gamma`` every ``step_size``
        epochs) or "constant"; set per epoch, after ``warmup_epochs`` of
        linear warm-up.
    size : int
        Side of the square training and evaluation images.
    augment : str
        "none", "flip" (horizontal) or "crop-flip" (random resized crop,
        scale 0.35-1, and flip).
    label_smoothing : float
        Cross-entropy label smoothing.
    kl_weight : float
        Weight of the LWTA KL term to the uniform prior (0: off, as DISCOVER).
    amp : bool
        bfloat16 autocast on CUDA (ignored on the CPU).
    val_fraction : float
        Share of each class held out when the folder has no ``train``/``val``
        subfolders (chosen by a hash of the file path, stable).
    seed : int
        Seeds every random choice.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr: float = 0.0
    size: int = 224
    augment: str = "crop-flip"
    label_smoothing: float = 0.0
    kl_weight: float = 0.0
    amp: bool = True
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"training {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "size", "step_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training {name} must be at least 1, got {getattr(self, name)!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based)."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        e, span = epoch - self.warmup_epochs, max(1, self.epochs - self.warmup_epochs)
        if self.schedule == "cosine":
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * e / span))
        if self.schedule == "step":
            return self.lr * self.gamma ** (e // self.step_size)
        return self.lr

    def to_json(self) -> dict:
        """The options as a dict."""
        return asdict(self)


class FolderClassification(torch.utils.data.Dataset):
    """Images in a folder per class; one split of them.

    Parameters
    ----------
    root : str or Path
        Either ``root/CLASS/*.jpg`` (split by ``val_fraction``) or
        ``root/train/CLASS/...`` and ``root/val/CLASS/...``.
    split : str
        "train" or "val".
    size : int
        Output side (whole images resized; random crops with ``augment``).
    preprocess : Preprocess
        The model's normalisation (mean, std, channel order).
    augment : str
        "none", "flip" or "crop-flip".
    val_fraction : float
        Held-out share per class (single-folder layout).

    Raises
    ------
    DatasetError
        When the folder is missing, has fewer than 2 class folders, or the
        split is empty.

    Notes
    -----
    Items are ``(image (3, size, size) float32, class index, item index)``.
    """

    def __init__(self, root: str | Path, split: str, *, size: int, preprocess: Preprocess,
                 augment: str = "none", val_fraction: float = 0.2):
        root = Path(root).expanduser()
        if split not in ("train", "val"):
            raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
        if not root.is_dir():
            raise DatasetError(f"training data folder {str(root)!r} does not exist")
        split_dirs = (root / "train").is_dir() and (root / "val").is_dir()
        base = root / split if split_dirs else root
        self.classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(self.classes) < 2:
            raise DatasetError(f"training data folder {str(base)!r} needs a folder per class (2 or more), "
                               f"found {self.classes}")
        self.items: list[tuple[Path, int]] = []
        for k, name in enumerate(self.classes):
            for path in sorted(p for p in (base / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                if not split_dirs:
                    rel = path.relative_to(root).as_posix().encode()
                    held_out = int.from_bytes(hashlib.sha256(rel).digest()[:8], "little") / 2**64 < val_fraction
                    if held_out != (split == "val"):
                        continue
                self.items.append((path, k))
        if not self.items:
            raise DatasetError(f"training data folder {str(root)!r} has no {split} images")
        self.size, self.augment = int(size), augment
        self.mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocess.std).view(3, 1, 1)
        self.bgr = preprocess.channel_order == "BGR"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        """(image (3, size, size) float32 normalised, class index, ``index``)."""
        from torchvision.transforms import v2

        path, label = self.items[index]
        x = torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1)
        if self.augment == "crop-flip":
            x = v2.RandomResizedCrop(self.size, scale=(0.35, 1.0), antialias=True)(x)
        else:
            x = v2.functional.resize(x, [self.size, self.size], antialias=True)
        if self.augment in ("flip", "crop-flip") and torch.rand(()) < 0.5:
            x = x.flip(-1)
        x = (x.float() / 255.0 - self.mean) / self.std
        return (x.flip(0) if self.bgr else x), label, index


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    history : list of dict
        Per epoch: epoch, lr, train_loss, train_acc, val_loss, val_acc, seconds.
    classes : list of str
        Class names in output order.
    weights : Path
        The final weights (``OUT/model.safetensors``).
    resumed_from : int
        Epochs found done in the checkpoint at the start (0: a fresh run).
    """

    history: list[dict] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    weights: Path | None = None
    resumed_from: int = 0

    @property
    def val_acc(self) -> float:
        """Top-1 validation accuracy after the last epoch."""
        return self.history[-1]["val_acc"] if self.history else float("nan")


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _loader(ds, batch_size: int, *, shuffle: bool, seed: int, num_workers: int):
    """Training (``shuffle``) drops a last partial batch when there is a full one (BatchNorm needs 2 or more)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       num_workers=num_workers, drop_last=shuffle and len(ds) > batch_size)


def evaluate(model: nn.Module, data: FolderClassification, *, batch_size: int = 64, device=None,
             num_workers: int = 0, amp: bool = True) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data``, in eval mode.

    Sampling LWTA layers draw per-image noise seeded by the item index
    (:func:`~netdissect.lwta.layer.sample_ids`), so the result does not
    depend on batching.

    Returns
    -------
    dict
        ``{"acc": float, "loss": float, "n": int}``.
    """
    device = _device(device)
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y, idx in _loader(data, batch_size, shuffle=False, seed=0, num_workers=num_workers):
            x, y = x.to(device), y.to(device)
            with sample_ids(model, idx), torch.autocast(device.type, torch.bfloat16,
                                                         enabled=amp and device.type == "cuda"):
                out = model(x).float()
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return {"acc": correct / n, "loss": loss / n, "n": n}


def _optimizer(model: nn.Module, c: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)


def train(model: nn.Module, data: str | Path, out: str | Path, *, config: TrainConfig | None = None,
          preprocess: Preprocess | None = None, device=None, num_workers: int = 0, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` (in place) to classify the images of ``data``; resume from ``out`` when it holds a checkpoint.

    Parameters
    ----------
    model : torch.nn.Module
        Its output size must equal the number of class folders.
    data : str or Path
        Folder data (see :class:`FolderClassification`).
    out : str or Path
        Run folder: ``checkpoint.pt`` (every epoch), ``history.json``,
        ``model.safetensors`` (at the end), ``classes.txt``.
    config : TrainConfig, optional
        Options (defaults: :class:`TrainConfig`).
    preprocess : Preprocess, optional
        The model's normalisation (default ImageNet).
    device : str or torch.device, optional
        Default: CUDA when available.
    num_workers : int
        Data loading processes.
    progress : bool
        Log one line per epoch.
    on_epoch : callable, optional
        Called with each epoch's record after its checkpoint is written (an
        exception there stops training; calling again resumes).

    Returns
    -------
    TrainResult
        History, class names, weights file.

    Raises
    ------
    ConfigError
        When ``out`` holds a checkpoint of another configuration or class
        list, or the model's output size does not match the classes.
    DatasetError
        For unusable folder data.
    """
    c = config or TrainConfig()
    preprocess = preprocess or Preprocess()
    device = _device(device)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    train_ds = FolderClassification(data, "train", size=c.size, preprocess=preprocess, augment=c.augment,
                                    val_fraction=c.val_fraction)
    val_ds = FolderClassification(data, "val", size=c.size, preprocess=preprocess, val_fraction=c.val_fraction)
    if val_ds.classes != train_ds.classes:
        raise DatasetError(f"training data {str(data)!r}: train classes {train_ds.classes} differ from val "
                           f"classes {val_ds.classes}")
    model.to(device)
    with torch.no_grad():
        model.eval()
        outputs = model(val_ds[0][0][None].to(device)).shape[-1]
    if outputs != len(train_ds.classes):
        raise ConfigError(f"the model has {outputs} outputs but {str(data)!r} has {len(train_ds.classes)} "
                          "classes; replace its head (lwta: spec option classes=N)")
    opt = _optimizer(model, c)
    result = TrainResult(classes=train_ds.classes)
    ckpt_path = out / "checkpoint.pt"
    start = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["config"] != c.to_json() or state["classes"] != train_ds.classes:
            diff = [f.name for f in fields(c) if state["config"].get(f.name) != getattr(c, f.name)]
            raise ConfigError(f"{str(ckpt_path)!r} holds a run with other settings ({', '.join(diff) or 'classes'}"
                              "); use another output folder or delete it")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, result.history = int(state["epoch"]), list(state["history"])
        result.resumed_from = start
        log.info("resuming %s after epoch %d of %d", out, start, c.epochs)
    (out / "classes.txt").write_text("\n".join(train_ds.classes) + "\n")
    autocast = c.amp and device.type == "cuda"
    for epoch in range(start, c.epochs):
        t0 = time.time()
        lr = c.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        epoch_seed = c.seed * 1_000_003 + epoch
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(epoch_seed)
            model.train()
            loss_sum, correct, n = 0.0, 0, 0
            for x, y, _ in _loader(train_ds, c.batch_size, shuffle=True, seed=epoch_seed, num_workers=num_workers):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                    logits = model(x).float()
                    loss = nn.functional.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
                    if c.kl_weight:
                        loss = loss + c.kl_weight * kl_loss(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
            val = evaluate(model, val_ds, batch_size=c.batch_size, device=device, num_workers=num_workers, amp=c.amp)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n,
                  "val_loss": val["loss"], "val_acc": val["acc"], "seconds": round(time.time() - t0, 2)}
        result.history.append(record)
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                      "history": result.history, "config": c.to_json(), "classes": train_ds.classes}, ckpt_path)
        (out / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")
        if progress:
            log.warning("epoch %d/%d lr %.4g train loss %.3f acc %.3f | val loss %.3f acc %.3f (%.0f s)",
                        epoch + 1, c.epochs, lr, record["train_loss"], record["train_acc"], record["val_loss"],
                        record["val_acc"], record["seconds"])
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    result.weights = save_weights(model, out / "model.safetensors")
    return result


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model``'s state dict to ``path`` (``.safetensors`` or a ``torch.save`` file), atomically.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    os.replace(tmp, path)
    return path
