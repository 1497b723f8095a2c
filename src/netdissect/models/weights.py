"""Loading checkpoints safely (``weights_only=True`` or safetensors) and hashing them."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
_PREFIXES = ("module.", "model.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a ``torch.save`` file.

    Checkpoints that wrap the state dict (``{"state_dict": ...}``) are
    unwrapped, and a common prefix such as ``module.`` is removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"weights file {str(path)!r} is not a readable safetensors file: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"weights file {str(path)!r} could not be loaded with weights_only=True ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); save a plain state dict or a .safetensors file"
            ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    metadata = getattr(state, "_metadata", None)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            if metadata is not None:
                metadata = _strip_metadata(metadata, prefix)
    if metadata is not None:
        # PyTorch's per-module format versions travel with the keys: they decide, for
        # instance, whether a BatchNorm may lack ``num_batches_tracked`` (saved before 0.4.1).
        state = OrderedDict(state)
        state._metadata = metadata  # type: ignore[attr-defined]
    return state


def _strip_metadata(metadata: dict, prefix: str) -> OrderedDict:
    """Metadata keys are module paths without the trailing dot ("module.layer1" for "module.layer1.")."""
    out: OrderedDict = OrderedDict()
    bare = prefix[:-1]
    for key, value in metadata.items():
        if key == bare:
            out[""] = value
        elif key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a checkpoint that does not fit says how.

    What fits is what ``model.load_state_dict(state, strict=True)`` accepts: PyTorch
    decides, so a module's own loading rules apply (a BatchNorm saved before PyTorch
    0.4.1 has no ``num_batches_tracked`` and gets it filled in). A checkpoint that does
    not fit raises :class:`ModelError` naming the file, the missing and unexpected keys
    and the shapes that differ, and leaves ``model`` as it was.
    """
    state = read_state_dict(path)
    before = _snapshot(model)
    problem = _try_load(model, state)
    if problem is None:
        return model
    _restore(model, before)
    raise ModelError(f"weights file {str(path)!r} does not fit the model: {problem}")


def _try_load(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Load by PyTorch's strict rules; ``None`` when it fits, else what is wrong."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        # Size mismatches (strict or not, PyTorch refuses them) or a tensor it could not
        # copy. Name the shapes, and load once more without them to learn the keys.
        own = model.state_dict()
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if not wrong:
            return "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip()) or str(exc)
        rest = OrderedDict((k, v) for k, v in state.items() if k not in wrong)
        meta = getattr(state, "_metadata", None)
        if meta is not None:
            rest._metadata = meta  # type: ignore[attr-defined]
        try:
            again = model.load_state_dict(rest, strict=False)
            missing = [k for k in again.missing_keys if k not in wrong]
            unexpected = list(again.unexpected_keys)
        except RuntimeError:
            missing, unexpected = [], []
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong]
        return _describe(missing, unexpected, shapes)
    if result.missing_keys or result.unexpected_keys:
        return _describe(list(result.missing_keys), list(result.unexpected_keys), [])
    return None


def _describe(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape (e.g. {'; '.join(wrong[:3])})")
    return "keys " + ", ".join(parts)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, to put back when a checkpoint does not fit."""
    from torch.nn.parameter import is_lazy

    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items() if not is_lazy(v)}


def _restore(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    current = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, saved in before.items():
            tensor = current.get(key)
            if tensor is not None and tensor.shape == saved.shape:
                tensor.copy_(saved)


def state_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
