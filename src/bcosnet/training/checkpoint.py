"""Checkpoints: atomic writes, ``weights_only`` loading, compatibility checks,
RNG states, safetensors export and rebuilding a model from a checkpoint.

A training checkpoint is a plain dict of tensors and Python primitives::

    {"format": "bcosnet-checkpoint-1", "model": state_dict, "optimizer": ...,
     "scheduler": ..., "ema": state_dict | None, "scaler": ... | None,
     "rng": {...}, "epoch": int, "step": int, "step_in_epoch": int,
     "model_name": str, "model_options": dict, "num_classes": int,
     "classes": [str], "model_info": dict, "config": dict, "metrics": dict}

``model_info`` is the model record (:meth:`bcosnet.models.ModelInfo.to_dict`:
architecture and options, class names, input channels, image size and resize
rule, input encoding, data set); the exported ``.safetensors`` carries the same
keys in its metadata.  Checkpoints written before the record (bcosnet 0.1) lack
it and still load (:func:`bcosnet.models.registry.saved_record`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils.io import atomic_write
from .._utils.io import atomic_write_text as _atomic_write_text

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "check_compatible",
    "load_model_state",
    "get_rng_state",
    "set_rng_state",
    "export_safetensors",
    "load_checkpoint_model",
]

CHECKPOINT_FORMAT = "bcosnet-checkpoint-1"


def atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :mod:`bcosnet._utils.io`)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _atomic_write_text(path, text)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (data only, no code)."""
    from ..models.weights import read_checkpoint_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found")
    return dict(read_checkpoint_file(p, map_location))


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint"
                     ) -> None:
    """Raise ``ValueError`` listing missing/unexpected keys and shape mismatches."""
    from ..models.weights import check_fits

    check_fits(model, state, what)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint"
                     ) -> None:
    """``check_compatible`` then ``load_state_dict(strict=True)``."""
    check_compatible(model, state, what)
    model.load_state_dict(state)


# ----------------------------------------------------------------------------- RNG
def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states as checkpoint-safe data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- export / rebuild
def export_safetensors(
    state: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, Any]
) -> Path:
    """Write ``state`` as safetensors (atomically); ``metadata`` values are stored as JSON
    (:func:`bcosnet.models.weights.write_safetensors`)."""
    from ..models.weights import write_safetensors

    return write_safetensors(state, path, metadata)


def load_checkpoint_model(
    path: str | os.PathLike,
    *,
    use_ema: bool = True,
    map_location: Any = "cpu",
) -> nn.Module:
    """Rebuild the model recorded in a training checkpoint (``.pt``) or an exported
    ``.safetensors`` file and load its weights (EMA weights when present and
    ``use_ema``).  Returns the model in eval mode, with ``model.model_info`` — the
    saved record: architecture, options, class names, image size and resize rule,
    data set — and ``model.class_names`` set.  Files of bcosnet 0.1 (no record)
    load too: a warning says what was derived or assumed."""
    from ..models import create_model, read_weights

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found")
    read = read_weights(p, use_ema=use_ema)
    if read.record is None:
        raise ValueError(
            f"{p} records no model name: it is not a bcosnet training checkpoint or export. "
            f"Load it with bcosnet.create_model(NAME, weights={str(p)!r}) (plain and `bcos` "
            f"v2 state dicts load that way)."
        )
    model = create_model(read.record.name, weights=read)
    return model.to(map_location).eval()
