"""Model helpers of the pointing game: device, logits, fingerprints (eval mode and the
first output come from :mod:`bcosnet._utils.modules`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from ..._utils.modules import eval_mode


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.get_default_dtype()


_eval_mode = eval_mode  # the shared helper (bcosnet._utils.modules)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers (resuming with another model is an error)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


