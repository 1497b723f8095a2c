"""Loading checkpoints safely (``weights_only=True`` or safetensors) and hashing them."""

from __future__ import annotations

import hashlib
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
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a checkpoint that does not fit says how."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise ModelError(f"weights file {str(path)!r} does not fit the model: keys " + ", ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


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
